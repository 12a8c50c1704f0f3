/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/preba_rvtests-72bd55eb2c1f0520.d: src/lib.rs

/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/libpreba_rvtests-72bd55eb2c1f0520.rlib: src/lib.rs

/work/main/qemu-device/softcore/target-softcore/rvtests/riscv32imac-unknown-none-elf/release/deps/libpreba_rvtests-72bd55eb2c1f0520.rmeta: src/lib.rs

src/lib.rs:
