//! The vfio-user wire format (the subset this server speaks): the 16-byte message header,
//! command numbers, flags and the little-endian field reader for payloads.

/// Bytes of the message header.
pub const HEADER_SIZE: usize = 16;

/// Commands.
pub const VERSION: u16 = 1;
pub const DMA_MAP: u16 = 2;
pub const DMA_UNMAP: u16 = 3;
pub const DEVICE_GET_INFO: u16 = 4;
pub const DEVICE_GET_REGION_INFO: u16 = 5;
pub const DEVICE_GET_REGION_IO_FDS: u16 = 6;
pub const DEVICE_GET_IRQ_INFO: u16 = 7;
pub const DEVICE_SET_IRQS: u16 = 8;
pub const REGION_READ: u16 = 9;
pub const REGION_WRITE: u16 = 10;
pub const DMA_READ: u16 = 11;
pub const DMA_WRITE: u16 = 12;
pub const DEVICE_RESET: u16 = 13;
pub const DIRTY_PAGES: u16 = 14;

/// Header flags: the message type (low 4 bits), no-reply and error.
pub const FLAG_TYPE_MASK: u32 = 0xf;
pub const FLAG_COMMAND: u32 = 0;
pub const FLAG_REPLY: u32 = 1;
pub const FLAG_NO_REPLY: u32 = 1 << 4;
pub const FLAG_ERROR: u32 = 1 << 5;

/// `VFIO_DEVICE_FLAGS_RESET` and `VFIO_DEVICE_FLAGS_PCI`.
pub const DEVICE_FLAGS_RESET: u32 = 1 << 0;
pub const DEVICE_FLAGS_PCI: u32 = 1 << 1;

/// `VFIO_IRQ_SET_DATA_BOOL` (not supported).
pub const IRQ_SET_DATA_BOOL: u32 = 1 << 1;

/// The largest data transfer the server takes or gives in one message (the
/// `max_data_xfer_size` it announces).
pub const MAX_DATA_XFER: u32 = 1 << 20;

/// The largest payload (message minus header) the server reads into memory: a REGION_WRITE of
/// [`MAX_DATA_XFER`] bytes and its 16-byte access header. Longer messages are read and thrown
/// away (so the stream stays in step) and refused.
pub const MAX_PAYLOAD: usize = MAX_DATA_XFER as usize + 16;

/// The most descriptors a client may send with one message (the server announces
/// `max_msg_fds` 1, as the `vfio_user` crate's server did; SET_IRQS also takes several).
pub const MAX_MSG_FDS: u32 = 1;

/// The message header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub message_id: u16,
    pub command: u16,
    /// Header and payload, in bytes.
    pub message_size: u32,
    pub flags: u32,
    /// The errno of an error reply.
    pub error: u32,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Header {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        Header {
            message_id: u16::from_le_bytes([b[0], b[1]]),
            command: u16::from_le_bytes([b[2], b[3]]),
            message_size: u32_at(4),
            flags: u32_at(8),
            error: u32_at(12),
        }
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..2].copy_from_slice(&self.message_id.to_le_bytes());
        b[2..4].copy_from_slice(&self.command.to_le_bytes());
        b[4..8].copy_from_slice(&self.message_size.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.error.to_le_bytes());
        b
    }

    /// The client asked for no reply (errors are answered anyway).
    pub fn no_reply(&self) -> bool {
        self.flags & FLAG_NO_REPLY != 0
    }

    /// The payload length the header announces (`None` when it is shorter than a header).
    pub fn payload_len(&self) -> Option<usize> {
        (self.message_size as usize).checked_sub(HEADER_SIZE)
    }

    /// The reply header to this message with `payload_len` bytes after it.
    pub fn reply(&self, payload_len: usize) -> Header {
        Header {
            message_id: self.message_id,
            command: self.command,
            message_size: (HEADER_SIZE + payload_len) as u32,
            flags: FLAG_REPLY,
            error: 0,
        }
    }

    /// The error reply to this message: a bare header with `errno`.
    pub fn error_reply(&self, errno: u32) -> Header {
        Header {
            message_id: self.message_id,
            command: self.command,
            message_size: HEADER_SIZE as u32,
            flags: FLAG_REPLY | FLAG_ERROR,
            error: errno,
        }
    }
}

/// The name of a command, for the log.
pub fn command_name(c: u16) -> &'static str {
    match c {
        VERSION => "VERSION",
        DMA_MAP => "DMA_MAP",
        DMA_UNMAP => "DMA_UNMAP",
        DEVICE_GET_INFO => "DEVICE_GET_INFO",
        DEVICE_GET_REGION_INFO => "DEVICE_GET_REGION_INFO",
        DEVICE_GET_REGION_IO_FDS => "DEVICE_GET_REGION_IO_FDS",
        DEVICE_GET_IRQ_INFO => "DEVICE_GET_IRQ_INFO",
        DEVICE_SET_IRQS => "DEVICE_SET_IRQS",
        REGION_READ => "REGION_READ",
        REGION_WRITE => "REGION_WRITE",
        DMA_READ => "DMA_READ",
        DMA_WRITE => "DMA_WRITE",
        DEVICE_RESET => "DEVICE_RESET",
        DIRTY_PAGES => "DIRTY_PAGES",
        _ => "unknown command",
    }
}

/// Little-endian fields read off the front of a payload.
pub struct Fields<'a>(pub &'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    /// What is left.
    pub fn rest(&self) -> &[u8] {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_replies() {
        let h = Header {
            message_id: 0x1234,
            command: REGION_READ,
            message_size: 32,
            flags: FLAG_NO_REPLY,
            error: 0,
        };
        assert_eq!(Header::parse(&h.encode()), h);
        assert!(h.no_reply());
        assert_eq!(h.payload_len(), Some(16));
        let r = h.reply(20);
        assert_eq!(
            (r.message_size, r.flags, r.message_id),
            (36, FLAG_REPLY, 0x1234)
        );
        let e = h.error_reply(22);
        assert_eq!((e.message_size, e.flags, e.error), (16, 0x21, 22));
        let short = Header {
            message_size: 15,
            ..h
        };
        assert_eq!(short.payload_len(), None);
        let mut f = Fields(&[1, 0, 2, 0, 0, 0, 9]);
        assert_eq!((f.u16(), f.u32(), f.u16()), (Some(1), Some(2), None));
        assert_eq!(f.rest(), &[9]);
    }
}
