//! `cargo xtask qemu setup|test`: the QEMU guest testbed (docs/background.md section 4).
//!
//! `setup` (idempotent, cached under `$PREBA_CACHE/qemu`, default ~/.cache/preba/qemu):
//! - a Debian trixie root made by `debootstrap --variant=minbase --include=busybox-static`, with
//!   trixie-backports' `qemu-system-x86` inside (QEMU 10.1+ has `vfio-user-pci`; bookworm's 7.2
//!   has not). QEMU runs straight from that root through the root's own loader: no chroot, no
//!   root needed at test time. Making the root needs root (debootstrap).
//! - the guest kernel: vmlinuz and the VFIO modules (with their dependencies, in load order)
//!   from trixie's linux-image package, `.ko.xz` decompressed (busybox insmod cannot).
//!
//! `test`: builds `preba-card` and the static (musl) guest binaries, makes an initramfs
//! (busybox, modules, /init, the binaries, the fixtures), starts `preba-card` on a private
//! socket, boots the guest under TCG with the card behind a vIOMMU, and reads the serial log:
//! the guest binds the card to vfio-pci, runs its checks, prints `PREBA-CHECK <name> ok|fail`
//! lines and one `PREBA-RESULT pass=N fail=M` line, and powers off. Everything has a deadline;
//! `preba-card` and QEMU are killed at the end whatever happened.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, Result, cargo, root, run};

const SUITE: &str = "trixie";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Bump to rebuild the cached root and kernel.
const SETUP_VERSION: &str = "1";
/// The modules the guest needs; their dependencies are added from modules.dep.
const MODULES: &[&str] = &["vfio-pci", "vfio_iommu_type1"];
const MUSL: &str = "x86_64-unknown-linux-musl";

fn qemu_dir() -> PathBuf {
    util::cache_dir().join("qemu")
}

struct Testbed {
    root: PathBuf,
    vmlinuz: PathBuf,
    /// Decompressed modules in load order.
    modules: Vec<PathBuf>,
}

fn testbed() -> Testbed {
    let d = qemu_dir();
    let kdir = d.join("kernel");
    let order = std::fs::read_to_string(kdir.join("load-order")).unwrap_or_default();
    Testbed {
        root: d.join("root"),
        vmlinuz: kdir.join("vmlinuz"),
        modules: order
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| kdir.join(l))
            .collect(),
    }
}

pub fn main(args: &[&str]) -> Result<()> {
    match args {
        ["setup"] => setup().map(|_| ()),
        ["test", rest @ ..] => test(rest),
        _ => Err("usage: cargo xtask qemu setup | test [--keep] [--no-cli]".into()),
    }
}

fn is_root() -> bool {
    util::output(Command::new("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes (once) the trixie root with QEMU and the guest kernel; returns the testbed.
fn setup() -> Result<Testbed> {
    let d = qemu_dir();
    let stamp = d.join("setup-ok");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(SETUP_VERSION) {
        let tb = testbed();
        if tb.vmlinuz.exists() && !tb.modules.is_empty() && qemu_bin(&tb.root).exists() {
            return Ok(tb);
        }
    }
    let t0 = Instant::now();
    if !is_root() {
        return Err(format!(
            "the QEMU testbed is not set up in {} and making it needs root (debootstrap)",
            d.display()
        ));
    }
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    if !have("debootstrap") {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get").args(["install", "-y", "-q", "debootstrap"]))?;
    }
    let root_dir = d.join("root");
    let partial = d.join("root.partial");
    if !qemu_bin(&root_dir).exists() {
        let _ = std::fs::remove_dir_all(&partial);
        run(Command::new("debootstrap")
            .args(["--variant=minbase", "--include=busybox-static", SUITE])
            .arg(&partial)
            .arg(MIRROR))?;
        std::fs::write(
            partial.join("etc/apt/sources.list.d/backports.list"),
            format!("deb {MIRROR} {SUITE}-backports main\n"),
        )
        .map_err(|e| format!("backports list: {e}"))?;
        chroot(&partial, "apt-get update -q")?;
        chroot(
            &partial,
            &format!(
                "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                 -t {SUITE}-backports qemu-system-x86"
            ),
        )?;
        chroot(&partial, "apt-get clean")?;
        let _ = std::fs::remove_dir_all(&root_dir);
        std::fs::rename(&partial, &root_dir).map_err(|e| format!("rename root: {e}"))?;
        eprintln!("xtask: QEMU root ready in {:.0?}", t0.elapsed());
    }
    kernel(&root_dir, &d.join("kernel"))?;
    std::fs::write(&stamp, SETUP_VERSION).map_err(|e| format!("{}: {e}", stamp.display()))?;
    eprintln!("xtask: QEMU testbed set up in {:.0?}", t0.elapsed());
    Ok(testbed())
}

fn chroot(root: &Path, script: &str) -> Result<()> {
    run(Command::new("chroot")
        .arg(root)
        .args(["sh", "-c", script])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
}

/// Downloads trixie's kernel package inside the root and extracts vmlinuz and the modules.
fn kernel(root: &Path, kdir: &Path) -> Result<()> {
    let work = root.join("tmp/preba-kernel");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    // The metapackage names the versioned image package.
    let deps = util::output(
        Command::new("chroot")
            .arg(root)
            .args(["apt-cache", "depends", "linux-image-amd64"])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    )?;
    let pkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && !p.contains("unsigned"))
        .ok_or_else(|| format!("no linux-image package in:\n{deps}"))?
        .to_string();
    chroot(
        root,
        &format!("cd /tmp/preba-kernel && apt-get download -q {pkg} && dpkg-deb -x {pkg}_*.deb x"),
    )?;
    let x = work.join("x");
    let boot = std::fs::read_dir(x.join("boot"))
        .map_err(|e| format!("kernel package: {e}"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
        .ok_or("no vmlinuz in the kernel package")?;
    let moddir = std::fs::read_dir(x.join("usr/lib/modules"))
        .or_else(|_| std::fs::read_dir(x.join("lib/modules")))
        .map_err(|e| format!("kernel modules: {e}"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .next()
        .ok_or("no modules directory")?;
    // The package has no modules.dep (depmod makes it at install): follow each module's
    // `depends=` field instead, decompressing only the modules needed.
    let mut index = std::collections::HashMap::new();
    index_modules(&moddir.join("kernel"), &mut index, 0)?;
    let mut order: Vec<(String, Vec<u8>)> = Vec::new();
    for m in MODULES {
        add_module(m, &index, &mut order, 0)?;
    }
    let _ = std::fs::remove_dir_all(kdir);
    std::fs::create_dir_all(kdir).map_err(|e| format!("{}: {e}", kdir.display()))?;
    std::fs::copy(&boot, kdir.join("vmlinuz")).map_err(|e| format!("vmlinuz: {e}"))?;
    let mut names = String::new();
    for (name, bytes) in &order {
        let file = format!("{name}.ko");
        std::fs::write(kdir.join(&file), bytes).map_err(|e| format!("{file}: {e}"))?;
        names.push_str(&file);
        names.push('\n');
    }
    std::fs::write(kdir.join("load-order"), names).map_err(|e| format!("load-order: {e}"))?;
    std::fs::write(kdir.join("package"), &pkg).map_err(|e| format!("package: {e}"))?;
    let _ = std::fs::remove_dir_all(&work);
    eprintln!("xtask: guest kernel {pkg}: {} modules", order.len());
    Ok(())
}

/// Module name (dashes as underscores) -> path of its `.ko.xz` / `.ko`.
fn index_modules(
    dir: &Path,
    index: &mut std::collections::HashMap<String, PathBuf>,
    depth: usize,
) -> Result<()> {
    if depth > 8 {
        return Ok(());
    }
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let p = e.map_err(|e| e.to_string())?.path();
        if p.is_dir() {
            index_modules(&p, index, depth + 1)?;
        } else if let Some(n) = p.file_name().map(|n| n.to_string_lossy().into_owned())
            && let Some(stem) = n.strip_suffix(".ko.xz").or_else(|| n.strip_suffix(".ko"))
        {
            index.insert(stem.replace('-', "_"), p.clone());
        }
    }
    Ok(())
}

/// The `depends=` field of a module's .modinfo section.
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect()
}

/// Adds module `name` after its dependencies (decompressed) to `order`.
fn add_module(
    name: &str,
    index: &std::collections::HashMap<String, PathBuf>,
    order: &mut Vec<(String, Vec<u8>)>,
    depth: usize,
) -> Result<()> {
    let name = name.replace('-', "_");
    if depth > 32 {
        return Err("module dependency loop".into());
    }
    if order.iter().any(|(n, _)| *n == name) {
        return Ok(());
    }
    let path = index
        .get(&name)
        .ok_or_else(|| format!("module {name} is not in the kernel package"))?;
    let bytes = if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .map_err(|e| format!("xz: {e}"))?;
        if !out.status.success() {
            return Err(format!("xz -d {} failed", path.display()));
        }
        out.stdout
    } else {
        read(path)?
    };
    for d in module_depends(&bytes) {
        add_module(&d, index, order, depth + 1)?;
    }
    order.push((name, bytes));
    Ok(())
}

fn qemu_bin(root: &Path) -> PathBuf {
    root.join("usr/bin/qemu-system-x86_64")
}

/// A command that runs the root's QEMU through the root's loader (no chroot).
fn qemu_command(root: &Path) -> Command {
    let lib = root.join("usr/lib/x86_64-linux-gnu");
    let mut c = Command::new(lib.join("ld-linux-x86-64.so.2"));
    c.env("QEMU_MODULE_DIR", lib.join("qemu"))
        .arg("--library-path")
        .arg(&lib)
        .arg(qemu_bin(root))
        .arg("-L")
        .arg(root.join("usr/share/qemu"))
        .arg("-L")
        .arg(root.join("usr/share/seabios"));
    c
}

// ---------------------------------------------------------------------------------------------
// initramfs (cpio newc, uncompressed)

struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Cpio {
        Cpio {
            out: Vec::new(),
            ino: 1,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        let name = name.trim_start_matches('/');
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.ino += 1;
        self.out.extend_from_slice(hdr.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[], (0, 0));
    }

    fn file(&mut self, name: &str, data: &[u8], exec: bool) {
        self.entry(name, if exec { 0o100755 } else { 0o100644 }, data, (0, 0));
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes(), (0, 0));
    }

    fn chardev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, &[], (major, minor));
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        self.out
    }
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Builds the initramfs: busybox, the modules, /init, the guest binaries, the fixtures.
fn initramfs(tb: &Testbed, bins: &[(String, PathBuf)], out: &Path) -> Result<()> {
    let mut c = Cpio::new();
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "lib",
    ] {
        c.dir(d);
    }
    c.dir("lib/modules");
    c.chardev("dev/console", 5, 1);
    c.chardev("dev/null", 1, 3);
    let bb = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| tb.root.join(p))
        .find(|p| p.exists())
        .ok_or("busybox-static is missing from the QEMU root")?;
    c.file("bin/busybox", &read(&bb)?, true);
    c.symlink("bin/sh", "busybox");
    let mut order = String::new();
    for m in &tb.modules {
        let name = m
            .file_name()
            .ok_or("module")?
            .to_string_lossy()
            .into_owned();
        c.file(&format!("lib/modules/{name}"), &read(m)?, false);
        order.push_str(&name);
        order.push('\n');
    }
    c.file("lib/modules/load-order", order.as_bytes(), false);
    for (name, p) in bins {
        c.file(&format!("bin/{name}"), &read(p)?, true);
    }
    let guest = root().join("tests/qemu_guest");
    c.file("init", &read(&guest.join("init"))?, true);
    if bins.iter().any(|(n, _)| n == "preba") {
        c.file("checks.sh", &read(&guest.join("cli_checks.sh"))?, true);
        // The image `preba card flash` writes in the guest: same code, another build id.
        let b = crate::setup::build_fw_variant("b")?;
        c.file("fw-b.elf", &read(&b)?, false);
    }
    // Fixtures for the preprocessing checks.
    // Fixture images for the data-path checks (the huge ones stay out).
    let fx = root().join("fixtures/images");
    if fx.is_dir() {
        c.dir("fixtures");
        c.dir("fixtures/images");
        add_tree(&mut c, &fx, "fixtures/images", 0)?;
    }
    let img = c.finish();
    std::fs::write(out, img).map_err(|e| format!("{}: {e}", out.display()))
}

fn add_tree(c: &mut Cpio, dir: &Path, prefix: &str, depth: usize) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        let rel = format!("{prefix}/{name}");
        let md = e.metadata().map_err(|e| format!("{}: {e}", p.display()))?;
        if md.is_dir() && depth < 4 {
            c.dir(&rel);
            add_tree(c, &p, &rel, depth + 1)?;
        } else if md.is_file() && md.len() <= 1 << 20 {
            c.file(&rel, &read(&p)?, false);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test

/// Kills a child when dropped (SIGTERM, then SIGKILL after a grace period).
struct Reaper(Option<Child>, &'static str);

impl Reaper {
    fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut ch = self.0.take()?;
        if let Ok(Some(st)) = ch.try_wait() {
            return Some(st);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &ch.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < grace {
            if let Ok(Some(st)) = ch.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("xtask: {} did not stop on SIGTERM: killing it", self.1);
        let _ = ch.kill();
        ch.wait().ok()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

/// Builds what the test needs: preba-card (host), the guest binaries (static musl).
fn build(with_cli: bool) -> Result<(PathBuf, Vec<(String, PathBuf)>)> {
    run(cargo().args(["build", "-q", "-p", "preba-card", "--bin", "preba-card"]))?;
    let card = util::target_dir().join("debug/preba-card");
    run(cargo().args([
        "build",
        "-q",
        "--release",
        "--target",
        MUSL,
        "-p",
        "preba-tests",
        "--bin",
        "preba-guest-check",
    ]))?;
    let rel = util::target_dir().join(MUSL).join("release");
    let mut bins = vec![(
        "preba-guest-check".to_string(),
        rel.join("preba-guest-check"),
    )];
    if !with_cli {
        return Ok((card, bins));
    }
    // The CLI, when it builds statically (the guest runs `preba` over kernel VFIO with it).
    let preba = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .args([
            "build",
            "-q",
            "--release",
            "--target",
            MUSL,
            "-p",
            "preba-serve",
            "--bin",
            "preba",
        ])
        .status();
    if !preba.is_ok_and(|s| s.success()) {
        return Err("the static (musl) `preba` did not build".into());
    }
    bins.push(("preba".to_string(), rel.join("preba")));
    Ok((card, bins))
}

/// The firmware ELF for the card.
fn firmware() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PREBA_FIRMWARE") {
        return Ok(PathBuf::from(p));
    }
    crate::setup::build_fw()
}

/// Outcome of one guest boot.
#[derive(Debug, Default)]
pub struct GuestRun {
    pub checks: Vec<(String, bool, String)>,
    pub result: Option<(u32, u32)>,
    pub boot_s: f64,
    pub log: String,
}

/// Checks the guest reports on every run (`image-*` checks come on top, one per fixture).
const REQUIRED_CHECKS: &[&str] = &[
    "modules",
    "device-visible",
    "vfio-bind",
    "vfio-open",
    "admin-enable",
    "msix-io-irq",
    "io-dma-fault",
    "io-queue-survives-fault",
    "reset-clears",
    "reset-recovers",
    "intx-irq",
    "intx-again",
    "guest-check-exit",
    "card-interrupts",
];
/// ... and with the static `preba` in the guest.
const REQUIRED_CLI_CHECKS: &[&str] = &[
    "cli-card-info",
    "cli-preprocess-vfio-u8",
    "cli-manifest-card-u8",
    "cli-preprocess-vfio-f32",
    "cli-manifest-card-f32",
    "cli-unsupported-fallback",
    "cli-card-flash",
    "cli-card-info-after-flash",
];

pub fn test(rest: &[&str]) -> Result<()> {
    let keep = rest.contains(&"--keep");
    let with_cli = !rest.contains(&"--no-cli");
    let t0 = Instant::now();
    let tb = setup()?;
    let fw = firmware()?;
    let (card_bin, bins) = build(with_cli)?;
    let t_build = t0.elapsed();
    let work = std::env::temp_dir().join(format!("preba-qemu-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let initrd = work.join("initrd.cpio");
    initramfs(&tb, &bins, &initrd)?;
    let r = boot(&tb, &card_bin, &fw, &initrd, &work);
    if !keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    let g = r?;
    for (name, ok, detail) in &g.checks {
        eprintln!(
            "xtask: guest check {name}: {}{}",
            if *ok { "ok" } else { "FAIL" },
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            }
        );
    }
    eprintln!(
        "xtask: qemu test: setup+build {:.1}s, boot-to-poweroff {:.1}s",
        t_build.as_secs_f64(),
        g.boot_s
    );
    let failed: Vec<_> = g
        .checks
        .iter()
        .filter(|c| !c.1)
        .map(|c| c.0.as_str())
        .collect();
    // Checks that every run must report: a guest that stops early (a crash,
    // a hang cut short) leaves some out, which fails the run instead of
    // passing on the checks that did run.
    let mut required: Vec<&str> = REQUIRED_CHECKS.to_vec();
    if with_cli {
        required.extend(REQUIRED_CLI_CHECKS);
    }
    let missing: Vec<&str> = required
        .into_iter()
        .filter(|r| !g.checks.iter().any(|c| c.0 == *r))
        .collect();
    let images = g
        .checks
        .iter()
        .filter(|c| c.0.starts_with("image-"))
        .count();
    if !missing.is_empty() || images == 0 {
        return Err(format!(
            "guest checks missing: {} ({images} image checks ran)",
            missing.join(", ")
        ));
    }
    match g.result {
        Some((pass, 0)) if failed.is_empty() && pass > 0 => {
            println!("qemu-guest: {pass} passed, 0 failed");
            Ok(())
        }
        Some((pass, fail)) => {
            println!("qemu-guest: {pass} passed, {fail} failed");
            Err(format!("guest checks failed: {}", failed.join(", ")))
        }
        None => Err(format!(
            "the guest printed no result line; serial log tail:\n{}",
            tail(&g.log, 60)
        )),
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn boot_timeout() -> Duration {
    Duration::from_secs(
        std::env::var("PREBA_QEMU_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    )
}

/// Starts preba-card, boots the guest, collects the serial log.
fn boot(tb: &Testbed, card_bin: &Path, fw: &Path, initrd: &Path, work: &Path) -> Result<GuestRun> {
    let sock = work.join("card.sock");
    let card_log = work.join("card.log");
    let card = Command::new(card_bin)
        .arg("--socket")
        .arg(&sock)
        .arg("--firmware")
        .arg(fw)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&card_log).map_err(|e| format!("card log: {e}"))?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", card_bin.display()))?;
    let mut card = Reaper(Some(card), "preba-card");
    let t = Instant::now();
    while !sock.exists() {
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "preba-card did not listen within 30 s:\n{}",
                std::fs::read_to_string(&card_log).unwrap_or_default()
            ));
        }
        if let Some(ch) = card.0.as_mut()
            && let Ok(Some(st)) = ch.try_wait()
        {
            return Err(format!(
                "preba-card exited ({st}):\n{}",
                std::fs::read_to_string(&card_log).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let serial = work.join("serial.log");
    let dev = format!(
        "{{\"driver\":\"vfio-user-pci\",\"socket\":{{\"path\":\"{}\",\"type\":\"unix\"}}}}",
        sock.display()
    );
    let mut q = qemu_command(&tb.root);
    q.args([
        "-machine",
        "q35,accel=tcg,kernel-irqchip=split",
        "-cpu",
        "max",
        "-smp",
        "1",
        "-m",
        "512M",
        "-object",
        "memory-backend-memfd,id=mem,size=512M,share=on",
        "-numa",
        "node,memdev=mem",
        "-device",
        "intel-iommu,caching-mode=on,intremap=on",
        "-device",
        &dev,
        "-kernel",
    ])
    .arg(&tb.vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .args([
        "-append",
        "console=ttyS0 rdinit=/init panic=-1 intel_iommu=on quiet loglevel=4",
        "-nographic",
        "-serial",
    ])
    .arg(format!("file:{}", serial.display()))
    .args(["-monitor", "none", "-no-reboot", "-nodefaults"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    eprintln!("xtask: booting the guest ({})", util::show(&q));
    let t_boot = Instant::now();
    let qemu = q.spawn().map_err(|e| format!("cannot start QEMU: {e}"))?;
    let mut qemu = Reaper(Some(qemu), "qemu");
    let limit = boot_timeout();
    let status = loop {
        if let Some(ch) = qemu.0.as_mut()
            && let Ok(Some(st)) = ch.try_wait()
        {
            break Some(st);
        }
        if t_boot.elapsed() > limit {
            eprintln!("xtask: the guest ran past {limit:?}: killing QEMU");
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let boot_s = t_boot.elapsed().as_secs_f64();
    let qerr = qemu
        .0
        .as_mut()
        .and_then(|ch| ch.stderr.take())
        .map(|mut e| {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
            s
        })
        .unwrap_or_default();
    qemu.stop(Duration::from_secs(2));
    let card_status = card.stop(Duration::from_secs(5));
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    let card_text = std::fs::read_to_string(&card_log).unwrap_or_default();
    let mut g = parse_serial(&log);
    g.boot_s = boot_s;
    for l in log.lines().filter(|l| l.contains("PREBA-GUEST:")) {
        eprintln!("xtask: guest: {}", l.trim_start_matches(|c| c != 'P'));
    }
    // The card's closing line: DMA maps, MSI-X and INTx counts.
    if let Some(l) = card_text.lines().rev().find(|l| l.contains("MSI-X sent")) {
        eprintln!("xtask: {l}");
        let count = |k: &str| {
            l.split(k)
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (msix, intx) = (count("MSI-X sent "), count("INTx sent "));
        g.checks.push((
            "card-interrupts".into(),
            msix > 0 && intx > 0,
            format!("the card sent {msix} MSI-X and {intx} INTx interrupts"),
        ));
    }
    if !qerr.trim().is_empty() {
        eprintln!("xtask: QEMU said:\n{}", tail(&qerr, 30));
    }
    if status.is_none() || g.result.is_none() || g.checks.iter().any(|c| !c.1) {
        eprintln!("xtask: preba-card log tail:\n{}", tail(&card_text, 40));
        eprintln!("xtask: serial log tail:\n{}", tail(&log, 80));
    }
    // preba-card exits by itself when QEMU disconnects; SIGTERM otherwise: both are clean.
    match card_status {
        Some(st) if st.success() => {}
        other => g.checks.push((
            "card-clean-exit".into(),
            false,
            format!("preba-card ended with {other:?}"),
        )),
    }
    if let Some(st) = status
        && !st.success()
    {
        eprintln!("xtask: QEMU exited with {st}");
    }
    let _ = std::io::stderr().flush();
    Ok(g)
}

/// Reads `PREBA-CHECK name ok|fail [detail]` and `PREBA-RESULT pass=N fail=M` lines.
pub fn parse_serial(log: &str) -> GuestRun {
    let mut g = GuestRun {
        log: log.to_string(),
        ..GuestRun::default()
    };
    for line in log.as_bytes().lines().map_while(|l| l.ok()) {
        let line = line.trim_end_matches('\r');
        let Some(at) = line.find("PREBA-") else {
            continue;
        };
        let line = &line[at..];
        if let Some(rest) = line.strip_prefix("PREBA-CHECK ") {
            let mut it = rest.splitn(3, ' ');
            let name = it.next().unwrap_or("").to_string();
            let ok = it.next() == Some("ok");
            let detail = it.next().unwrap_or("").to_string();
            g.checks.push((name, ok, detail));
        } else if let Some(rest) = line.strip_prefix("PREBA-RESULT ") {
            let num = |k: &str| {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .and_then(|v| v.parse().ok())
            };
            if let (Some(p), Some(f)) = (num("pass="), num("fail=")) {
                g.result = Some((p, f));
            }
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_parse() {
        let g = parse_serial(
            "junk\nPREBA-CHECK a ok\r\n[ 1.0] PREBA-CHECK b fail bad thing\nPREBA-RESULT pass=1 fail=1\n",
        );
        assert_eq!(g.checks.len(), 2);
        assert_eq!(g.checks[1], ("b".into(), false, "bad thing".into()));
        assert_eq!(g.result, Some((1, 1)));
    }

    #[test]
    fn modinfo_depends() {
        let ko = b"\x7fELF....license=GPL\0depends=vfio,irqbypass,vfio-pci-core\0intree=Y\0";
        assert_eq!(
            module_depends(ko),
            vec!["vfio", "irqbypass", "vfio_pci_core"]
        );
        assert!(module_depends(b"depends=\0").is_empty());
    }

    #[test]
    fn cpio_layout() {
        let mut c = Cpio::new();
        c.file("init", b"#!/bin/sh\n", true);
        let v = c.finish();
        assert!(v.starts_with(b"070701"));
        assert_eq!(v.len() % 512, 0);
        assert!(v.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
