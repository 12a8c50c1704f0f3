//! The JTAG TAP (IEEE 1149.1 state machine) with the RISC-V JTAG Debug Transport Module (Debug
//! Spec 0.13.2 chapter 6): IR length 5, IDCODE, DTMCS, DMI and BYPASS.

/// IR length in bits.
pub const IR_LEN: u32 = 5;
/// IR value selecting IDCODE (also what Test-Logic-Reset selects).
pub const IR_IDCODE: u8 = 0x01;
/// IR value selecting DTMCS.
pub const IR_DTMCS: u8 = 0x10;
/// IR value selecting DMI.
pub const IR_DMI: u8 = 0x11;
/// DMI address bits.
pub const ABITS: u32 = 7;
/// The card's IDCODE: version 1, part 0x50BA, manufacturer bank 16 code 0x7E (a JEDEC-shaped
/// value that is not a registered JEP106 identity), LSB 1.
pub const IDCODE: u32 = 0x150B_AFFD;

const DMI_LEN: u32 = ABITS + 34;
/// DTMCS: version 1 (0.13), abits, idle 0 (DMI accesses complete within Update-DR).
const DTMCS: u32 = 1 | ABITS << 4;

/// The DMI side of the DTM: one Debug Module access at Update-DR.
pub trait Dmi {
    /// A read (`write` false) or write of DM register `addr`; returns the value read (0 for a
    /// write), or `None` when the access failed (the DTM then reports op 2 until `dmireset`).
    fn access(&mut self, write: bool, addr: u32, data: u32) -> Option<u32>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Reset,
    Idle,
    SelectDr,
    CaptureDr,
    ShiftDr,
    Exit1Dr,
    PauseDr,
    Exit2Dr,
    UpdateDr,
    SelectIr,
    CaptureIr,
    ShiftIr,
    Exit1Ir,
    PauseIr,
    Exit2Ir,
    UpdateIr,
}

impl State {
    fn next(self, tms: bool) -> State {
        use State::*;
        match (self, tms) {
            (Reset, true) => Reset,
            (Reset, false) => Idle,
            (Idle, true) => SelectDr,
            (Idle, false) => Idle,
            (SelectDr, true) => SelectIr,
            (SelectDr, false) => CaptureDr,
            (CaptureDr, true) => Exit1Dr,
            (CaptureDr, false) => ShiftDr,
            (ShiftDr, true) => Exit1Dr,
            (ShiftDr, false) => ShiftDr,
            (Exit1Dr, true) => UpdateDr,
            (Exit1Dr, false) => PauseDr,
            (PauseDr, true) => Exit2Dr,
            (PauseDr, false) => PauseDr,
            (Exit2Dr, true) => UpdateDr,
            (Exit2Dr, false) => ShiftDr,
            (UpdateDr, true) => SelectDr,
            (UpdateDr, false) => Idle,
            (SelectIr, true) => Reset,
            (SelectIr, false) => CaptureIr,
            (CaptureIr, true) => Exit1Ir,
            (CaptureIr, false) => ShiftIr,
            (ShiftIr, true) => Exit1Ir,
            (ShiftIr, false) => ShiftIr,
            (Exit1Ir, true) => UpdateIr,
            (Exit1Ir, false) => PauseIr,
            (PauseIr, true) => Exit2Ir,
            (PauseIr, false) => PauseIr,
            (Exit2Ir, true) => UpdateIr,
            (Exit2Ir, false) => ShiftIr,
            (UpdateIr, true) => SelectDr,
            (UpdateIr, false) => Idle,
        }
    }
}

/// The TAP and DTM. Clock it bit by bit with [`Tap::clock`].
#[derive(Debug)]
pub struct Tap {
    state: State,
    ir: u8,
    idcode: u32,
    /// The shift register of the selected DR or of the IR, shifted out at bit 0.
    shift: u64,
    shift_len: u32,
    /// The last DMI operation's address, data and status (captured at Capture-DR).
    dmi_addr: u32,
    dmi_data: u32,
    /// Sticky DMI status: 0 ok, 2 failed (cleared by `dtmcs.dmireset`).
    dmistat: u32,
}

impl Tap {
    /// A TAP in Test-Logic-Reset reporting `idcode`.
    pub fn new(idcode: u32) -> Tap {
        Tap {
            state: State::Reset,
            ir: IR_IDCODE,
            idcode,
            shift: 0,
            shift_len: 1,
            dmi_addr: 0,
            dmi_data: 0,
            dmistat: 0,
        }
    }

    /// Asynchronous TAP reset (TRST or five TMS-high clocks).
    pub fn reset(&mut self) {
        self.state = State::Reset;
        self.ir = IR_IDCODE;
    }

    /// One TCK: samples `tms` and `tdi` and returns TDO (the bit shifted out in a Shift state).
    pub fn clock(&mut self, tms: bool, tdi: bool, dmi: &mut dyn Dmi) -> bool {
        let tdo = matches!(self.state, State::ShiftDr | State::ShiftIr) && self.shift & 1 != 0;
        match self.state {
            State::ShiftDr | State::ShiftIr => {
                self.shift = (self.shift >> 1) | u64::from(tdi) << (self.shift_len - 1);
            }
            _ => {}
        }
        self.state = self.state.next(tms);
        match self.state {
            State::Reset => self.ir = IR_IDCODE,
            State::CaptureIr => {
                // The IR's two low bits must capture 01 (IEEE 1149.1).
                self.shift = 0b00001;
                self.shift_len = IR_LEN;
            }
            State::UpdateIr => self.ir = (self.shift & ((1 << IR_LEN) - 1)) as u8,
            State::CaptureDr => self.capture_dr(),
            State::UpdateDr => self.update_dr(dmi),
            _ => {}
        }
        tdo
    }

    fn capture_dr(&mut self) {
        let (value, len) = match self.ir {
            IR_IDCODE => (u64::from(self.idcode), 32),
            IR_DTMCS => (u64::from(DTMCS | self.dmistat << 10), 32),
            IR_DMI => (
                u64::from(self.dmi_addr) << 34
                    | u64::from(self.dmi_data) << 2
                    | u64::from(self.dmistat),
                DMI_LEN,
            ),
            _ => (0, 1),
        };
        self.shift = value;
        self.shift_len = len;
    }

    fn update_dr(&mut self, dmi: &mut dyn Dmi) {
        match self.ir {
            // dmireset (bit 16) or dmihardreset (bit 17) clear the sticky error.
            IR_DTMCS if self.shift & (3 << 16) != 0 => self.dmistat = 0,
            IR_DMI => {
                let op = (self.shift & 3) as u32;
                let data = (self.shift >> 2) as u32;
                let addr = ((self.shift >> 34) & ((1 << ABITS) - 1)) as u32;
                if self.dmistat != 0 || !(op == 1 || op == 2) {
                    return;
                }
                match dmi.access(op == 2, addr, data) {
                    Some(v) => {
                        self.dmi_addr = addr;
                        self.dmi_data = if op == 1 { v } else { data };
                    }
                    None => self.dmistat = 2,
                }
            }
            _ => {}
        }
    }
}
