/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/rv32i-e279d108f6da5206.d: src/bin/rv32i.rs src/bin/../../asm/rt.S src/bin/../../asm/rv32i.S

/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/rv32i-e279d108f6da5206: src/bin/rv32i.rs src/bin/../../asm/rt.S src/bin/../../asm/rv32i.S

src/bin/rv32i.rs:
src/bin/../../asm/rt.S:
src/bin/../../asm/rv32i.S:
