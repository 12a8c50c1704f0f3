# RV32I: every base instruction, checked, with log points (instruction counts) between groups.
.section .text.test, "ax", @progbits
.option push
.option norvc
.globl test_main
test_main:
    addi sp, sp, -16
    sw ra, 12(sp)
    MARK start

    # Immediates and register-register arithmetic.
    li s0, 5
    addi s1, s0, -7
    CHECK s1, -2, addi
    lui s1, 0xfffff
    CHECK s1, 0xfffff000, lui
1:  auipc s1, 0
    la s2, 1b
    CHECKR s1, s2, auipc
    li s0, 0x7fffffff
    li s2, 1
    add s1, s0, s2
    CHECK s1, 0x80000000, add_overflow
    sub s1, s2, s0
    CHECK s1, 0x80000002, sub
    li s0, 0xf0f0f0f0
    li s2, 0x0ff00ff0
    xor s1, s0, s2
    CHECK s1, 0xff00ff00, xor
    or s1, s0, s2
    CHECK s1, 0xfff0fff0, or
    and s1, s0, s2
    CHECK s1, 0x00f000f0, and
    xori s1, s0, -1
    CHECK s1, 0x0f0f0f0f, xori
    ori s1, s0, 0x0f
    CHECK s1, 0xf0f0f0ff, ori
    andi s1, s0, 0x7ff
    CHECK s1, 0x000000f0, andi
    andi s1, s0, -16
    CHECK s1, 0xf0f0f0f0, andi_neg
    MARK arith

    # Compares.
    li s0, -1
    li s2, 1
    slt s1, s0, s2
    CHECK s1, 1, slt
    sltu s1, s0, s2
    CHECK s1, 0, sltu
    slti s1, s0, 0
    CHECK s1, 1, slti
    sltiu s1, s2, -1
    CHECK s1, 1, sltiu_max
    sltiu s1, zero, 1
    CHECK s1, 1, seqz
    slt s1, s2, s2
    CHECK s1, 0, slt_eq
    MARK compare

    # Shifts.
    li s0, 0x80000001
    slli s1, s0, 1
    CHECK s1, 2, slli
    srli s1, s0, 31
    CHECK s1, 1, srli
    srai s1, s0, 4
    CHECK s1, 0xf8000000, srai
    li s2, 33
    sll s1, s0, s2
    CHECK s1, 2, sll_mod32
    srl s1, s0, s2
    CHECK s1, 0x40000000, srl_mod32
    sra s1, s0, s2
    CHECK s1, 0xc0000000, sra_mod32
    slli s1, s0, 0
    CHECKR s1, s0, slli_0
    MARK shifts

    # Loads and stores, sign and zero extension.
    la s3, rt_scratch
    li s0, 0x8badf00d
    sw s0, 0(s3)
    lw s1, 0(s3)
    CHECK s1, 0x8badf00d, sw_lw
    lb s1, 3(s3)
    CHECK s1, 0xffffff8b, lb_neg
    lbu s1, 3(s3)
    CHECK s1, 0x8b, lbu
    lb s1, 0(s3)
    CHECK s1, 0x0d, lb_pos
    lh s1, 2(s3)
    CHECK s1, 0xffff8bad, lh_neg
    lhu s1, 2(s3)
    CHECK s1, 0x8bad, lhu
    lh s1, 0(s3)
    CHECK s1, 0xfffff00d, lh_neg2
    li s0, 0x11223344
    sb s0, 1(s3)
    lw s1, 0(s3)
    CHECK s1, 0x8bad440d, sb
    sh s0, 2(s3)
    lw s1, 0(s3)
    CHECK s1, 0x3344440d, sh
    addi s4, s3, 8
    sw s0, -4(s4)
    lw s1, 4(s3)
    CHECK s1, 0x11223344, sw_negoff
    MARK memory

    # Writes to x0 are dropped; x0 reads zero.
    li s0, 7
    addi zero, s0, 1
    add s1, zero, zero
    CHECK s1, 0, x0_write
    lw zero, 0(s3)
    CHECK zero, 0, x0_load

    # Branches, taken and not taken.
    li s0, -3
    li s2, 4
    li s1, 0
    beq s0, s0, 1f
    ori s1, s1, 1
1:  bne s0, s0, 1f
    ori s1, s1, 2
1:  blt s0, s2, 1f
    ori s1, s1, 4
1:  bge s0, s2, 1f
    ori s1, s1, 8
1:  bltu s0, s2, 1f
    ori s1, s1, 16
1:  bgeu s0, s2, 1f
    ori s1, s1, 32
1:  bge s2, s2, 1f
    ori s1, s1, 64
1:  beq s0, s2, 1f
    ori s1, s1, 128
1:  CHECK s1, 0x9a, branches
    # Backward loop: sum 1..100.
    li s0, 100
    li s1, 0
1:  add s1, s1, s0
    addi s0, s0, -1
    bnez s0, 1b
    CHECK s1, 5050, loop_sum
    MARK branches

    # Jumps and links.
    jal s1, 1f
2:  j 3f
1:  la s2, 2b
    CHECKR s1, s2, jal_link
    la s0, 4f
    jalr s1, 0(s0)
5:  j 6f
4:  la s2, 5b
    CHECKR s1, s2, jalr_link
    jr s1
6:  la s0, 7f
    addi s0, s0, 1
    jalr s1, -1(s0)
    j 3f
7:  # jalr target with bit 0 set by the sum is cleared.
    la s0, 7f
    addi s0, s0, 3
    jalr zero, -2(s0)
7:  li s1, 1
    CHECK s1, 1, jalr_lsb
    # rd == rs1.
    la s0, 8f
    jalr s0, 0(s0)
9:  j 3f
8:  la s2, 9b
    CHECKR s0, s2, jalr_rd_eq_rs1
3:  fence
    fence.i
    MARK jumps

    lw ra, 12(sp)
    addi sp, sp, 16
    ret
.option pop
