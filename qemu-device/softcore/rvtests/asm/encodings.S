# Not executed: a table of every instruction form, assembled by LLVM, that the decoder tests
# compare against (tests/decode_table.rs). It starts after the marker word 0xfeedc0de... and the
# 16-bit part after 0xc0dec0de; it ends at 0xdeadc0de.
.section .text.test, "ax", @progbits
.globl test_main
test_main:
    # Referenced so that the linker keeps the table.
    la a0, enc_table
    ret

.section .rodata.encodings, "a", @progbits
.balign 4
enc_table:
.word 0xfeedc0de
.option push
.option norvc
    lui a0, 0x12345
    auipc t1, 0xfffff
    jal ra, .+2048
    jal zero, .-4096
    jalr a1, -1(a2)
    beq a0, a1, .+4094
    bne s0, s1, .-4096
    blt t0, t1, .+8
    bge t2, t3, .-8
    bltu a4, a5, .+16
    bgeu a6, a7, .-16
    lb a0, -2048(a1)
    lh s2, 2047(s3)
    lw t4, 4(sp)
    lbu zero, 0(a0)
    lhu ra, -1(gp)
    sb a0, -2048(a1)
    sh s2, 2047(s3)
    sw t4, -4(sp)
    addi a0, a0, -1
    slti a1, a2, 5
    sltiu a3, a4, -1
    xori a5, a6, 0x555
    ori a7, s2, -0x556
    andi s3, s4, 0x7ff
    slli s5, s6, 31
    srli s7, s8, 1
    srai s9, s10, 17
    add s11, t3, t4
    sub t5, t6, a0
    sll a0, a1, a2
    slt a3, a4, a5
    sltu a6, a7, s2
    xor s3, s4, s5
    srl s6, s7, s8
    sra s9, s10, s11
    or t3, t4, t5
    and t6, a0, a1
    mul a0, a1, a2
    mulh a3, a4, a5
    mulhsu a6, a7, s2
    mulhu s3, s4, s5
    div s6, s7, s8
    divu s9, s10, s11
    rem t3, t4, t5
    remu t6, a0, a1
    lr.w a0, (a1)
    sc.w a2, a3, (a4)
    amoswap.w a5, a6, (a7)
    amoadd.w zero, s2, (s3)
    amoxor.w s4, s5, (s6)
    amoand.w.aq s7, s8, (s9)
    amoor.w.rl s10, s11, (t3)
    amomin.w.aqrl t4, t5, (t6)
    amomax.w a0, a1, (a2)
    amominu.w a3, a4, (a5)
    amomaxu.w a6, a7, (s2)
    fence
    fence.i
    fence rw, w
    ecall
    ebreak
    mret
    wfi
    csrrw a0, mscratch, a1
    csrrs a2, mstatus, a3
    csrrc a4, mie, a5
    csrrwi a6, mtvec, 31
    csrrsi a7, mepc, 1
    csrrci zero, cycle, 0
.option pop
.word 0xc0dec0de
.option push
.option rvc
    c.addi4spn a0, sp, 1020
    c.lw a1, 124(a2)
    c.sw a3, 0(a4)
    c.nop
    c.addi s0, -32
    c.jal .+2046
    c.li a5, 31
    c.addi16sp sp, -512
    c.lui t0, 0xfffe0
    c.srli s1, 31
    c.srai a0, 1
    c.andi a1, -1
    c.sub a2, a3
    c.xor a4, a5
    c.or s0, s1
    c.and a0, a1
    c.j .-2048
    c.beqz a2, .+254
    c.bnez a3, .-256
    c.slli t1, 31
    c.lwsp ra, 252(sp)
    c.jr t2
    c.mv t3, t4
    c.ebreak
    c.jalr t5
    c.add t6, s2
    c.swsp s3, 4(sp)
.option pop
.balign 4
.word 0xdeadc0de
