//! `preba-protocol`: the contract between the host driver, the card model and
//! the firmware. docs/card-spec.md states the same facts as a page, and a test
//! (protocol/tests/spec.rs) keeps the two in step.
//!
//! Owns: the BAR0 register map ([`regs`]), the soft core's memory map and
//! peripheral registers ([`card`]), queue entry formats ([`io`], [`admin`]),
//! status codes ([`status`]), firmware images and A/B flash slots ([`fwimage`]),
//! preprocessing profiles ([`profile`]), input
//! limits ([`limits`]), ring index algebra ([`ring`]), the host side of a
//! queue pair that every host uses ([`hostq`]) and media header probes
//! ([`media`]).
//!
//! Must not: allocate, use `unsafe`, touch memory shared with another agent
//! (callers copy bytes out first and hand the copy here), or panic on bytes.
//!
//! Where each rule of docs/background.md section 2 lives:
//! - single writer per index, indices masked into `[0, size)`, power-of-two
//!   sizes, phase bits, publication order: [`ring`];
//! - copy once, validate the copy: every parser takes `&[u8; N]`, an owned
//!   copy, never a pointer into shared memory ([`io::Sqe::parse`],
//!   [`admin::AdminSqe::parse`], [`io::Cqe::parse`]);
//! - doorbell validation: [`ring::SqConsumer::doorbell`],
//!   [`ring::CqProducer::doorbell`] return a [`regs::QueueFault`], never loop;
//! - checked address arithmetic: [`io::SgEntry::end`], `out_iova + out_len`,
//!   admin data ranges; bounded scatter-gather ([`io::MAX_SG`], one level);
//! - per-request status ([`status::Status`]) apart from sticky queue faults
//!   ([`regs::QueueFault`], register `QFAULT`);
//! - completions are untrusted on the host: [`io::Cqe::parse`] rejects unknown
//!   statuses, [`ring::SqProducer::update_head`] rejects impossible heads, and
//!   [`hostq::Cq::poll`] applies every check (phase gaps, SQ id, command id)
//!   once for all hosts.
#![no_std]
#![forbid(unsafe_code)]

pub mod admin;
pub mod card;
pub mod crc;
pub mod fwimage;
pub mod hostq;
pub mod io;
pub mod limits;
pub mod media;
pub mod profile;
pub mod regs;
pub mod ring;
pub mod status;

/// Why bytes from the other side were refused. The one error type of the crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than the format needs.
    Truncated,
    /// An opcode this protocol version does not define.
    InvalidOpcode(u8),
    /// A reserved byte or bit is not zero (byte offset in the entry).
    ReservedNonZero { offset: u8 },
    /// A field out of range; names the field.
    InvalidField { field: &'static str },
    /// A length past a limit of [`limits`].
    TooLarge { field: &'static str },
}

impl WireError {
    /// The per-request status a device answers this error with.
    pub const fn status(&self) -> status::Status {
        match self {
            WireError::InvalidOpcode(_) => status::Status::InvalidOpcode,
            WireError::TooLarge { .. } => status::Status::InputTooLarge,
            _ => status::Status::InvalidField,
        }
    }
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::Truncated => write!(f, "truncated entry"),
            WireError::InvalidOpcode(o) => write!(f, "invalid opcode {o:#04x}"),
            WireError::ReservedNonZero { offset } => {
                write!(f, "reserved byte {offset} is not zero")
            }
            WireError::InvalidField { field } => write!(f, "invalid field {field}"),
            WireError::TooLarge { field } => write!(f, "{field} past its limit"),
        }
    }
}
