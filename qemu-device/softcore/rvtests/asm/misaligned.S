# Misaligned accesses trap on the card's core (QEMU performs ordinary ones, so this program is
# not part of the oracle), plus the encodings where QEMU and the spec leave room.
.section .text.test, "ax", @progbits
.globl test_main
test_main:
    addi sp, sp, -16
    sw ra, 12(sp)
    la t0, trap_record
    csrw mtvec, t0
    la s3, rt_scratch
    li s1, 77
    lw s1, 1(s3)
    CHECK s1, 77, lw_misaligned_rd_kept
    lw s1, trap_cause
    CHECK s1, 4, lw_misaligned_cause
    lw s1, trap_tval
    addi s2, s3, 1
    CHECKR s1, s2, lw_misaligned_tval
    lh s1, 3(s3)
    lw s1, trap_cause
    CHECK s1, 4, lh_misaligned
    lhu s1, 1(s3)
    lw s1, trap_cause
    CHECK s1, 4, lhu_misaligned
    li s0, 0x11111111
    sw s0, 0(s3)
    li s1, -1
    sw s1, 2(s3)
    lw s1, trap_cause
    CHECK s1, 6, sw_misaligned
    lw s1, 0(s3)
    CHECK s1, 0x11111111, sw_misaligned_no_write
    sh s1, 1(s3)
    lw s1, trap_cause
    CHECK s1, 6, sh_misaligned
    lb s1, 1(s3)
    CHECK s1, 0x11, lb_any_alignment
    sb s1, 3(s3)
    addi s2, s3, 2
    amoadd.w s1, s0, (s2)
    lw s1, trap_cause
    CHECK s1, 6, amo_misaligned
    lr.w s1, (s2)
    lw s1, trap_cause
    CHECK s1, 4, lr_misaligned
    sc.w s1, s0, (s2)
    lw s1, trap_cause
    CHECK s1, 6, sc_misaligned
    # AMO and LR on unmapped memory: store/AMO and load access faults.
    li s2, 0x00080000
    amoswap.w s1, s0, (s2)
    lw s1, trap_cause
    CHECK s1, 7, amo_access_fault
    lr.w s1, (s2)
    lw s1, trap_cause
    CHECK s1, 5, lr_access_fault
    # c.lwsp with rd = x0 and c.jr x0 are reserved.
    .2byte 0x4002
    lw s1, trap_cause
    CHECK s1, 2, c_lwsp_x0_illegal
    .2byte 0x8002
    lw s1, trap_tval
    CHECK s1, 0x8002, c_jr_x0_illegal
    lw ra, 12(sp)
    addi sp, sp, 16
    ret

.balign 4
trap_record:
    la t0, trap_cause
    csrr t1, mcause
    sw t1, 0(t0)
    csrr t1, mtval
    sw t1, 4(t0)
    csrr t1, mepc
    lhu t2, 0(t1)
    andi t2, t2, 3
    addi t1, t1, 2
    li t0, 3
    bne t2, t0, 2f
    addi t1, t1, 2
2:  csrw mepc, t1
    mret

.section .data.test, "aw", @progbits
.balign 4
trap_cause: .word 0
trap_tval: .word 0
