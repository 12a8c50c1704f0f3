//! What a card is built with.

use crate::model::{CycleModel, PowerModel};

/// The BAR0 CAP register's fields (hardware capabilities the host reads before enabling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    /// Max entries per queue minus one (MQES).
    pub mqes: u16,
    /// I/O queue pairs (NQP).
    pub nqp: u8,
    /// Ready timeout, 100 ms units (TO).
    pub timeout_100ms: u8,
    /// Max scatter-gather entries per request (MAXSG).
    pub max_sg: u8,
}

impl Default for Cap {
    fn default() -> Self {
        Cap {
            mqes: 4095,
            nqp: 8,
            timeout_100ms: 50,
            max_sg: 16,
        }
    }
}

impl Cap {
    /// The 64-bit CAP value.
    pub fn encode(&self) -> u64 {
        u64::from(self.mqes)
            | u64::from(self.nqp) << 16
            | u64::from(self.timeout_100ms) << 24
            | u64::from(self.max_sg) << 32
    }
}

/// What the card's time (CLINT mtime, hence the firmware's timers, CU watchdog and log
/// timestamps) runs on. See docs/card-spec.md "Time".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clock {
    /// Modeled time (the default): the soft core's cycles (one per instruction at
    /// [`CardConfig::core_hz`]), CU jobs finishing at the cycle model's time, idle `wfi` time
    /// jumping to the next event while a CU job is in flight and paced against the wall clock
    /// otherwise. A slow or starved host machine changes how long things take in wall time,
    /// never what the firmware sees.
    #[default]
    Modeled,
    /// Wall-clock time at 10 MHz since the card started: a real-time feel, but a starved host
    /// machine can make a correct CU job trip the firmware's watchdog.
    Wall,
}

impl std::str::FromStr for Clock {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "modeled" => Ok(Clock::Modeled),
            "wall" => Ok(Clock::Wall),
            _ => Err(format!("not a clock (modeled or wall): {s}")),
        }
    }
}

/// The card's configuration: CU counts, clocks, memory, models.
#[derive(Clone, Debug, PartialEq)]
pub struct CardConfig {
    /// Image CUs (K).
    pub image_cus: u8,
    /// Audio Mel CUs (M).
    pub audio_cus: u8,
    /// Audio normalize CUs (N). K + M + N <= 24.
    pub norm_cus: u8,
    /// Card memory bytes (at most 1 GiB; allocated lazily, reads as zero until written).
    pub card_mem_bytes: u32,
    /// Soft-core clock, Hz (INFO_CORE_HZ).
    pub core_hz: u32,
    /// Engine clock, Hz (INFO_CU_HZ; CU cycle counts use it).
    pub cu_hz: u32,
    /// Host threads that run CU jobs (0: one per available core).
    pub workers: usize,
    /// CAP register fields.
    pub cap: Cap,
    /// GPIO_IN straps.
    pub gpio_in: u32,
    /// SPI NOR flash size in bytes (a power of two, at least 1 MiB: two image slots).
    pub flash_bytes: u32,
    /// Keep the SPI flash in this file (created when missing), so images survive a restart.
    pub flash_file: Option<std::path::PathBuf>,
    /// How long a new image may take from CC.EN to CSTS.RDY before the boot ROM counts a
    /// failed attempt.
    pub boot_deadline: std::time::Duration,
    /// Copy UART output to stderr as it comes.
    pub uart_echo: bool,
    /// Instructions between host-side checks (stop, reset) while the core runs.
    pub slice: u64,
    /// CU cycle model.
    pub cycles: CycleModel,
    /// Power model.
    pub power: PowerModel,
    /// Faults to inject (test only; empty: none). See [`crate::inject`].
    pub inject: crate::inject::InjectSpec,
    /// What the card's time runs on.
    pub clock: Clock,
    /// Test only: every CU job's host computation sleeps this long first, as on a starved
    /// machine (modeled time must not notice; wall time does).
    pub cu_delay: std::time::Duration,
}

impl Default for CardConfig {
    fn default() -> Self {
        CardConfig {
            image_cus: 4,
            audio_cus: 2,
            norm_cus: 1,
            card_mem_bytes: 256 << 20,
            core_hz: 250_000_000,
            cu_hz: 250_000_000,
            workers: 0,
            cap: Cap::default(),
            gpio_in: 0,
            flash_bytes: 16 << 20,
            flash_file: None,
            boot_deadline: std::time::Duration::from_secs(2),
            uart_echo: false,
            slice: 1 << 20,
            cycles: CycleModel::default(),
            power: PowerModel::default(),
            inject: crate::inject::InjectSpec::default(),
            clock: Clock::default(),
            cu_delay: std::time::Duration::ZERO,
        }
    }
}

impl CardConfig {
    /// Total CUs.
    pub fn cus(&self) -> usize {
        usize::from(self.image_cus) + usize::from(self.audio_cus) + usize::from(self.norm_cus)
    }
}
