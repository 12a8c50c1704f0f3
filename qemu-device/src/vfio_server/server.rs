//! Message handling: one [`Message`] in, at most one reply out.
//!
//! Every message gets exactly one reply, except a command that succeeded with the no-reply flag.
//! A refused message (bad frame, not a command, unknown or unsupported command, a payload too
//! short for its command, a region access outside its region or over [`MAX_DATA_XFER`], a
//! backend error) gets an error reply: the bare header with the error flag and a non-zero errno.
//! Nothing the client sends is trusted for a size before it is checked, nothing panics, and no
//! message makes the server wait for more bytes than its own `message_size` announced.
//!
//! The replies to well-formed messages are those of the `vfio_user` crate's server (0.1.7),
//! which this replaced: version 0.0 with `max_msg_fds` 1 and `max_data_xfer_size` 1 MiB, no
//! region capabilities, no migration.

use std::fs::File;
use std::io;
use std::sync::Arc;

use super::device::{self, Device, IrqInfo, RegionInfo};
use super::proto::*;
use super::wire::{Message, Wire, read_message};

/// A refused message: the errno of the error reply, and why (for the log).
#[derive(Debug)]
pub struct Refusal {
    pub errno: i32,
    pub why: String,
}

impl Refusal {
    fn new(errno: i32, why: impl Into<String>) -> Refusal {
        Refusal {
            errno,
            why: why.into(),
        }
    }

    fn inval(why: impl Into<String>) -> Refusal {
        Refusal::new(libc::EINVAL, why)
    }
}

impl From<io::Error> for Refusal {
    fn from(e: io::Error) -> Refusal {
        let errno = e
            .raw_os_error()
            .filter(|&n| n > 0)
            .unwrap_or(match e.kind() {
                io::ErrorKind::InvalidInput => libc::EINVAL,
                io::ErrorKind::TimedOut => libc::ETIMEDOUT,
                io::ErrorKind::Unsupported => libc::ENOTSUP,
                _ => libc::EIO,
            });
        Refusal {
            errno,
            why: e.to_string(),
        }
    }
}

type Handled = Result<Vec<u8>, Refusal>;

/// The vfio-user server of one [`Device`].
pub struct Server {
    device: Arc<Device>,
    regions: Vec<RegionInfo>,
    irqs: Vec<IrqInfo>,
}

/// The server's version data: its capabilities, as the `vfio_user` crate's server sent them.
fn server_capabilities() -> String {
    format!(
        r#"{{"capabilities":{{"max_msg_fds":{MAX_MSG_FDS},"max_data_xfer_size":{MAX_DATA_XFER},"migration":{{"pgsize":{}}}}}}}"#,
        crate::PAGE_SIZE
    )
}

/// Checks the client's version data: a NUL-terminated JSON object with a `capabilities` object
/// whose known fields have the types the protocol gives them.
fn check_client_version(data: &[u8]) -> Result<(), Refusal> {
    if data.is_empty() {
        // The version data is optional.
        return Ok(());
    }
    let json = data
        .strip_suffix(&[0])
        .ok_or_else(|| Refusal::inval("version data is not NUL-terminated"))?;
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| Refusal::inval(format!("version data: {e}")))?;
    let caps = v
        .get("capabilities")
        .and_then(|c| c.as_object())
        .ok_or_else(|| Refusal::inval("version data without a capabilities object"))?;
    let is_u32 = |v: &serde_json::Value| v.as_u64().is_some_and(|n| n <= u64::from(u32::MAX));
    for key in ["max_msg_fds", "max_data_xfer_size"] {
        if caps.get(key).is_some_and(|v| !is_u32(v)) {
            return Err(Refusal::inval(format!("capability {key} is not a u32")));
        }
    }
    if let Some(m) = caps.get("migration") {
        let ok = m
            .as_object()
            .is_some_and(|m| m.get("pgsize").is_some_and(is_u32));
        if !ok {
            return Err(Refusal::inval("capability migration without a u32 pgsize"));
        }
    }
    log::info!(
        "client version data: {}",
        String::from_utf8_lossy(json)
            .chars()
            .take(256)
            .collect::<String>()
    );
    Ok(())
}

fn need<T>(v: Option<T>, what: &str) -> Result<T, Refusal> {
    v.ok_or_else(|| Refusal::inval(format!("payload too short for {what}")))
}

fn u32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Server {
    pub fn new(device: Arc<Device>) -> Server {
        Server {
            device,
            regions: device::regions(),
            irqs: device::irqs(),
        }
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Serves one connection until the client closes it (Ok) or the socket fails (Err).
    pub fn serve(&self, wire: &mut dyn Wire) -> io::Result<()> {
        while let Some(msg) = read_message(wire)? {
            if let Some(reply) = self.handle(msg) {
                wire.send(&reply)?;
            }
        }
        Ok(())
    }

    /// Handles one message: the reply to send, if any.
    pub fn handle(&self, msg: Message) -> Option<Vec<u8>> {
        let h = msg.header;
        let r = match msg.bad_frame {
            Some(bad) => Err(Refusal::new(
                if bad == super::wire::BadFrame::TooLong {
                    libc::E2BIG
                } else {
                    libc::EINVAL
                },
                bad.to_string(),
            )),
            None if h.flags & FLAG_TYPE_MASK != FLAG_COMMAND => Err(Refusal::inval(format!(
                "flags {:#x}: not a command",
                h.flags
            ))),
            None => self.dispatch(&h, &msg.payload, msg.fds),
        };
        match r {
            Ok(payload) => {
                if h.no_reply() {
                    return None;
                }
                let mut out = Vec::with_capacity(HEADER_SIZE + payload.len());
                out.extend_from_slice(&h.reply(payload.len()).encode());
                out.extend_from_slice(&payload);
                Some(out)
            }
            Err(e) => {
                log::warn!(
                    "{} (message {}, command {}) refused: {}",
                    command_name(h.command),
                    h.message_id,
                    h.command,
                    e.why
                );
                let errno = u32::try_from(e.errno).ok().filter(|&n| n > 0);
                Some(
                    h.error_reply(errno.unwrap_or(libc::EINVAL as u32))
                        .encode()
                        .to_vec(),
                )
            }
        }
    }

    fn dispatch(&self, h: &Header, payload: &[u8], fds: Vec<File>) -> Handled {
        let reply_wanted = |name: &str| {
            if h.no_reply() {
                Err(Refusal::inval(format!("{name} with the no-reply flag")))
            } else {
                Ok(())
            }
        };
        let mut f = Fields(payload);
        match h.command {
            VERSION => {
                reply_wanted("VERSION")?;
                let major = need(f.u16(), "VERSION")?;
                let minor = need(f.u16(), "VERSION")?;
                check_client_version(f.rest())?;
                log::info!("client version {major}.{minor}");
                let caps = server_capabilities();
                let mut out = Vec::with_capacity(4 + caps.len() + 1);
                out.extend_from_slice(&0u16.to_le_bytes());
                out.extend_from_slice(&0u16.to_le_bytes());
                out.extend_from_slice(caps.as_bytes());
                out.push(0);
                Ok(out)
            }
            DMA_MAP => {
                let (argsz, flags) = (need(f.u32(), "DMA_MAP")?, need(f.u32(), "DMA_MAP")?);
                let (offset, iova, size) = (
                    need(f.u64(), "DMA_MAP")?,
                    need(f.u64(), "DMA_MAP")?,
                    need(f.u64(), "DMA_MAP")?,
                );
                if fds.len() > 1 {
                    return Err(Refusal::inval(format!(
                        "DMA_MAP with {} descriptors",
                        fds.len()
                    )));
                }
                log::trace!(
                    "dma map {iova:#x}+{size:#x} offset {offset:#x} flags {flags:#x} argsz \
                     {argsz} fd {}",
                    !fds.is_empty()
                );
                self.device
                    .dma_map(flags, offset, iova, size, fds.into_iter().next())?;
                Ok(Vec::new())
            }
            DMA_UNMAP => {
                let (argsz, flags) = (need(f.u32(), "DMA_UNMAP")?, need(f.u32(), "DMA_UNMAP")?);
                let (iova, size) = (need(f.u64(), "DMA_UNMAP")?, need(f.u64(), "DMA_UNMAP")?);
                log::trace!("dma unmap {iova:#x}+{size:#x} flags {flags:#x}");
                self.device.dma_unmap(flags, iova, size)?;
                let mut out = u32s(&[argsz, flags]);
                out.extend_from_slice(&iova.to_le_bytes());
                out.extend_from_slice(&size.to_le_bytes());
                Ok(out)
            }
            DEVICE_GET_INFO => {
                reply_wanted("DEVICE_GET_INFO")?;
                need(
                    f.u32().and(f.u32()).and(f.u32()).and(f.u32()),
                    "DEVICE_GET_INFO",
                )?;
                Ok(u32s(&[
                    16,
                    DEVICE_FLAGS_PCI | DEVICE_FLAGS_RESET,
                    self.regions.len() as u32,
                    self.irqs.len() as u32,
                ]))
            }
            DEVICE_GET_REGION_INFO => {
                reply_wanted("DEVICE_GET_REGION_INFO")?;
                let (_argsz, _flags) =
                    (need(f.u32(), "REGION_INFO")?, need(f.u32(), "REGION_INFO")?);
                let index = need(f.u32(), "DEVICE_GET_REGION_INFO")?;
                need(f.u32().and(f.u64()).and(f.u64()), "DEVICE_GET_REGION_INFO")?;
                let r = self
                    .regions
                    .get(index as usize)
                    .ok_or_else(|| Refusal::inval(format!("no region {index}")))?;
                // struct vfio_region_info: argsz, flags, index, cap_offset, size, offset.
                let mut out = u32s(&[32, r.flags, r.index, 0]);
                out.extend_from_slice(&r.size.to_le_bytes());
                out.extend_from_slice(&0u64.to_le_bytes());
                Ok(out)
            }
            DEVICE_GET_IRQ_INFO => {
                reply_wanted("DEVICE_GET_IRQ_INFO")?;
                let (_argsz, _flags) = (need(f.u32(), "IRQ_INFO")?, need(f.u32(), "IRQ_INFO")?);
                let index = need(f.u32(), "DEVICE_GET_IRQ_INFO")?;
                need(f.u32(), "DEVICE_GET_IRQ_INFO")?;
                let i = self
                    .irqs
                    .get(index as usize)
                    .ok_or_else(|| Refusal::inval(format!("no IRQ index {index}")))?;
                Ok(u32s(&[16, i.flags, i.index, i.count]))
            }
            DEVICE_SET_IRQS => {
                let _argsz = need(f.u32(), "DEVICE_SET_IRQS")?;
                let flags = need(f.u32(), "DEVICE_SET_IRQS")?;
                let index = need(f.u32(), "DEVICE_SET_IRQS")?;
                let start = need(f.u32(), "DEVICE_SET_IRQS")?;
                let count = need(f.u32(), "DEVICE_SET_IRQS")?;
                if index as usize >= self.irqs.len() {
                    return Err(Refusal::inval(format!("no IRQ index {index}")));
                }
                if flags & IRQ_SET_DATA_BOOL != 0 {
                    return Err(Refusal::new(libc::ENOTSUP, "SET_IRQS with DATA_BOOL"));
                }
                log::debug!(
                    "set_irqs index {index} flags {flags:#x} start {start} count {count} fds {}",
                    fds.len()
                );
                self.device.set_irqs(index, flags, start, count, fds)?;
                Ok(Vec::new())
            }
            REGION_READ => {
                reply_wanted("REGION_READ")?;
                let offset = need(f.u64(), "REGION_READ")?;
                let region = need(f.u32(), "REGION_READ")?;
                let count = need(f.u32(), "REGION_READ")?;
                self.check_access(region, offset, count)?;
                let mut out = Vec::with_capacity(16 + count as usize);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&u32s(&[region, count]));
                out.resize(16 + count as usize, 0);
                self.device.read(region, offset, &mut out[16..])?;
                log::trace!("read  region {region} {offset:#x} {:02x?}", &out[16..]);
                Ok(out)
            }
            REGION_WRITE => {
                let offset = need(f.u64(), "REGION_WRITE")?;
                let region = need(f.u32(), "REGION_WRITE")?;
                let count = need(f.u32(), "REGION_WRITE")?;
                self.check_access(region, offset, count)?;
                let data = f.rest();
                if data.len() != count as usize {
                    return Err(Refusal::inval(format!(
                        "REGION_WRITE of {count} bytes carries {}",
                        data.len()
                    )));
                }
                log::trace!("write region {region} {offset:#x} {data:02x?}");
                self.device.write(region, offset, data)?;
                let mut out = offset.to_le_bytes().to_vec();
                out.extend_from_slice(&u32s(&[region, count]));
                Ok(out)
            }
            DEVICE_RESET => {
                log::info!("device reset");
                self.device.reset()?;
                Ok(Vec::new())
            }
            DEVICE_GET_REGION_IO_FDS | DMA_READ | DMA_WRITE | DIRTY_PAGES => Err(Refusal::new(
                libc::ENOTSUP,
                format!("{} is not supported", command_name(h.command)),
            )),
            c => Err(Refusal::new(libc::ENOTSUP, format!("unknown command {c}"))),
        }
    }

    /// A region access must name a region, fit in it, and carry at most [`MAX_DATA_XFER`].
    fn check_access(&self, region: u32, offset: u64, count: u32) -> Result<(), Refusal> {
        if region as usize >= self.regions.len() {
            return Err(Refusal::inval(format!("no region {region}")));
        }
        if count > MAX_DATA_XFER {
            return Err(Refusal::inval(format!(
                "access of {count} bytes, over {MAX_DATA_XFER}"
            )));
        }
        Device::check(region, offset, count as usize)?;
        Ok(())
    }
}
