/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/timer-634998a9d80857b7.d: src/bin/timer.rs src/bin/../../asm/rt.S src/bin/../../asm/timer.S

/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/timer-634998a9d80857b7: src/bin/timer.rs src/bin/../../asm/rt.S src/bin/../../asm/timer.S

src/bin/timer.rs:
src/bin/../../asm/rt.S:
src/bin/../../asm/timer.S:
