# Synchronous traps: ecall, ebreak, illegal instructions, access faults, mstatus stacking,
# mret, and the instruction counts around them.
.section .text.test, "ax", @progbits
.equ UNMAPPED, 0x00080000

.globl test_main
test_main:
    addi sp, sp, -16
    sw ra, 12(sp)
    la t0, trap_record
    csrw mtvec, t0
    MARK start

    # ecall: cause 11, mepc at the ecall, mtval 0; MIE stacked into MPIE.
    li t0, 8
    csrs mstatus, t0
1:  ecall
    la s0, 1b
    lw s1, trap_cause
    CHECK s1, 11, ecall_cause
    lw s1, trap_epc
    CHECKR s1, s0, ecall_epc
    lw s1, trap_tval
    CHECK s1, 0, ecall_tval
    lw s1, trap_status
    li t0, 0x1888
    and s1, s1, t0
    CHECK s1, 0x1880, ecall_mstatus_in_trap
    csrr s1, mstatus
    andi s1, s1, 0x88
    CHECK s1, 0x88, mret_restores_mie
    li t0, 8
    csrc mstatus, t0
    MARK ecall

    # ebreak, 32 and 16 bits.
1:  ebreak
    la s0, 1b
    lw s1, trap_cause
    CHECK s1, 3, ebreak_cause
    lw s1, trap_epc
    CHECKR s1, s0, ebreak_epc
1:  c.ebreak
    la s0, 1b
    lw s1, trap_epc
    CHECKR s1, s0, c_ebreak_epc
    MARK ebreak

    # Illegal instructions: mtval holds the instruction bits.
1:  .word 0xffffffff
    la s0, 1b
    lw s1, trap_cause
    CHECK s1, 2, illegal_cause
    lw s1, trap_epc
    CHECKR s1, s0, illegal_epc
    lw s1, trap_tval
    CHECK s1, 0xffffffff, illegal_tval
    MARK illegal_word
1:  .2byte 0
    lw s1, trap_tval
    CHECK s1, 0, illegal_c_zero_tval
    lw s1, trap_epc
    la s0, 1b
    CHECKR s1, s0, illegal_c_zero_epc
    MARK illegal_c_zero
    .balign 4
1:  csrr s1, 0x7c0
    lw s1, trap_cause
    CHECK s1, 2, csr_missing_cause
    lw s1, trap_tval
    la s0, 1b
    lw s0, 0(s0)
    CHECKR s1, s0, csr_missing_tval
    MARK csr_missing
    .balign 4
1:  csrw cycle, s1
    lw s1, trap_cause
    CHECK s1, 2, csr_readonly_write
    lw s1, trap_tval
    la s0, 1b
    lw s0, 0(s0)
    CHECKR s1, s0, csr_readonly_tval
    MARK csr_readonly
    sw zero, trap_count, t0
    csrrs s1, cycle, zero
    csrrsi s1, instret, 0
    lw s1, trap_count
    CHECK s1, 0, csr_readonly_read_ok
1:  .word 0x30500073
    lw s1, trap_cause
    CHECK s1, 2, bad_system_cause
    MARK illegal

    # Access faults: mtval holds the address; the destination is unchanged.
    li s0, UNMAPPED
    li s1, 123
1:  lw s1, 4(s0)
    CHECK s1, 123, load_fault_rd_kept
    lw s1, trap_cause
    CHECK s1, 5, load_fault_cause
    lw s1, trap_tval
    CHECK s1, UNMAPPED + 4, load_fault_tval
    MARK load_fault
    lw s1, trap_epc
    la s2, 1b
    CHECKR s1, s2, load_fault_epc
1:  sh s1, 2(s0)
    lw s1, trap_cause
    CHECK s1, 7, store_fault_cause
    lw s1, trap_tval
    CHECK s1, UNMAPPED + 2, store_fault_tval
    MARK store_fault
    # Instruction fetch from unmapped memory: the handler returns to ra.
    la ra, 1f
    jr s0
1:  lw s1, trap_cause
    CHECK s1, 1, fetch_fault_cause
    lw s1, trap_epc
    CHECK s1, UNMAPPED, fetch_fault_epc
    lw s1, trap_tval
    CHECK s1, UNMAPPED, fetch_fault_tval
    MARK faults

    # Vectored mtvec: exceptions still go to the base.
    la t0, trap_record
    ori t0, t0, 1
    csrw mtvec, t0
    sw zero, trap_count, t0
    ecall
    lw s1, trap_count
    CHECK s1, 1, vectored_exception
    csrr s1, mtvec
    andi s1, s1, 3
    CHECK s1, 1, mtvec_mode
    # Reserved mode 2: the write is ignored.
    la t0, trap_record
    ori t0, t0, 2
    csrw mtvec, t0
    csrr s1, mtvec
    andi s1, s1, 3
    CHECK s1, 1, mtvec_reserved_mode
    la t0, trap_record
    csrw mtvec, t0
    MARK vectored

    # The counts around a single ecall and its handler.
    MARK before_ecall
    ecall
    MARK after_ecall
    # Straight-line instructions only: the delta counts them plus the mark's own.
    nop
    nop
    nop
    MARK three_nops

    lw ra, 12(sp)
    addi sp, sp, 16
    ret

# Records the trap and returns past the faulting instruction (to ra for fetch faults).
.balign 4
trap_record:
    la t0, trap_cause
    csrr t1, mcause
    sw t1, 0(t0)
    csrr t1, mepc
    sw t1, 4(t0)
    csrr t1, mtval
    sw t1, 8(t0)
    csrr t1, mstatus
    sw t1, 12(t0)
    lw t2, 16(t0)
    addi t2, t2, 1
    sw t2, 16(t0)
    csrr t1, mcause
    li t2, 1
    bne t1, t2, 1f
    csrw mepc, ra
    mret
1:  csrr t1, mepc
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
trap_epc: .word 0
trap_tval: .word 0
trap_status: .word 0
trap_count: .word 0
