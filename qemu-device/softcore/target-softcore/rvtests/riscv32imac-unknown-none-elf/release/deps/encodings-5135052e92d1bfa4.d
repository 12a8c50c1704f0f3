/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/encodings-5135052e92d1bfa4.d: src/bin/encodings.rs src/bin/../../asm/rt.S src/bin/../../asm/encodings.S

/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/encodings-5135052e92d1bfa4: src/bin/encodings.rs src/bin/../../asm/rt.S src/bin/../../asm/encodings.S

src/bin/encodings.rs:
src/bin/../../asm/rt.S:
src/bin/../../asm/encodings.S:
