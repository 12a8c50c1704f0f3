/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/rv32c-b5ce92da9ee80220.d: src/bin/rv32c.rs src/bin/../../asm/rt.S src/bin/../../asm/rv32c.S

/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/rv32c-b5ce92da9ee80220: src/bin/rv32c.rs src/bin/../../asm/rt.S src/bin/../../asm/rv32c.S

src/bin/rv32c.rs:
src/bin/../../asm/rt.S:
src/bin/../../asm/rv32c.S:
