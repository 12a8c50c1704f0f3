/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/coremark-0bc4c3c8977da64e.d: src/bin/coremark.rs src/bin/../../asm/rt.S

/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/coremark-0bc4c3c8977da64e: src/bin/coremark.rs src/bin/../../asm/rt.S

src/bin/coremark.rs:
src/bin/../../asm/rt.S:
