//! A short deterministic self-test, printed on the UART at boot. Under
//! `qemu-system-riscv32 -M virt` and on our interpreter the same ELF must
//! print the same lines (the instruction counts included): the soft core's
//! oracle test compares them.

use crate::alloc::CardAlloc;
use crate::crc::crc32;
use core::fmt::Write;
use preba_protocol::io::{IoOpcode, SgEntry, Sqe};
use preba_protocol::media::{probe_jpeg, probe_wav};

/// A baseline 4:2:0 500x375 JPEG up to its first scan (no entropy data).
pub const JPEG_BASELINE: [u8; 39] = jpeg(0xC0);
/// The same frame, progressive (SOF2): UNSUPPORTED_FORMAT on the card.
pub const JPEG_PROGRESSIVE: [u8; 39] = jpeg(0xC2);

const fn jpeg(sof: u8) -> [u8; 39] {
    [
        0xFF, 0xD8, // SOI
        0xFF, sof, 0x00, 0x11, 8, 0x01, 0x77, 0x01, 0xF4, 3, // SOF: 375 x 500, 3 comps
        1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, // components
        0xFF, 0xDA, 0x00, 0x0C, 3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0, // SOS
        0x12, 0x34, 0xFF, 0xD9, // a byte pair of "scan data", EOI
    ]
}

/// A mono 16-bit 16 kHz WAV header with 100 frames of silence announced.
pub const WAV_HEADER: [u8; 44] = {
    let mut b = [0u8; 44];
    let riff = *b"RIFF";
    let wave = *b"WAVEfmt ";
    let data = *b"data";
    let mut i = 0;
    while i < 4 {
        b[i] = riff[i];
        b[36 + i] = data[i];
        i += 1;
    }
    let mut i = 0;
    while i < 8 {
        b[8 + i] = wave[i];
        i += 1;
    }
    b[4] = 236; // RIFF size (36 + 200)
    b[16] = 16; // fmt size
    b[20] = 1; // PCM
    b[22] = 1; // mono
    b[24] = 0x80; // 16000 Hz
    b[25] = 0x3E;
    b[28] = 0x00; // byte rate 32000
    b[29] = 0x7D;
    b[32] = 2; // block align
    b[34] = 16; // bits
    b[40] = 200; // data size
    b
};

fn image_sqe() -> Sqe {
    Sqe {
        opcode: IoOpcode::PreprocessImage as u8,
        cid: 42,
        sg_count: 1,
        out_iova: 0x1080_0000,
        out_len: 150_528,
        in_len: 110_000,
        sg: [
            SgEntry {
                iova: 0x1020_0000,
                len: 110_000,
            },
            SgEntry::default(),
        ],
        ..Sqe::default()
    }
}

/// Runs the checks; `instret` reads the retired-instruction counter.
pub fn run<W: Write>(out: &mut W, instret: &mut dyn FnMut() -> u64) -> core::fmt::Result {
    writeln!(out, "selftest: begin")?;

    let good = image_sqe().encode();
    let t = instret();
    let r = Sqe::parse(&good);
    let d = instret() - t;
    match r {
        Ok(v) => writeln!(
            out,
            "sqe {} cid {} ok [{} insns]",
            v.op.name(),
            v.raw.cid,
            d
        )?,
        Err(e) => writeln!(out, "sqe err {} [{} insns]", e.status().name(), d)?,
    }

    let mut bad = good;
    bad[6] = 1;
    let t = instret();
    let r = Sqe::parse(&bad);
    let d = instret() - t;
    let s = r.err().map(|e| e.status().name()).unwrap_or("SUCCESS");
    writeln!(out, "sqe reserved byte -> {} [{} insns]", s, d)?;

    for (name, bytes) in [
        ("baseline", &JPEG_BASELINE[..]),
        ("progressive", &JPEG_PROGRESSIVE[..]),
    ] {
        let mut src = bytes;
        let t = instret();
        let r = probe_jpeg(&mut src).and_then(|p| p.card_check().map(|_| p));
        let d = instret() - t;
        match r {
            Ok(p) => writeln!(
                out,
                "jpeg {} {}x{} {} comps {}x{} -> SUCCESS [{} insns]",
                name,
                p.header.width,
                p.header.height,
                p.header.components,
                p.header.h_samp,
                p.header.v_samp,
                d
            )?,
            Err(e) => writeln!(out, "jpeg {} -> {} [{} insns]", name, e.status().name(), d)?,
        }
    }

    let mut wav = [0u8; 244];
    wav[..44].copy_from_slice(&WAV_HEADER);
    let mut src = &wav[..];
    let t = instret();
    let r = probe_wav(&mut src);
    let d = instret() - t;
    match r {
        Ok(h) => writeln!(
            out,
            "wav {} Hz {} ch {} frames [{} insns]",
            h.sample_rate, h.channels, h.frames, d
        )?,
        Err(e) => writeln!(out, "wav -> {} [{} insns]", e.status().name(), d)?,
    }

    let t = instret();
    let c = crc32(core::hint::black_box(b"123456789"));
    let d = instret() - t;
    writeln!(out, "crc32 {:08x} [{} insns]", c, d)?;

    let t = instret();
    let mut a = CardAlloc::new(0xA008_0000, 1 << 20);
    let x = a.alloc(10_000);
    let y = a.alloc(70_000);
    if let Some(x) = x {
        a.free(x, 10_000);
    }
    let z = a.alloc(4096);
    let d = instret() - t;
    writeln!(
        out,
        "alloc {:x?} {:x?} {:x?} free {} [{} insns]",
        x,
        y,
        z,
        a.free_bytes(),
        d
    )?;
    writeln!(out, "selftest: end")
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;

    #[test]
    fn selftest_output() {
        let mut s = String::new();
        let mut n = 0u64;
        super::run(&mut s, &mut || {
            n += 1;
            n
        })
        .unwrap();
        assert!(s.contains("sqe PREPROCESS_IMAGE cid 42 ok"), "{s}");
        assert!(s.contains("sqe reserved byte -> INVALID_FIELD"), "{s}");
        assert!(
            s.contains("jpeg baseline 500x375 3 comps 2x2 -> SUCCESS"),
            "{s}"
        );
        assert!(s.contains("jpeg progressive -> UNSUPPORTED_FORMAT"), "{s}");
        assert!(s.contains("wav 16000 Hz 1 ch 100 frames"), "{s}");
        assert!(s.contains("crc32 cbf43926"), "{s}");
    }
}
