//! Links every program with `link.x` (IMEM 128 KiB at 0x8000_0000, DMEM 64 KiB at 0x8002_0000).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-T{dir}/link.x");
    println!("cargo:rerun-if-changed=link.x");
    println!("cargo:rerun-if-changed=asm");
}
