# Runtime of the soft core's test programs (included in front of each test body).
#
# test_main (defined by the body) returns; rt_finish prints ALL PASS or N FAILED and powers
# off through the SiFive test finisher (0x5555 pass, (n << 16) | 0x3333 fail).
#
# Calling convention of the helpers: arguments in a0-a2; they clobber a0-a2 and t0-t6 and
# preserve s0-s11 and sp.

.equ UART, 0x10000000
.equ FINISHER, 0x00100000
.equ CLINT, 0x02000000
.equ MTIMECMP, 0x02004000
.equ MTIME, 0x0200BFF8

# CHECK reg, value, name: compare reg with value, print PASS/FAIL name.
.macro CHECK reg, val, name
    mv a0, \reg
    li a1, \val
    .pushsection .rodata.rt_names, "a", @progbits
777:
    .asciz "\name"
    .popsection
    la a2, 777b
    call rt_check
.endm

# CHECKR reg1, reg2, name: compare two registers.
.macro CHECKR reg, reg2, name
    mv a0, \reg
    mv a1, \reg2
    .pushsection .rodata.rt_names, "a", @progbits
777:
    .asciz "\name"
    .popsection
    la a2, 777b
    call rt_check
.endm

# MARK name: log point, prints "@name +N" with N the instructions retired since the last one.
.macro MARK name
    .pushsection .rodata.rt_names, "a", @progbits
777:
    .asciz "\name"
    .popsection
    la a0, 777b
    call rt_mark
.endm

# SAY text: print a line.
.macro SAY text
    .pushsection .rodata.rt_names, "a", @progbits
777:
    .asciz "\text\n"
    .popsection
    la a0, 777b
    call rt_puts
.endm

.section .text.init, "ax", @progbits
.globl _start
_start:
    .option push
    .option norelax
    la sp, _stack_top
    .option pop
    la t0, rt_default_trap
    csrw mtvec, t0
    csrr t0, minstret
    la t1, rt_last_mark
    sw t0, 0(t1)
    call test_main
    j rt_finish

.section .text.rt, "ax", @progbits
.balign 4
# putc(a0): clobbers t0, t1.
rt_putc:
    li t0, UART
1:  lbu t1, 5(t0)
    andi t1, t1, 0x20
    beqz t1, 1b
    sb a0, 0(t0)
    ret

# puts(a0 = NUL-terminated string): clobbers a0, t0-t3.
.globl rt_puts
rt_puts:
    mv t2, a0
    mv t3, ra
1:  lbu a0, 0(t2)
    beqz a0, 2f
    call rt_putc
    addi t2, t2, 1
    j 1b
2:  jr t3

# puthex(a0): prints 0x and 8 hex digits. Clobbers a0, t0-t5.
.globl rt_puthex
rt_puthex:
    mv t4, a0
    mv t5, ra
    li a0, 48
    call rt_putc
    li a0, 120
    call rt_putc
    li t2, 28
1:  srl a0, t4, t2
    andi a0, a0, 15
    li t0, 10
    blt a0, t0, 2f
    addi a0, a0, 87
    j 3f
2:  addi a0, a0, 48
3:  call rt_putc
    addi t2, t2, -4
    bgez t2, 1b
    jr t5

# putdec(a0): unsigned decimal. Clobbers a0, t0-t5.
.globl rt_putdec
rt_putdec:
    addi sp, sp, -16
    sw ra, 12(sp)
    mv t4, a0
    addi t5, sp, 11
    sb zero, 0(t5)
    li t3, 10
1:  remu t0, t4, t3
    divu t4, t4, t3
    addi t0, t0, 48
    addi t5, t5, -1
    sb t0, 0(t5)
    bnez t4, 1b
    mv a0, t5
    call rt_puts
    lw ra, 12(sp)
    addi sp, sp, 16
    ret

# check(a0 = got, a1 = want, a2 = name)
.globl rt_check
rt_check:
    addi sp, sp, -16
    sw ra, 12(sp)
    sw s0, 8(sp)
    sw s1, 4(sp)
    sw s2, 0(sp)
    mv s0, a0
    mv s1, a1
    mv s2, a2
    bne s0, s1, 1f
    la a0, rt_s_pass
    call rt_puts
    mv a0, s2
    call rt_puts
    la a0, rt_s_nl
    call rt_puts
    j 2f
1:  la t0, rt_fails
    lw t1, 0(t0)
    addi t1, t1, 1
    sw t1, 0(t0)
    la a0, rt_s_fail
    call rt_puts
    mv a0, s2
    call rt_puts
    la a0, rt_s_got
    call rt_puts
    mv a0, s0
    call rt_puthex
    la a0, rt_s_want
    call rt_puts
    mv a0, s1
    call rt_puthex
    la a0, rt_s_nl
    call rt_puts
2:  lw ra, 12(sp)
    lw s0, 8(sp)
    lw s1, 4(sp)
    lw s2, 0(sp)
    addi sp, sp, 16
    ret

# mark(a0 = name): "@name +N\n", N = minstret delta since the previous mark.
.globl rt_mark
rt_mark:
    csrr t0, minstret
    la t1, rt_last_mark
    lw t2, 0(t1)
    sub t2, t0, t2
    addi sp, sp, -16
    sw ra, 12(sp)
    sw t2, 8(sp)
    sw a0, 4(sp)
    li a0, 64
    call rt_putc
    lw a0, 4(sp)
    call rt_puts
    li a0, 32
    call rt_putc
    li a0, 43
    call rt_putc
    lw a0, 8(sp)
    call rt_putdec
    li a0, 10
    call rt_putc
    lw ra, 12(sp)
    addi sp, sp, 16
    # The next delta starts here, so printing costs are not part of it.
    csrr t0, minstret
    la t1, rt_last_mark
    sw t0, 0(t1)
    ret

.globl rt_finish
rt_finish:
    la t0, rt_fails
    lw s0, 0(t0)
    bnez s0, 1f
    la a0, rt_s_allpass
    call rt_puts
    li t0, FINISHER
    li t1, 0x5555
    sw t1, 0(t0)
2:  j 2b
1:  mv a0, s0
    call rt_putdec
    la a0, rt_s_failed
    call rt_puts
    slli t1, s0, 16
    li t2, 0x3333
    or t1, t1, t2
    li t0, FINISHER
    sw t1, 0(t0)
3:  j 3b

# An unexpected trap: print it and fail with code 0xff.
.balign 4
rt_default_trap:
    la a0, rt_s_trap
    call rt_puts
    csrr a0, mcause
    call rt_puthex
    li a0, 32
    call rt_putc
    csrr a0, mepc
    call rt_puthex
    li a0, 32
    call rt_putc
    csrr a0, mtval
    call rt_puthex
    li a0, 10
    call rt_putc
    li t0, FINISHER
    li t1, 0x00ff3333
    sw t1, 0(t0)
1:  j 1b

.section .rodata.rt, "a", @progbits
rt_s_pass: .asciz "PASS "
rt_s_fail: .asciz "FAIL "
rt_s_got: .asciz " got "
rt_s_want: .asciz " want "
rt_s_nl: .asciz "\n"
rt_s_allpass: .asciz "ALL PASS\n"
rt_s_failed: .asciz " FAILED\n"
rt_s_trap: .asciz "UNEXPECTED TRAP mcause mepc mtval: "

.section .data.rt, "aw", @progbits
.balign 4
.globl rt_fails
rt_fails: .word 0
rt_last_mark: .word 0
.globl rt_scratch
rt_scratch: .space 256

.text
