//! Unit conversions of the card's modeled clock (docs/card-spec.md "Time").
//!
//! Card time is counted in soft-core cycles: the core retires one instruction per cycle at
//! `core_hz`, idle `wfi` time and debug halts add cycles, CU jobs finish at their start plus
//! their engine cycles at `cu_hz`. CLINT mtime is card time at `MTIME_HZ`.

use std::time::Duration;

use preba_protocol::card::MTIME_HZ;

/// The clocks of one card.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimeBase {
    core_hz: u64,
    cu_hz: u64,
}

fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    u64::try_from(u128::from(a) * u128::from(b) / u128::from(c)).unwrap_or(u64::MAX)
}

fn mul_div_ceil(a: u64, b: u64, c: u64) -> u64 {
    u64::try_from((u128::from(a) * u128::from(b)).div_ceil(u128::from(c))).unwrap_or(u64::MAX)
}

impl TimeBase {
    pub fn new(core_hz: u32, cu_hz: u32) -> Self {
        TimeBase {
            core_hz: u64::from(core_hz.max(1)),
            cu_hz: u64::from(cu_hz.max(1)),
        }
    }

    /// mtime ticks at card time `t` (rounded down: a tick is seen once it is complete).
    pub fn ticks(&self, t: u64) -> u64 {
        mul_div(t, u64::from(MTIME_HZ), self.core_hz)
    }

    /// The first card time at which mtime reaches `ticks`.
    pub fn at_ticks(&self, ticks: u64) -> u64 {
        mul_div_ceil(ticks, self.core_hz, u64::from(MTIME_HZ))
    }

    /// Core cycles of `cycles` engine cycles (rounded up: a job is not done before its last
    /// engine cycle).
    pub fn cu_to_core(&self, cycles: u64) -> u64 {
        mul_div_ceil(cycles, self.core_hz, self.cu_hz)
    }

    /// Core cycles in a wall-clock duration (idle pacing, debug halts).
    pub fn cycles(&self, d: Duration) -> u64 {
        mul_div(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            self.core_hz,
            1_000_000_000,
        )
    }

    /// The duration of `cycles` core cycles.
    pub fn duration(&self, cycles: u64) -> Duration {
        Duration::from_nanos(mul_div_ceil(cycles, 1_000_000_000, self.core_hz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_the_safe_way() {
        let tb = TimeBase::new(250_000_000, 250_000_000);
        assert_eq!(tb.ticks(24), 0);
        assert_eq!(tb.ticks(25), 1);
        assert_eq!(tb.at_ticks(1), 25);
        assert_eq!(tb.ticks(tb.at_ticks(12_345_678)), 12_345_678);
        assert_eq!(tb.at_ticks(u64::MAX), u64::MAX, "saturates");
        let tb = TimeBase::new(250_000_000, 300_000_000);
        assert_eq!(tb.cu_to_core(6), 5);
        assert_eq!(tb.cu_to_core(7), 6, "rounded up");
        assert_eq!(tb.cycles(Duration::from_secs(1)), 250_000_000);
        assert_eq!(tb.duration(250), Duration::from_micros(1));
    }
}
