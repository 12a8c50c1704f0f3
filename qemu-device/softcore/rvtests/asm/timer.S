# Interrupts through the CLINT (QEMU virt layout): timer, software, vectored mtvec, wfi, priority.
# Output only (no counts after the first interrupt: where exactly an asynchronous interrupt lands
# is not part of the contract).
.section .text.test, "ax", @progbits

# Sets mtimecmp to mtime + \ticks (hi first so no spurious interrupt). Clobbers t0-t3.
.macro TIMER_IN ticks
    li t0, MTIME
    lw t1, 0(t0)
    lw t2, 4(t0)
    li t3, \ticks
    add t3, t1, t3
    sltu t1, t3, t1
    add t2, t2, t1
    li t0, MTIMECMP
    li t1, -1
    sw t1, 4(t0)
    sw t3, 0(t0)
    sw t2, 4(t0)
.endm

.macro TIMER_OFF
    li t0, MTIMECMP
    li t1, -1
    sw t1, 4(t0)
    sw t1, 0(t0)
.endm

.globl test_main
test_main:
    addi sp, sp, -16
    sw ra, 12(sp)
    TIMER_OFF
    la t0, irq_handler
    csrw mtvec, t0
    MARK start

    # 1. Timer interrupt while spinning.
    sw zero, irq_count, t0
    TIMER_IN 20
    li t0, 0x80
    csrw mie, t0
    csrsi mstatus, 8
    li s0, 100000
1:  lw s1, irq_count
    bnez s1, 2f
    addi s0, s0, -1
    bnez s0, 1b
2:  csrci mstatus, 8
    lw s1, irq_count
    CHECK s1, 1, timer_irq_taken
    lw s1, irq_causes
    CHECK s1, 0x80000007, timer_irq_cause
    csrr s1, mip
    andi s1, s1, 0x80
    CHECK s1, 0, timer_irq_cleared
    snez s1, s0
    CHECK s1, 1, timer_irq_before_timeout

    # 2. wfi with interrupts globally off: wakes up, no trap, MTIP pending.
    sw zero, irq_count, t0
    TIMER_IN 500
    li t0, 0x80
    csrw mie, t0
    csrr s2, time
    wfi
    csrr s3, time
    csrr s1, mip
    andi s1, s1, 0x80
    CHECK s1, 0x80, wfi_wakes_on_mtip
    sub s3, s3, s2
    sltiu s3, s3, 499
    CHECK s3, 0, wfi_slept_until_deadline
    lw s1, irq_count
    CHECK s1, 0, wfi_no_trap_when_mie_off
    TIMER_OFF

    # 3. wfi with interrupts on: the trap returns to the instruction after wfi.
    sw zero, irq_count, t0
    TIMER_IN 300
    csrsi mstatus, 8
    wfi
3:  csrci mstatus, 8
    lw s1, irq_count
    CHECK s1, 1, wfi_irq_taken
    lw s1, irq_epc
    la s2, 3b
    CHECKR s1, s2, wfi_irq_epc
    csrr s1, mstatus
    andi s1, s1, 0x80
    CHECK s1, 0x80, mpie_after_mret

    # 4. Vectored mtvec: the timer goes to base + 4 * 7.
    sw zero, irq_count, t0
    sw zero, vec_hits, t0
    la t0, vec_table
    ori t0, t0, 1
    csrw mtvec, t0
    TIMER_IN 10
    csrsi mstatus, 8
    li s0, 100000
1:  lw s1, irq_count
    bnez s1, 2f
    addi s0, s0, -1
    bnez s0, 1b
2:  csrci mstatus, 8
    lw s1, vec_hits
    CHECK s1, 0x80, vectored_timer

    # 5. Software interrupt (msip), vectored.
    sw zero, irq_count, t0
    sw zero, vec_hits, t0
    li t0, 0x8
    csrw mie, t0
    li t0, CLINT
    li t1, 1
    sw t1, 0(t0)
    csrsi mstatus, 8
    nop
    nop
    csrci mstatus, 8
    lw s1, vec_hits
    CHECK s1, 0x8, vectored_software
    lw s1, irq_causes
    CHECK s1, 0x80000003, software_cause

    # 6. Priority: software before timer when both are pending.
    la t0, irq_handler
    csrw mtvec, t0
    sw zero, irq_count, t0
    li t0, MTIMECMP
    sw zero, 4(t0)
    sw zero, 0(t0)
    li t0, CLINT
    li t1, 1
    sw t1, 0(t0)
    li t0, 0x88
    csrw mie, t0
    csrsi mstatus, 8
    nop
    nop
    csrci mstatus, 8
    lw s1, irq_count
    CHECK s1, 2, both_taken
    la s2, irq_causes
    lw s1, 0(s2)
    CHECK s1, 0x80000003, msi_first
    lw s1, 4(s2)
    CHECK s1, 0x80000007, mti_second
    csrw mie, zero

    lw ra, 12(sp)
    addi sp, sp, 16
    ret

# Records the cause (up to 8) and epc, silences the source, returns.
.balign 4
irq_handler:
    la t0, irq_count
    lw t1, 0(t0)
    andi t2, t1, 7
    slli t2, t2, 2
    la t0, irq_causes
    add t0, t0, t2
    csrr t2, mcause
    sw t2, 0(t0)
    la t0, irq_count
    addi t1, t1, 1
    sw t1, 0(t0)
    csrr t1, mepc
    sw t1, irq_epc, t0
    li t0, 0x80000007
    bne t2, t0, 1f
    li t0, MTIMECMP
    li t1, -1
    sw t1, 4(t0)
    sw t1, 0(t0)
    mret
1:  li t0, CLINT
    sw zero, 0(t0)
    mret

.balign 64
.option push
.option norvc
vec_table:
    j vec_bad
    j vec_bad
    j vec_bad
    j vec_soft
    j vec_bad
    j vec_bad
    j vec_bad
    j vec_timer
    j vec_bad
    j vec_bad
    j vec_bad
    j vec_bad
.option pop
vec_soft:
    li t0, 0x8
    sw t0, vec_hits, t1
    j irq_handler
vec_timer:
    li t0, 0x80
    sw t0, vec_hits, t1
    j irq_handler
vec_bad:
    li t0, 0xbad
    sw t0, vec_hits, t1
    j irq_handler

.section .data.test, "aw", @progbits
.balign 4
irq_count: .word 0
irq_epc: .word 0
vec_hits: .word 0
irq_causes: .space 32
