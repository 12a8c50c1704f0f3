//! Reading the firmware's log ring through BAR2, as a host driver does (docs/card-spec.md,
//! "BAR2: the log ring"). The bytes are defmt frames (rzcobs, zero-terminated); decode them
//! with `defmt-decoder` against the firmware ELF.

use preba_protocol::card::{BAR2_LOG_HEAD, BAR2_LOG_RING, BAR2_LOG_SIZE};

use crate::Card;

/// New log bytes and how many were lost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogChunk {
    /// Stream bytes, starting at a frame boundary when bytes were lost.
    pub bytes: Vec<u8>,
    /// Bytes overwritten before they were read (the reader fell more than a ring behind).
    pub lost: u64,
}

/// A cursor into the log stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogReader {
    cursor: u32,
}

impl LogReader {
    /// Starts at stream offset 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stream offset of the next byte to read.
    pub fn cursor(&self) -> u32 {
        self.cursor
    }

    /// Reads everything written since the last call. LOG_HEAD is read before the bytes (the
    /// firmware bumps it after writing them), so no byte past the head is read.
    pub fn read(&mut self, card: &Card) -> LogChunk {
        let mut w = [0u8; 4];
        card.bar2_read(BAR2_LOG_HEAD, &mut w);
        let head = u32::from_le_bytes(w);
        card.bar2_read(BAR2_LOG_SIZE, &mut w);
        let size = u32::from_le_bytes(w).max(1);
        let mut lost = 0u64;
        let mut avail = head.wrapping_sub(self.cursor);
        if avail > size {
            lost = u64::from(avail - size);
            self.cursor = head.wrapping_sub(size);
            avail = size;
        }
        let mut bytes = vec![0u8; avail as usize];
        for (i, b) in bytes.iter_mut().enumerate() {
            let pos = self.cursor.wrapping_add(i as u32) % size;
            card.bar2_read(BAR2_LOG_RING + u64::from(pos), std::slice::from_mut(b));
        }
        self.cursor = head;
        if lost > 0 {
            // Resynchronise at the next frame boundary (after a zero byte).
            let skip = bytes
                .iter()
                .position(|&b| b == 0)
                .map_or(bytes.len(), |p| p + 1);
            bytes.drain(..skip);
            lost += skip as u64;
        }
        LogChunk { bytes, lost }
    }
}
