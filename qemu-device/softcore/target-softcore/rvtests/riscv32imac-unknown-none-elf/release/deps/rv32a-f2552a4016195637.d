/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/rv32a-f2552a4016195637.d: src/bin/rv32a.rs src/bin/../../asm/rt.S src/bin/../../asm/rv32a.S

/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/rv32a-f2552a4016195637: src/bin/rv32a.rs src/bin/../../asm/rt.S src/bin/../../asm/rv32a.S

src/bin/rv32a.rs:
src/bin/../../asm/rt.S:
src/bin/../../asm/rv32a.S:
