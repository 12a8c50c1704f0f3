/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/traps-56845bb90135d15e.d: src/bin/traps.rs src/bin/../../asm/rt.S src/bin/../../asm/traps.S

/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/traps-56845bb90135d15e: src/bin/traps.rs src/bin/../../asm/rt.S src/bin/../../asm/traps.S

src/bin/traps.rs:
src/bin/../../asm/rt.S:
src/bin/../../asm/traps.S:
