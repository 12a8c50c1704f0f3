//! NumPy `.npy` (format 1.0) and `.npz` (a stored zip of .npy) writers.
//! Hand-written because the formats are tiny and a zip crate pulls in much more.
#![forbid(unsafe_code)]

use std::io::{self, Write};

/// A NumPy dtype descriptor for our element types. bf16 has no NumPy dtype:
/// it is stored as `<u2` holding the raw bf16 bits (the manifest says so).
pub fn descr(dtype: preba_protocol::profile::Dtype) -> &'static str {
    use preba_protocol::profile::Dtype;
    match dtype {
        Dtype::U8 => "|u1",
        Dtype::F16 => "<f2",
        Dtype::Bf16 => "<u2",
        Dtype::F32 => "<f4",
    }
}

/// The .npy header (magic, version 1.0, padded dict) for `descr` and `shape`.
pub fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    header_min(descr, shape, 0)
}

/// Like [`header`], but at least `min_len` bytes long, so a streamed file can
/// reserve room and rewrite its header (the row count) once it is known.
pub fn header_min(descr: &str, shape: &[usize], min_len: usize) -> Vec<u8> {
    let shape_s = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    // Magic(6) + version(2) + len(2) + dict + padding + '\n' is a multiple of 64.
    let unpadded = 10 + dict.len() + 1;
    let mut pad = (64 - unpadded % 64) % 64;
    while unpadded + pad < min_len {
        pad += 64;
    }
    let mut h = Vec::with_capacity(unpadded + pad);
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    h.extend_from_slice(&((dict.len() + pad + 1) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.extend(std::iter::repeat_n(b' ', pad));
    h.push(b'\n');
    h
}

/// Writes one .npy file body.
pub fn write_npy<W: Write>(w: &mut W, descr: &str, shape: &[usize], data: &[u8]) -> io::Result<()> {
    w.write_all(&header(descr, shape))?;
    w.write_all(data)
}

/// Builds an .npz archive in memory-light fashion: each member is written
/// as it comes, the central directory at the end.
pub struct NpzWriter<W: Write> {
    out: W,
    offset: u64,
    central: Vec<u8>,
    count: u16,
}

impl<W: Write> NpzWriter<W> {
    pub fn new(out: W) -> Self {
        NpzWriter {
            out,
            offset: 0,
            central: Vec::new(),
            count: 0,
        }
    }

    /// Adds `name.npy` with the given array.
    pub fn add(&mut self, name: &str, descr: &str, shape: &[usize], data: &[u8]) -> io::Result<()> {
        let fname = format!("{name}.npy");
        let head = header(descr, shape);
        let size = head.len() as u64 + data.len() as u64;
        if size >= u32::MAX as u64 || self.offset >= u32::MAX as u64 || self.count == u16::MAX {
            return Err(io::Error::other("npz member too large for a plain zip"));
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(data);
        let crc = crc.finalize();
        let mut local = Vec::with_capacity(30 + fname.len());
        local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        local.extend_from_slice(&20u16.to_le_bytes()); // version needed
        local.extend_from_slice(&0u16.to_le_bytes()); // flags
        local.extend_from_slice(&0u16.to_le_bytes()); // stored
        local.extend_from_slice(&0u32.to_le_bytes()); // time, date
        local.extend_from_slice(&crc.to_le_bytes());
        local.extend_from_slice(&(size as u32).to_le_bytes());
        local.extend_from_slice(&(size as u32).to_le_bytes());
        local.extend_from_slice(&(fname.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(fname.as_bytes());
        self.out.write_all(&local)?;
        self.out.write_all(&head)?;
        self.out.write_all(data)?;

        let c = &mut self.central;
        c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        c.extend_from_slice(&20u16.to_le_bytes()); // made by
        c.extend_from_slice(&20u16.to_le_bytes()); // needed
        c.extend_from_slice(&0u16.to_le_bytes());
        c.extend_from_slice(&0u16.to_le_bytes());
        c.extend_from_slice(&0u32.to_le_bytes());
        c.extend_from_slice(&crc.to_le_bytes());
        c.extend_from_slice(&(size as u32).to_le_bytes());
        c.extend_from_slice(&(size as u32).to_le_bytes());
        c.extend_from_slice(&(fname.len() as u16).to_le_bytes());
        c.extend_from_slice(&[0u8; 8]); // extra len, comment len, disk, internal attrs
        c.extend_from_slice(&0u32.to_le_bytes()); // external attrs
        c.extend_from_slice(&(self.offset as u32).to_le_bytes());
        c.extend_from_slice(fname.as_bytes());
        self.offset += local.len() as u64 + size;
        self.count += 1;
        Ok(())
    }

    /// Writes the central directory; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.offset >= u32::MAX as u64 {
            return Err(io::Error::other("npz too large for a plain zip"));
        }
        self.out.write_all(&self.central)?;
        let mut end = Vec::with_capacity(22);
        end.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        end.extend_from_slice(&[0u8; 4]);
        end.extend_from_slice(&self.count.to_le_bytes());
        end.extend_from_slice(&self.count.to_le_bytes());
        end.extend_from_slice(&(self.central.len() as u32).to_le_bytes());
        end.extend_from_slice(&(self.offset as u32).to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        self.out.write_all(&end)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_parsable() {
        for shape in [&[3usize, 224, 224][..], &[0, 3, 224, 224], &[80, 101], &[7]] {
            let h = header("<f4", shape);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
            let n = u16::from_le_bytes([h[8], h[9]]) as usize;
            assert_eq!(10 + n, h.len());
            let text = std::str::from_utf8(&h[10..]).unwrap();
            assert!(text.ends_with('\n'));
            assert!(text.contains("'descr': '<f4'"));
        }
        assert!(
            std::str::from_utf8(&header("|u1", &[7])[10..])
                .unwrap()
                .contains("(7,)")
        );
    }

    #[test]
    fn npz_directory_counts_members() {
        let mut z = NpzWriter::new(Vec::new());
        z.add("0", "<f4", &[2, 2], &[0u8; 16]).unwrap();
        z.add("3", "<f4", &[1, 1], &[0u8; 4]).unwrap();
        let bytes = z.finish().unwrap();
        let end = &bytes[bytes.len() - 22..];
        assert_eq!(&end[..4], &0x0605_4b50u32.to_le_bytes());
        assert_eq!(u16::from_le_bytes([end[10], end[11]]), 2);
    }
}
