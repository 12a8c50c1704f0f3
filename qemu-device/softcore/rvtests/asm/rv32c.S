# C extension: every RV32C instruction written explicitly.
.section .text.test, "ax", @progbits
.option push
.option rvc
.globl test_main
test_main:
    addi sp, sp, -16
    sw ra, 12(sp)
    MARK start
    # Work on a private stack frame for the sp-relative forms.
    addi sp, sp, -64
    c.li s0, -5
    CHECK s0, -5, c_li
    c.li s0, 31
    c.addi s0, -32
    CHECK s0, -1, c_addi
    c.lui s1, 0xfffe1
    CHECK s1, 0xfffe1000, c_lui
    c.lui s1, 1
    CHECK s1, 0x1000, c_lui_small
    c.mv s1, s0
    CHECK s1, -1, c_mv
    c.li s0, 12
    c.li s1, 30
    c.add s1, s0
    CHECK s1, 42, c_add
    c.sub s1, s0
    CHECK s1, 30, c_sub
    c.li s0, 0x0f
    c.li s1, 0x1c
    c.xor s1, s0
    CHECK s1, 0x13, c_xor
    c.or s1, s0
    CHECK s1, 0x1f, c_or
    c.li s1, 0x1c
    c.and s1, s0
    CHECK s1, 0x0c, c_and
    c.li s1, -16
    c.andi s1, 0x1b
    CHECK s1, 0x10, c_andi
    c.li s1, -16
    c.srli s1, 28
    CHECK s1, 0xf, c_srli
    c.li s1, -16
    c.srai s1, 2
    CHECK s1, -4, c_srai
    c.li s1, 3
    c.slli s1, 30
    CHECK s1, 0xc0000000, c_slli
    MARK alu

    # sp-relative and register-relative memory.
    mv s2, sp
    c.addi16sp sp, -32
    sub s1, s2, sp
    CHECK s1, 32, c_addi16sp
    c.addi16sp sp, 32
    c.addi4spn s0, sp, 40
    sub s1, s0, sp
    CHECK s1, 40, c_addi4spn
    li s1, 0x5a5a1234
    c.swsp s1, 60(sp)
    c.lwsp s0, 60(sp)
    CHECK s0, 0x5a5a1234, c_swsp_lwsp
    addi s0, sp, -64
    li s1, 0x777
    c.sw s1, 124(s0)
    li s1, 0
    c.lw s1, 124(s0)
    CHECK s1, 0x777, c_sw_lw
    MARK memory

    # Control flow.
    c.li s0, 0
    c.beqz s0, 1f
    c.li s0, 9
1:  c.bnez s0, 2f
    c.li s1, 1
    c.j 3f
2:  c.li s1, 2
3:  CHECK s1, 1, c_beqz_bnez
    c.jal 4f
5:  c.j 6f
4:  mv s1, ra
    la s0, 5b
    CHECKR s1, s0, c_jal_link
    la s0, 5b
    c.jr s0
6:  la s0, 7f
    c.jalr s0
8:  c.j 9f
7:  mv s1, ra
    la s0, 8b
    CHECKR s1, s0, c_jalr_link
    la s0, 8b
    c.jr s0
9:  # A 32-bit instruction at a 2-byte aligned address.
    c.nop
    .option push
    .option norvc
    addi s1, zero, 77
    .option pop
    CHECK s1, 77, rv32_at_halfword
    # Hints execute as no-ops.
    c.li s1, 3
    .2byte 0x0005
    c.li zero, 7
    CHECK s1, 3, c_hints
    MARK control

    addi sp, sp, 64
    lw ra, 12(sp)
    addi sp, sp, 16
    ret
.option pop
