/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/misaligned-a8039c8e310aded1.d: src/bin/misaligned.rs src/bin/../../asm/rt.S src/bin/../../asm/misaligned.S

/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/misaligned-a8039c8e310aded1: src/bin/misaligned.rs src/bin/../../asm/rt.S src/bin/../../asm/misaligned.S

src/bin/misaligned.rs:
src/bin/../../asm/rt.S:
src/bin/../../asm/misaligned.S:
