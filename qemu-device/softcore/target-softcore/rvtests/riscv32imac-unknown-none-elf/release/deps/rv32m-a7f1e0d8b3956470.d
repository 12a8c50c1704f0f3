/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/rv32m-a7f1e0d8b3956470.d: src/bin/rv32m.rs src/bin/../../asm/rt.S src/bin/../../asm/rv32m.S

/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/rv32m-a7f1e0d8b3956470: src/bin/rv32m.rs src/bin/../../asm/rt.S src/bin/../../asm/rv32m.S

src/bin/rv32m.rs:
src/bin/../../asm/rt.S:
src/bin/../../asm/rv32m.S:
