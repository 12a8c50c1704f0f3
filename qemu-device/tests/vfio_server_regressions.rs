//! Regressions of the vfio-user server (`preba_card::vfio_server`), in process: malformed
//! messages the `vfio_user` crate's server (which it replaced) panicked on, allocated 4 GiB
//! for, or lost step with the client over; errors that went out with errno 0 (which a client
//! reads as success); descriptors over a real socket; and the crashes the `vfio_user_server`
//! fuzz target found.
//!
//! The firmware ELF comes from `$PREBA_FIRMWARE`, else the card harness builds it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use preba_card::vfio_server::proto::{self, FLAG_ERROR, HEADER_SIZE, Header, MAX_PAYLOAD};
use preba_card::vfio_server::{Device, MemoryWire, Server, read_message, sys};
use preba_card::{CardConfig, HostMemory, harness};
use preba_protocol::regs;

/// A card of its own per test (tests run in parallel and map and unmap DMA windows).
fn device() -> Arc<Device> {
    static FW: OnceLock<Vec<u8>> = OnceLock::new();
    let fw = FW
        .get_or_init(|| std::fs::read(harness::firmware_elf().expect("the firmware ELF")).unwrap());
    let config = CardConfig {
        image_cus: 1,
        audio_cus: 1,
        norm_cus: 1,
        workers: 1,
        ..CardConfig::default()
    };
    Arc::new(Device::new(config, fw).expect("card"))
}

fn msg(cmd: u16, id: u16, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Header {
        message_id: id,
        command: cmd,
        message_size: (HEADER_SIZE + payload.len()) as u32,
        flags,
        error: 0,
    }
    .encode()
    .to_vec();
    m.extend_from_slice(payload);
    m
}

fn read_payload(offset: u64, region: u32, count: u32) -> Vec<u8> {
    let mut p = offset.to_le_bytes().to_vec();
    p.extend_from_slice(&region.to_le_bytes());
    p.extend_from_slice(&count.to_le_bytes());
    p
}

/// Reads one reply off the client's end: its header and payload.
fn reply(s: &mut UnixStream) -> (Header, Vec<u8>) {
    let mut h = [0u8; HEADER_SIZE];
    s.read_exact(&mut h).expect("reply header");
    let h = Header::parse(&h);
    let mut body = vec![0; h.message_size as usize - HEADER_SIZE];
    s.read_exact(&mut body).expect("reply body");
    (h, body)
}

/// Expects an error reply to message `id` with `errno`.
fn refused(s: &mut UnixStream, id: u16, errno: i32) {
    let (h, body) = reply(s);
    assert_eq!(h.message_id, id);
    assert_ne!(h.flags & FLAG_ERROR, 0, "message {id} accepted");
    assert_eq!(h.error, errno as u32, "message {id} errno");
    assert!(body.is_empty());
}

/// A REGION_READ of VS: the stream is still in step.
fn in_step(s: &mut UnixStream, id: u16) {
    s.write_all(&msg(
        proto::REGION_READ,
        id,
        0,
        &read_payload(regs::VS, 0, 4),
    ))
    .unwrap();
    let (h, body) = reply(s);
    assert_eq!((h.message_id, h.flags), (id, proto::FLAG_REPLY), "in step");
    assert_eq!(&body[16..], &0x0001_0001u32.to_le_bytes());
}

/// A server on one end of a socket pair, serving in a thread until the client end closes.
fn serve_pair() -> (UnixStream, std::thread::JoinHandle<std::io::Result<()>>) {
    let (client, mut server_end) = UnixStream::pair().unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let server = Server::new(device());
    let t = std::thread::spawn(move || server.serve(&mut server_end));
    (client, t)
}

#[test]
fn malformed_messages_get_error_replies_and_the_stream_stays_in_step() {
    let (mut c, t) = serve_pair();
    // VERSION without its major/minor (the crate computed `message_size - 20`: underflow).
    c.write_all(&msg(proto::VERSION, 1, 0, &[])).unwrap();
    refused(&mut c, 1, libc::EINVAL);
    // Version data that is not NUL-terminated (the crate unwrapped CString::from_vec_with_nul).
    let mut p = vec![0, 0, 1, 0];
    p.extend_from_slice(br#"{"capabilities":{}}"#);
    c.write_all(&msg(proto::VERSION, 2, 0, &p)).unwrap();
    refused(&mut c, 2, libc::EINVAL);
    // No capabilities object: refused with EINVAL (the crate answered errno 0).
    let mut p = vec![0, 0, 1, 0];
    p.extend_from_slice(b"{}\0");
    c.write_all(&msg(proto::VERSION, 3, 0, &p)).unwrap();
    refused(&mut c, 3, libc::EINVAL);
    in_step(&mut c, 4);
    // A proper version exchange still works.
    let mut p = vec![0, 0, 1, 0];
    p.extend_from_slice(br#"{"capabilities":{"max_msg_fds":8}}"#);
    p.push(0);
    c.write_all(&msg(proto::VERSION, 5, 0, &p)).unwrap();
    let (h, body) = reply(&mut c);
    assert_eq!(h.flags, proto::FLAG_REPLY);
    assert_eq!(&body[..4], &[0, 0, 0, 0]);
    assert_eq!(body.last(), Some(&0));
    assert!(String::from_utf8_lossy(&body[4..]).contains(r#""max_data_xfer_size":1048576"#));

    // message_size shorter than the header: no payload is read.
    let mut m = msg(proto::DEVICE_GET_INFO, 6, 0, &[]);
    m[4..8].copy_from_slice(&8u32.to_le_bytes());
    c.write_all(&m).unwrap();
    refused(&mut c, 6, libc::EINVAL);
    in_step(&mut c, 7);
    // A 4 GiB region read (the crate allocated `count` bytes before any check).
    c.write_all(&msg(
        proto::REGION_READ,
        8,
        0,
        &read_payload(0, 0, u32::MAX),
    ))
    .unwrap();
    refused(&mut c, 8, libc::EINVAL);
    // A REGION_WRITE whose count is more than it carries (the crate read `count` bytes off the
    // stream: the next message's).
    let mut p = read_payload(regs::SCRATCH, 0, 8);
    p.extend_from_slice(&[1, 2, 3, 4]);
    c.write_all(&msg(proto::REGION_WRITE, 9, 0, &p)).unwrap();
    refused(&mut c, 9, libc::EINVAL);
    in_step(&mut c, 10);
    // Unknown and unsupported commands with payloads (the crate left the payload in the
    // stream).
    c.write_all(&msg(99, 11, 0, &[0xee; 24])).unwrap();
    refused(&mut c, 11, libc::ENOTSUP);
    c.write_all(&msg(proto::DMA_READ, 12, 0, &[0; 24])).unwrap();
    refused(&mut c, 12, libc::ENOTSUP);
    in_step(&mut c, 13);
    // Not a command.
    c.write_all(&msg(
        proto::DEVICE_GET_INFO,
        14,
        proto::FLAG_REPLY,
        &[0; 16],
    ))
    .unwrap();
    refused(&mut c, 14, libc::EINVAL);
    // A message longer than the server takes: read, dropped, refused.
    let n = MAX_PAYLOAD + 100;
    let mut m = msg(proto::REGION_WRITE, 15, 0, &[]);
    m[4..8].copy_from_slice(&((HEADER_SIZE + n) as u32).to_le_bytes());
    m.extend(std::iter::repeat_n(0x5a, n));
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&m));
    refused(&mut c, 15, libc::E2BIG);
    writer.join().unwrap().unwrap();
    in_step(&mut c, 16);
    // A header in two pieces.
    let m = msg(proto::REGION_READ, 17, 0, &read_payload(regs::VS, 0, 4));
    c.write_all(&m[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    c.write_all(&m[5..]).unwrap();
    let (h, _) = reply(&mut c);
    assert_eq!((h.message_id, h.flags), (17, proto::FLAG_REPLY));
    // No-reply flag on a command that must answer: refused (answered anyway).
    c.write_all(&msg(
        proto::DEVICE_GET_INFO,
        18,
        proto::FLAG_NO_REPLY,
        &[0; 16],
    ))
    .unwrap();
    refused(&mut c, 18, libc::EINVAL);
    // A no-reply write that succeeds: no answer; the next message's answer comes next.
    let mut p = read_payload(regs::SCRATCH, 0, 4);
    p.extend_from_slice(&7u32.to_le_bytes());
    c.write_all(&msg(proto::REGION_WRITE, 19, proto::FLAG_NO_REPLY, &p))
        .unwrap();
    in_step(&mut c, 20);

    // Cut off inside a message: the connection ends with an error, not a hang.
    c.write_all(&msg(proto::REGION_READ, 21, 0, &[0; 4])[..12])
        .unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let r = t.join().unwrap();
    assert_eq!(
        r.unwrap_err().kind(),
        std::io::ErrorKind::UnexpectedEof,
        "a message cut short"
    );
}

fn sealed_memfd(len: u64) -> File {
    let f = sys::memfd(c"regress", len, true).unwrap();
    sys::add_seals(&f, sys::SEAL_SHRINK | sys::SEAL_GROW).unwrap();
    f
}

fn map_payload(offset: u64, iova: u64, size: u64) -> Vec<u8> {
    let mut p = 32u32.to_le_bytes().to_vec();
    p.extend_from_slice(&3u32.to_le_bytes());
    for v in [offset, iova, size] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    p
}

/// Hands one message (with descriptors) to the server; returns the reply's header.
fn call(server: &Server, m: &[u8], fds: Vec<File>) -> Option<Header> {
    let mut w = MemoryWire::new();
    w.push(m, fds);
    let msg = read_message(&mut w).unwrap().expect("a message");
    server
        .handle(msg)
        .map(|r| Header::parse(r[..HEADER_SIZE].try_into().unwrap()))
}

#[test]
fn dma_map_refusals_carry_an_errno_and_sealed_memory_is_dma_memory() {
    let d = device();
    let server = Server::new(d.clone());
    let iova = 0x7000_0000;
    // Unsealed memory, an eventfd, two descriptors: refused with EINVAL (the crate sent errno
    // 0, which QEMU takes for success).
    let unsealed = sys::memfd(c"regress-unsealed", 8192, false).unwrap();
    let h = call(
        &server,
        &msg(proto::DMA_MAP, 1, 0, &map_payload(0, iova, 8192)),
        vec![unsealed],
    )
    .unwrap();
    assert_eq!(
        (h.flags & FLAG_ERROR != 0, h.error),
        (true, libc::EINVAL as u32)
    );
    let ev = sys::eventfd().unwrap();
    let h = call(
        &server,
        &msg(proto::DMA_MAP, 2, 0, &map_payload(0, iova, 8192)),
        vec![ev],
    )
    .unwrap();
    assert_eq!(h.error, libc::EINVAL as u32);
    let mem = sealed_memfd(8192);
    let two = vec![mem.try_clone().unwrap(), sys::eventfd().unwrap()];
    let h = call(
        &server,
        &msg(proto::DMA_MAP, 3, 0, &map_payload(0, iova, 8192)),
        two,
    )
    .unwrap();
    assert_eq!(h.error, libc::EINVAL as u32);
    // Past the end of the file.
    let h = call(
        &server,
        &msg(proto::DMA_MAP, 4, 0, &map_payload(4096, iova, 8192)),
        vec![mem.try_clone().unwrap()],
    )
    .unwrap();
    assert_eq!(h.error, libc::EINVAL as u32);
    // Sealed: mapped; the card's DMA reaches the client's bytes; the file cannot shrink.
    let h = call(
        &server,
        &msg(proto::DMA_MAP, 5, 0, &map_payload(0, iova, 8192)),
        vec![mem.try_clone().unwrap()],
    )
    .unwrap();
    assert_eq!(h.flags, proto::FLAG_REPLY, "sealed memfd mapped");
    use std::os::unix::fs::FileExt;
    mem.write_all_at(b"client", 4096 - 3).unwrap();
    let mut b = [0u8; 6];
    d.dma.read(iova + 4096 - 3, &mut b).unwrap();
    assert_eq!(&b, b"client");
    assert!(mem.set_len(0).is_err(), "a sealed memfd shrank");
    // Unmap everything (flag UNMAP_ALL): DMA there faults.
    let mut p = 24u32.to_le_bytes().to_vec();
    p.extend_from_slice(&4u32.to_le_bytes());
    p.extend_from_slice(&[0; 16]);
    let h = call(&server, &msg(proto::DMA_UNMAP, 6, 0, &p), Vec::new()).unwrap();
    assert_eq!(h.flags, proto::FLAG_REPLY);
    assert!(d.dma.read(iova, &mut b).is_err());
}

#[test]
fn the_host_drivers_client_against_the_in_process_server() {
    let dir = std::env::temp_dir().join(format!("preba-vfu-regress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("card.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let d = device();
    let server = Server::new(d.clone());
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        server.serve(&mut s)
    });
    use preba_host::vfio_user_client::Client;
    let mut c = Client::connect(&sock, Duration::from_secs(30)).expect("connect");
    assert_eq!(c.num_irqs(), 5);
    let mut vs = [0u8; 4];
    c.region_read(0, regs::VS, &mut vs).unwrap();
    assert_eq!(u32::from_le_bytes(vs), 0x0001_0001);
    // A descriptor over SCM_RIGHTS.
    let mem = sealed_memfd(4096);
    c.dma_map(0, 0x9000_0000, 4096, mem.as_raw_fd()).unwrap();
    use std::os::unix::fs::FileExt;
    mem.write_all_at(&[0xab; 8], 8).unwrap();
    let mut b = [0u8; 8];
    d.dma.read(0x9000_0008, &mut b).unwrap();
    assert_eq!(b, [0xab; 8]);
    // Two eventfds for MSI-X 0 and 1 in one message.
    let (e0, e1) = (sys::eventfd().unwrap(), sys::eventfd().unwrap());
    c.set_irqs(2, 0x24, 0, &[e0.as_raw_fd(), e1.as_raw_fd()])
        .unwrap();
    // An unsealed memfd is refused with EINVAL, and the connection goes on.
    let bad = sys::memfd(c"regress-unsealed", 4096, false).unwrap();
    let e = c
        .dma_map(0, 0x9100_0000, 4096, bad.as_raw_fd())
        .unwrap_err();
    assert!(
        e.to_string().contains(&format!("errno {}", libc::EINVAL)),
        "{e}"
    );
    c.region_read(0, regs::VS, &mut vs).unwrap();
    c.shutdown();
    t.join().unwrap().unwrap();
    d.disconnect();
    assert_eq!(d.dma.stats().entries, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
