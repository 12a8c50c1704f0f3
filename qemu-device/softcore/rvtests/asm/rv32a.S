# A extension: LR/SC reservations, every AMO, AMOs with rd = x0.
.section .text.test, "ax", @progbits
.globl test_main
test_main:
    addi sp, sp, -16
    sw ra, 12(sp)
    MARK start
    la s3, rt_scratch
    li s0, 100
    sw s0, 0(s3)
    sw s0, 4(s3)

    # LR/SC success.
    lr.w s1, (s3)
    CHECK s1, 100, lr
    li s0, 101
    sc.w s1, s0, (s3)
    CHECK s1, 0, sc_ok
    lw s1, 0(s3)
    CHECK s1, 101, sc_stored
    # SC without a reservation fails and stores nothing.
    li s0, 102
    sc.w s1, s0, (s3)
    CHECK s1, 1, sc_no_resv
    lw s1, 0(s3)
    CHECK s1, 101, sc_fail_nostore
    # SC to another address than the reservation fails.
    lr.w s1, (s3)
    addi s4, s3, 4
    sc.w s1, s0, (s4)
    CHECK s1, 1, sc_other_addr
    lw s1, 4(s3)
    CHECK s1, 100, sc_other_nostore
    # The failed SC consumed the reservation.
    sc.w s1, s0, (s3)
    CHECK s1, 1, sc_consumed
    # An LR/SC increment loop.
    li s5, 10
1:  lr.w.aq s1, (s3)
    addi s1, s1, 1
    sc.w.rl s2, s1, (s3)
    bnez s2, 1b
    addi s5, s5, -1
    bnez s5, 1b
    lw s1, 0(s3)
    CHECK s1, 111, lrsc_loop
    MARK lrsc

    # AMOs: old value in rd, new value in memory.
    li s0, 5
    sw s0, 0(s3)
    li s2, -3
    amoswap.w s1, s2, (s3)
    CHECK s1, 5, amoswap_old
    lw s1, 0(s3)
    CHECK s1, -3, amoswap_new
    li s2, 10
    amoadd.w s1, s2, (s3)
    CHECK s1, -3, amoadd_old
    lw s1, 0(s3)
    CHECK s1, 7, amoadd_new
    li s2, 0xff
    amoxor.w s1, s2, (s3)
    lw s1, 0(s3)
    CHECK s1, 0xf8, amoxor
    li s2, 0x0f
    amoor.w s1, s2, (s3)
    lw s1, 0(s3)
    CHECK s1, 0xff, amoor
    li s2, 0x3c
    amoand.w s1, s2, (s3)
    CHECK s1, 0xff, amoand_old
    lw s1, 0(s3)
    CHECK s1, 0x3c, amoand
    li s2, -1
    amomin.w s1, s2, (s3)
    lw s1, 0(s3)
    CHECK s1, -1, amomin
    li s2, 7
    amomax.w s1, s2, (s3)
    lw s1, 0(s3)
    CHECK s1, 7, amomax
    li s2, -1
    amominu.w s1, s2, (s3)
    lw s1, 0(s3)
    CHECK s1, 7, amominu
    amomaxu.w s1, s2, (s3)
    CHECK s1, 7, amomaxu_old
    lw s1, 0(s3)
    CHECK s1, -1, amomaxu
    MARK amo

    # rd = x0: memory still updated.
    li s0, 40
    sw s0, 0(s3)
    li s2, 2
    amoadd.w zero, s2, (s3)
    lw s1, 0(s3)
    CHECK s1, 42, amoadd_rd0
    amoswap.w zero, s2, (s3)
    lw s1, 0(s3)
    CHECK s1, 2, amoswap_rd0
    li s2, 8
    amoor.w zero, s2, (s3)
    lw s1, 0(s3)
    CHECK s1, 10, amoor_rd0
    # rd == rs2: old value wins.
    li s1, 5
    amoadd.w s1, s1, (s3)
    CHECK s1, 10, amo_rd_eq_rs2
    lw s1, 0(s3)
    CHECK s1, 15, amo_rd_eq_rs2_mem
    MARK amo_rd0

    lw ra, 12(sp)
    addi sp, sp, 16
    ret
