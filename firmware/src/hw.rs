//! Register-level helpers over [`Platform`]: card configuration, CU register
//! addresses, the DMA engine and a [`ByteSource`] over card memory.

use crate::Platform;
use preba_protocol::card::{self, DmaStatus};
use preba_protocol::media::ByteSource;

/// Ticks of the DMA deadline before it counts as stuck: 100 ms plus 10 ns per byte.
pub const DMA_TIMEOUT_BASE_TICKS: u64 = card::MTIME_HZ as u64 / 10;
/// Bytes per tick assumed at worst for the DMA deadline (1 GB/s at 10 MHz mtime).
pub const DMA_BYTES_PER_TICK: u64 = 100;
/// Longest sleep inside a DMA wait before the status is read again.
const DMA_POLL_TICKS: u64 = 1_000;

/// Address of register `off` of CU `i`.
pub const fn cu_reg(i: usize, off: u32) -> u32 {
    card::CU_BASE + card::CU_STRIDE * i as u32 + off
}

/// The card's configuration, read once at boot from the INFO registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CardInfo {
    pub image_cus: u8,
    pub audio_cus: u8,
    pub norm_cus: u8,
    pub mem_size: u32,
    pub core_hz: u32,
    pub cu_hz: u32,
}

impl CardInfo {
    /// Reads INFO_*; CU counts are clipped so their sum stays within
    /// `card::MAX_CUS`, memory within `card::CARD_MEM_MAX`.
    pub fn read<P: Platform>(p: &mut P) -> CardInfo {
        let mut left = card::MAX_CUS;
        let mut take = |v: u32| {
            let n = v.min(left);
            left -= n;
            n as u8
        };
        let image_cus = take(p.read32(card::INFO_IMAGE_CUS));
        let audio_cus = take(p.read32(card::INFO_AUDIO_CUS));
        let norm_cus = take(p.read32(card::INFO_NORM_CUS));
        CardInfo {
            image_cus,
            audio_cus,
            norm_cus,
            mem_size: p.read32(card::INFO_CARD_MEM_SIZE).min(card::CARD_MEM_MAX),
            core_hz: p.read32(card::INFO_CORE_HZ),
            cu_hz: p.read32(card::INFO_CU_HZ),
        }
    }

    pub fn cu_count(&self) -> usize {
        self.image_cus as usize + self.audio_cus as usize + self.norm_cus as usize
    }
}

/// Why a DMA transfer failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaError {
    /// The engine refused or aborted the transfer (status 3): the faulting host IOVA.
    Fault(u64),
    /// The engine stayed busy past its deadline.
    Timeout,
}

/// One synchronous transfer between host IOVA `host` and card address
/// `card_addr`. Sleeps (wfi) while the engine is busy; bounded by a deadline
/// proportional to the length. Acknowledges the DMA interrupt source.
pub fn dma<P: Platform>(
    p: &mut P,
    host: u64,
    card_addr: u32,
    len: u32,
    to_host: bool,
) -> Result<(), DmaError> {
    if len == 0 {
        return Ok(());
    }
    p.write32(card::DMA_HOST_LO, host as u32);
    p.write32(card::DMA_HOST_HI, (host >> 32) as u32);
    p.write32(card::DMA_CARD, card_addr);
    p.write32(card::DMA_LEN, len);
    let dir = if to_host { card::DMA_CTRL_TO_HOST } else { 0 };
    p.write32(card::DMA_CTRL, card::DMA_CTRL_START | dir);
    let deadline = p.now() + DMA_TIMEOUT_BASE_TICKS + len as u64 / DMA_BYTES_PER_TICK;
    loop {
        let st = p.read32(card::DMA_STATUS);
        if st == DmaStatus::Done as u32 {
            p.write32(card::IRQ_ACK, card::IRQ_DMA);
            return Ok(());
        }
        if st == DmaStatus::Fault as u32 {
            p.write32(card::IRQ_ACK, card::IRQ_DMA);
            let lo = p.read32(card::DMA_FAULT_LO) as u64;
            let hi = p.read32(card::DMA_FAULT_HI) as u64;
            return Err(DmaError::Fault(lo | hi << 32));
        }
        let now = p.now();
        if now >= deadline {
            return Err(DmaError::Timeout);
        }
        p.wait_for_event(deadline.min(now + DMA_POLL_TICKS));
    }
}

/// Copies `bytes` into card memory at `addr` (4-byte aligned) with word writes.
pub fn write_card<P: Platform>(p: &mut P, addr: u32, bytes: &[u8]) {
    for (i, c) in bytes.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        p.write32(addr + 4 * i as u32, u32::from_le_bytes(w));
    }
}

/// Copies card memory at `addr` (4-byte aligned) into `out` with word reads.
pub fn read_card<P: Platform>(p: &mut P, addr: u32, out: &mut [u8]) {
    for (i, c) in out.chunks_mut(4).enumerate() {
        let w = p.read32(addr + 4 * i as u32).to_le_bytes();
        let n = c.len();
        c.copy_from_slice(&w[..n]);
    }
}

/// An input in card memory, read word by word for the media probes.
pub struct CardBytes<'a, P> {
    pub p: &'a mut P,
    pub base: u32,
    pub len: u32,
    cached: Option<(u32, [u8; 4])>,
}

impl<'a, P: Platform> CardBytes<'a, P> {
    pub fn new(p: &'a mut P, base: u32, len: u32) -> Self {
        CardBytes {
            p,
            base,
            len,
            cached: None,
        }
    }
}

impl<P: Platform> ByteSource for CardBytes<'_, P> {
    fn len(&self) -> u64 {
        self.len as u64
    }
    fn read(&mut self, off: u64, buf: &mut [u8]) -> bool {
        let Some(end) = off.checked_add(buf.len() as u64) else {
            return false;
        };
        if end > self.len as u64 {
            return false;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let a = self.base + off as u32 + i as u32;
            let wa = a & !3;
            let w = match self.cached {
                Some((ca, w)) if ca == wa => w,
                _ => {
                    let w = self.p.read32(wa).to_le_bytes();
                    self.cached = Some((wa, w));
                    w
                }
            };
            *b = w[(a & 3) as usize];
        }
        true
    }
}
