# M extension: products of every sign combination, division edge cases.
.section .text.test, "ax", @progbits
.globl test_main
test_main:
    addi sp, sp, -16
    sw ra, 12(sp)
    MARK start
    li s0, -7
    li s2, 3
    mul s1, s0, s2
    CHECK s1, -21, mul
    li s0, 0x12345678
    li s2, 0x9abcdef0
    mul s1, s0, s2
    CHECK s1, 0x242d2080, mul_wrap
    mulh s1, s0, s2
    CHECK s1, 0xf8cc93d6, mulh
    mulhu s1, s0, s2
    CHECK s1, 0x0b00ea4e, mulhu
    mulhsu s1, s2, s0
    CHECK s1, 0xf8cc93d6, mulhsu_neg
    mulhsu s1, s0, s2
    CHECK s1, 0x0b00ea4e, mulhsu_pos
    li s0, 0x80000000
    mulh s1, s0, s0
    CHECK s1, 0x40000000, mulh_min
    li s2, -1
    mulhu s1, s2, s2
    CHECK s1, 0xfffffffe, mulhu_max
    mulhsu s1, s2, s2
    CHECK s1, 0xffffffff, mulhsu_m1
    MARK mul

    li s0, -20
    li s2, 6
    div s1, s0, s2
    CHECK s1, -3, div_trunc
    rem s1, s0, s2
    CHECK s1, -2, rem_sign
    divu s1, s0, s2
    CHECK s1, 0x2aaaaaa7, divu
    remu s1, s0, s2
    CHECK s1, 2, remu
    # Division by zero.
    div s1, s0, zero
    CHECK s1, -1, div_by_0
    divu s1, s0, zero
    CHECK s1, 0xffffffff, divu_by_0
    rem s1, s0, zero
    CHECK s1, -20, rem_by_0
    remu s1, s0, zero
    CHECK s1, -20, remu_by_0
    # Overflow.
    li s0, 0x80000000
    li s2, -1
    div s1, s0, s2
    CHECK s1, 0x80000000, div_overflow
    rem s1, s0, s2
    CHECK s1, 0, rem_overflow
    divu s1, s0, s2
    CHECK s1, 0, divu_big
    remu s1, s0, s2
    CHECK s1, 0x80000000, remu_big
    MARK div

    lw ra, 12(sp)
    addi sp, sp, 16
    ret
