//! What the firmware writes to its UART, as the host side sees it: the
//! newest [`UART_KEEP`] bytes, like a console's ring buffer. A card process
//! lives as long as its server, the firmware prints a banner on every boot
//! (and a line for some faults), and a vfio-user client may reset the card
//! without end: an unbounded capture grew the vfio_user_server fuzz target by
//! ~50 bytes per input (111 -> 544 MB RSS over 10^7 inputs).

/// Bytes kept: many boots' worth of banners and fault lines.
pub const UART_KEEP: usize = 64 << 10;

/// The bounded UART capture.
#[derive(Debug, Default)]
pub struct UartCapture {
    bytes: Vec<u8>,
    dropped: u64,
}

impl UartCapture {
    /// Appends one byte; once twice [`UART_KEEP`] are held, the oldest go
    /// (amortised: one move per [`UART_KEEP`] bytes written).
    pub fn push(&mut self, b: u8) {
        self.bytes.push(b);
        if self.bytes.len() >= 2 * UART_KEEP {
            let cut = self.bytes.len() - UART_KEEP;
            self.bytes.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    /// The bytes held, oldest first (at least the newest [`UART_KEEP`]).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes written and no longer held.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes_within_its_bound() {
        let mut u = UartCapture::default();
        let total = 10 * UART_KEEP + 123;
        for i in 0..total {
            u.push((i % 251) as u8);
            assert!(u.bytes().len() < 2 * UART_KEEP);
        }
        let held = u.bytes().len();
        assert!(held >= UART_KEEP);
        assert_eq!(u.dropped() + held as u64, total as u64);
        // The newest bytes, in order.
        let want: Vec<u8> = (total - held..total).map(|i| (i % 251) as u8).collect();
        assert_eq!(u.bytes(), &want[..]);
    }

    #[test]
    fn short_output_is_kept_whole() {
        let mut u = UartCapture::default();
        for &b in b"preba firmware: serving queues\n" {
            u.push(b);
        }
        assert_eq!(u.bytes(), b"preba firmware: serving queues\n");
        assert_eq!(u.dropped(), 0);
    }
}
