# Zicsr: the six CSR instructions, the machine CSRs and the counters.
.section .text.test, "ax", @progbits
.globl test_main
test_main:
    addi sp, sp, -16
    sw ra, 12(sp)
    MARK start

    li s0, 0x12345678
    csrw mscratch, s0
    li s2, 0xff
    csrrw s1, mscratch, s2
    CHECK s1, 0x12345678, csrrw_old
    li s2, 0xf00
    csrrs s1, mscratch, s2
    CHECK s1, 0xff, csrrs_old
    csrr s1, mscratch
    CHECK s1, 0xfff, csrrs_new
    li s2, 0x0f0
    csrrc s1, mscratch, s2
    csrr s1, mscratch
    CHECK s1, 0xf0f, csrrc_new
    csrrwi s1, mscratch, 21
    CHECK s1, 0xf0f, csrrwi_old
    csrrsi s1, mscratch, 10
    csrr s1, mscratch
    CHECK s1, 31, csrrsi_new
    csrrci s1, mscratch, 5
    csrr s1, mscratch
    CHECK s1, 26, csrrci_new
    # rd == rs1.
    li s1, 7
    csrrw s1, mscratch, s1
    CHECK s1, 26, csrrw_rd_eq_rs1
    csrr s1, mscratch
    CHECK s1, 7, csrrw_rd_eq_rs1_new
    MARK csr_ops

    csrr s1, mhartid
    CHECK s1, 0, mhartid
    csrr s1, misa
    li t0, 0xc0001105
    and s1, s1, t0
    CHECK s1, 0x40001105, misa_rv32imac
    csrr s1, mvendorid
    csrr s1, mstatus
    andi s1, s1, 0x88
    CHECK s1, 0, mstatus_reset
    csrsi mstatus, 8
    csrr s1, mstatus
    andi s1, s1, 0x88
    CHECK s1, 8, mstatus_mie_set
    csrci mstatus, 8
    li t0, 0x888
    csrs mie, t0
    csrr s1, mie
    and s1, s1, t0
    CHECK s1, 0x888, mie_bits
    csrw mie, zero
    csrr s1, mie
    CHECK s1, 0, mie_clear
    csrr s1, mip
    li t0, 0x808
    and s1, s1, t0
    CHECK s1, 0, mip_idle
    MARK machine

    # Counters: back-to-back reads differ by one instruction.
    csrr s0, minstret
    csrr s1, minstret
    sub s1, s1, s0
    CHECK s1, 1, minstret_delta
    csrr s0, minstret
    csrr s1, instret
    sub s1, s1, s0
    CHECK s1, 1, instret_alias
    csrr s0, mcycle
    csrr s1, cycle
    sub s1, s1, s0
    CHECK s1, 1, cycle_alias
    csrr s1, minstreth
    CHECK s1, 0, minstreth
    csrr s1, mcycleh
    CHECK s1, 0, mcycleh
    csrr s1, instreth
    CHECK s1, 0, instreth
    csrr s1, cycleh
    CHECK s1, 0, cycleh
    # 300 loop iterations of 2 instructions: 600 (+3) instructions, time advances by ~6 ticks.
    rdtime s2
    csrr s0, minstret
    li s3, 300
1:  addi s3, s3, -1
    bnez s3, 1b
    csrr s1, minstret
    rdtime s3
    sub s1, s1, s0
    CHECK s1, 602, minstret_loop
    sub s3, s3, s2
    sltiu s3, s3, 8
    CHECK s3, 1, time_advances_slowly
    rdtime s2
    li t0, MTIME
    lw s3, 0(t0)
    sub s3, s3, s2
    sltiu s3, s3, 2
    CHECK s3, 1, time_is_mtime
    rdtimeh s1
    CHECK s1, 0, timeh
    MARK counters

    # Writing the counters: print what reads see afterwards.
    li s0, 1000
    csrw minstret, s0
    csrr s1, minstret
    sub s1, s1, s0
    SAY "minstret after write + 1000:"
    mv a0, s1
    call rt_putdec
    SAY ""
    csrw mcycle, s0
    csrr s1, mcycle
    sub s1, s1, s0
    SAY "mcycle after write + 1000:"
    mv a0, s1
    call rt_putdec
    SAY ""
    li s0, 5
    csrw minstreth, s0
    csrr s1, minstreth
    CHECK s1, 5, minstreth_write
    csrw minstreth, zero
    csrw mcycleh, zero

    lw ra, 12(sp)
    addi sp, sp, 16
    ret
