//! A CoreMark-like integer workload in Rust (list processing, matrix arithmetic, a state
//! machine, CRC), used by `cargo xtask bench softcore` and as an oracle program. It prints a
//! checksum per phase and checks the final one.
#![no_std]
#![no_main]

use core::hint::black_box;

use preba_rvtests as _;

core::arch::global_asm!(include_str!("../../asm/rt.S"), options(raw));

unsafe extern "C" {
    fn rt_puts(s: *const u8);
    fn rt_puthex(v: u32);
    fn rt_check(got: u32, want: u32, name: *const u8);
    fn rt_mark(name: *const u8);
}

fn puts(s: &[u8]) {
    // SAFETY: every caller passes a NUL-terminated literal.
    unsafe { rt_puts(s.as_ptr()) }
}

fn puthex(v: u32) {
    // SAFETY: rt_puthex only reads its argument.
    unsafe { rt_puthex(v) }
}

const ITERATIONS: u32 = 2000;

fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        let mut x = b;
        for _ in 0..8 {
            let mix = (crc as u8 ^ x) & 1;
            crc >>= 1;
            if mix != 0 {
                crc ^= 0xa001;
            }
            x >>= 1;
        }
    }
    crc
}

struct Lcg(u32);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        self.0 >> 8
    }
}

const N: usize = 12;

fn matrix(seed: u32) -> u32 {
    let mut rng = Lcg(seed);
    let mut a = [[0i32; N]; N];
    let mut b = [[0i32; N]; N];
    let mut c = [[0i32; N]; N];
    for i in 0..N {
        for j in 0..N {
            a[i][j] = (rng.next() & 0xff) as i32 - 128;
            b[i][j] = (rng.next() & 0xff) as i32 - 100;
        }
    }
    for i in 0..N {
        for j in 0..N {
            let mut s = 0i32;
            for k in 0..N {
                s = s.wrapping_add(a[i][k].wrapping_mul(b[k][j]));
            }
            c[i][j] = s;
        }
    }
    let mut h = 0u32;
    for row in &c {
        for &v in row {
            h = h.rotate_left(5) ^ v as u32;
            if v > 1000 {
                h = h.wrapping_add(v as u32 >> 3);
            }
        }
    }
    h
}

const L: usize = 64;

fn list(seed: u32) -> u32 {
    // An index-linked list: insertion sort by key, reverse, then search.
    let mut rng = Lcg(seed);
    let mut key = [0u16; L];
    let mut next = [u8::MAX; L];
    let mut head = u8::MAX;
    for i in 0..L {
        key[i] = (rng.next() & 0x3ff) as u16;
        // Insert i in order.
        let mut prev = u8::MAX;
        let mut cur = head;
        while cur != u8::MAX && key[cur as usize] < key[i] {
            prev = cur;
            cur = next[cur as usize];
        }
        next[i] = cur;
        if prev == u8::MAX {
            head = i as u8;
        } else {
            next[prev as usize] = i as u8;
        }
    }
    // Reverse.
    let mut rev = u8::MAX;
    let mut cur = head;
    while cur != u8::MAX {
        let n = next[cur as usize];
        next[cur as usize] = rev;
        rev = cur;
        cur = n;
    }
    let mut h = 0u32;
    let mut cur = rev;
    let mut pos = 0u32;
    while cur != u8::MAX {
        h = h
            .wrapping_mul(31)
            .wrapping_add(u32::from(key[cur as usize]) ^ pos);
        pos += 1;
        cur = next[cur as usize];
    }
    // Search for a few keys.
    for q in 0..8u16 {
        let want = q * 97;
        let mut cur = rev;
        while cur != u8::MAX && key[cur as usize] != want {
            cur = next[cur as usize];
        }
        h ^= u32::from(cur);
    }
    h
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Start,
    Int,
    Frac,
    Exp,
    Invalid,
}

fn states(seed: u32) -> u32 {
    let mut buf = [0u8; 128];
    let mut rng = Lcg(seed);
    const ALPHA: &[u8] = b"0123456789.,e-+ x5";
    for b in buf.iter_mut() {
        *b = ALPHA[(rng.next() % ALPHA.len() as u32) as usize];
    }
    let mut counts = [0u32; 5];
    let mut s = State::Start;
    for &c in &buf {
        s = match (s, c) {
            (_, b',') => {
                counts[s as usize] += 1;
                State::Start
            }
            (State::Start, b'0'..=b'9' | b'-' | b'+') => State::Int,
            (State::Start, b'.') => State::Frac,
            (State::Int, b'0'..=b'9') => State::Int,
            (State::Int, b'.') => State::Frac,
            (State::Int | State::Frac, b'e') => State::Exp,
            (State::Frac, b'0'..=b'9') => State::Frac,
            (State::Exp, b'0'..=b'9' | b'-' | b'+') => State::Exp,
            _ => State::Invalid,
        };
    }
    counts[s as usize] += 1;
    counts
        .iter()
        .fold(0u32, |h, &c| h.wrapping_mul(131).wrapping_add(c))
}

#[unsafe(no_mangle)]
extern "C" fn test_main() {
    let seed = black_box(0x1234_5678u32);
    let mut total = 0u32;
    let mut data = [0u8; 256];
    for iter in 0..black_box(ITERATIONS) {
        let s = seed.wrapping_add(iter.wrapping_mul(0x9e37_79b9));
        let m = matrix(s);
        let l = list(s ^ 0x5555);
        let st = states(s.rotate_left(7));
        for (i, d) in data.iter_mut().enumerate() {
            *d = (m as u8).wrapping_add(i as u8).wrapping_mul(l as u8 | 1);
        }
        let crc = crc16(iter as u16, &data);
        total = total.rotate_left(3) ^ m ^ l.wrapping_mul(3) ^ st ^ u32::from(crc);
        if iter % 100 == 0 {
            // A log point: the instruction count since the previous one (compared with QEMU).
            // SAFETY: rt_mark reads the NUL-terminated name.
            unsafe { rt_mark(b"iterations\0".as_ptr()) };
            puts(b"iteration checksum \0");
            puthex(total);
            puts(b"\n\0");
        }
    }
    // SAFETY: rt_check reads its arguments and the NUL-terminated name.
    unsafe { rt_check(total, black_box(EXPECTED), b"coremark_checksum\0".as_ptr()) };
}

/// The checksum for `ITERATIONS` (computed on the host by the softcore tests' reference).
const EXPECTED: u32 = 0xc5cc_8802;
