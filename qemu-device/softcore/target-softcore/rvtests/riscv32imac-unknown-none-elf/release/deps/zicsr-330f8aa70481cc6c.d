/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/zicsr-330f8aa70481cc6c.d: src/bin/zicsr.rs src/bin/../../asm/rt.S src/bin/../../asm/zicsr.S

/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/zicsr-330f8aa70481cc6c: src/bin/zicsr.rs src/bin/../../asm/rt.S src/bin/../../asm/zicsr.S

src/bin/zicsr.rs:
src/bin/../../asm/rt.S:
src/bin/../../asm/zicsr.S:
