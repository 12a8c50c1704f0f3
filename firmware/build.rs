//! Puts memory.x where the linker finds it, and stamps a build id: FNV-1a 64
//! over the firmware and protocol sources (paths and contents, sorted), so
//! identical sources give identical ids on every machine. `PREBA_FW_BUILD_SALT`,
//! when set, is hashed in too (a variant image for the flashing tests).
use std::{env, fs, path::Path, path::PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p
            .extension()
            .is_some_and(|x| x == "rs" || x == "toml" || x == "x")
        {
            out.push(p);
        }
    }
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");

    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let proto = root.join("../protocol");
    let mut files = Vec::new();
    for (base, sub) in [(&root, "src"), (&proto, "src")] {
        collect(&base.join(sub), &mut files);
        println!("cargo:rerun-if-changed={}", base.join(sub).display());
    }
    files.push(root.join("Cargo.toml"));
    files.push(root.join("memory.x"));
    files.push(proto.join("Cargo.toml"));
    let mut keyed: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root.parent().unwrap_or(&root))
                .unwrap_or(&p)
                .to_string_lossy()
                .replace('\\', "/");
            (rel, p)
        })
        .collect();
    keyed.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (rel, p) in &keyed {
        feed(rel.as_bytes());
        feed(&[0]);
        feed(&fs::read(p).unwrap_or_default());
        feed(&[0]);
        println!("cargo:rerun-if-changed={}", p.display());
    }
    // A salt gives a second image with the same code and another id: what
    // the flashing tests need to tell "the new image runs" from "the old one".
    println!("cargo:rerun-if-env-changed=PREBA_FW_BUILD_SALT");
    if let Some(salt) = env::var_os("PREBA_FW_BUILD_SALT") {
        feed(&[0xff]);
        feed(salt.to_string_lossy().as_bytes());
    }
    println!("cargo:rustc-env=PREBA_FW_BUILD_ID={h}");
}
