//! The board as the firmware logic sees it: 32-bit register access and a
//! clock. The binary implements it with volatile MMIO; tests implement it
//! with a model.

/// Register-level access to the card's peripherals (addresses from
/// `preba_protocol::card`).
pub trait Platform {
    /// Reads a 32-bit register or card-memory word.
    fn read32(&mut self, addr: u32) -> u32;
    /// Writes a 32-bit register or card-memory word.
    fn write32(&mut self, addr: u32, value: u32);
    /// Current time in mtime ticks (`preba_protocol::card::MTIME_HZ`).
    fn now(&mut self) -> u64;
    /// Sleeps until an interrupt may have arrived or `deadline` (ticks) passed.
    fn wait_for_event(&mut self, deadline: u64);
}
