#!/usr/bin/env python3
"""Writes the seed scripts of the vfio_user_server fuzz target into
fuzz/seeds/vfio_user_server/ (the script format is documented at the top of
fuzz/fuzz_targets/vfio_user_server.rs). Run from anywhere; rerun after
changing the format."""
import os
import struct

ARENA = 0x4000_0000
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vfio_user_server")

# Operation numbers (low 4 bits of the opcode byte); bit 7 = no-reply.
VERSION, DMA_MAP, DMA_UNMAP, READ, WRITE, GET_INFO, REGION_INFO, IRQ_INFO = range(8)
SET_IRQS, RESET, RAW, POKE, CARD_DMA, WAIT, UNSUPPORTED, REG_WRITE = range(8, 16)
# REG_WRITE register indices.
CC, AQA, ASQ, ASQ_HI, ACQ, ACQ_HI, SCRATCH, SQ0_DB, CQ0_DB, INTX = range(10)
# READ/WRITE offset selectors (indices into the target's tables).
BAR0_CSTS, BAR0_VS, BAR0_SCRATCH = 3, 1, 10
CFG_VENDOR, CFG_BAR0, CFG_CAP_PTR, CFG_MSIX, CFG_DEVCTL = 0, 3, 5, 7, 10
# Count selectors.
C4, C8, C1, C2 = 0, 1, 2, 3


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v)


def reg(r, v):
    return bytes([REG_WRITE, r]) + u32(v)


def dma_map(slot, pages, offset_pages, iova_pages, size_pages, kind=1, flags=3):
    return bytes([DMA_MAP, kind, flags, offset_pages, iova_pages, size_pages, slot, pages, 0])


def identify_sqe(cid, data_iova):
    sqe = bytearray(64)
    sqe[0] = 0x01  # IDENTIFY
    sqe[2:4] = u16(cid)
    sqe[8:16] = struct.pack("<Q", data_iova)
    sqe[16:20] = u32(128)
    return bytes(sqe)


def enable():
    return b"".join(
        [
            reg(AQA, 7 | 7 << 16),
            reg(ASQ, ARENA & 0xFFFF_FFFF),
            reg(ASQ_HI, ARENA >> 32),
            reg(ACQ, (ARENA + 0x1000) & 0xFFFF_FFFF),
            reg(ACQ_HI, 0),
            reg(CC, 1),
            bytes([WAIT, 3]),
            bytes([READ, 0, BAR0_CSTS, C4]),
        ]
    )


def identify(cid, slot_offset):
    poke = bytes([POKE, 0]) + u16(slot_offset) + bytes([64]) + identify_sqe(cid, ARENA + 0x2000)
    return poke + reg(SQ0_DB, cid) + bytes([WAIT, 3]) + reg(CQ0_DB, cid)


seeds = {}

# Version, info, one sealed 64 KiB window, MSI-X 0, enable, IDENTIFY twice.
seeds["identify.bin"] = b"".join(
    [
        bytes([VERSION, 0]),
        bytes([GET_INFO, 16]),
        bytes([REGION_INFO, 0, REGION_INFO, 2, REGION_INFO, 7]),
        bytes([IRQ_INFO, 2]),
        dma_map(0, 16, 0, 0, 16),
        bytes([SET_IRQS, 0, 2, 0, 1, 1]),
        enable(),
        identify(1, 0),
        bytes([READ, 2, 0, C8]),
        identify(2, 64),
        bytes([CARD_DMA, 16]) + u16(128) + bytes([0]),
        bytes([DMA_UNMAP, 0, 0, 16]),
    ]
)

# QEMU-like bring-up: every region and IRQ index, config space, BAR sizing,
# guest RAM mapped page by page in reverse file order, INTx with unmask,
# reset, unmap all.
qemu = [bytes([VERSION, 1]), bytes([GET_INFO, 16])]
qemu += [bytes([REGION_INFO, i]) for i in range(9)]
qemu += [bytes([IRQ_INFO, i]) for i in range(5)]
qemu += [bytes([READ, 7, CFG_VENDOR, 6]), bytes([READ, 7, CFG_CAP_PTR, C1])]
qemu += [bytes([READ, 7, CFG_MSIX, 5])]
qemu += [bytes([WRITE, 7, CFG_BAR0, C4]) + b"\xff" * 4, bytes([READ, 7, CFG_BAR0, C4])]
qemu += [dma_map(1, 8, 7 - i, i, 1) for i in range(8)]
qemu += [bytes([SET_IRQS, 0, 0, 0, 1, 1]), bytes([SET_IRQS, 3, 0, 0, 1, 0])]
qemu += [bytes([SET_IRQS, 0, 2, 0, 1, 1]), bytes([READ, 0, BAR0_VS, C4])]
qemu += [bytes([RESET]), bytes([READ, 0, BAR0_SCRATCH, C4])]
qemu += [bytes([DMA_UNMAP, 4, 0, 0])]
seeds["qemu_bringup.bin"] = b"".join(qemu)

# Things to refuse: an unsealed memfd, an eventfd as memory, two fds, a map
# past the end of its file, reads outside regions, a short DEVICE_GET_INFO,
# no-reply VERSION, unsupported commands, a header shorter than itself.
bad = [
    bytes([VERSION, 0]),
    dma_map(2, 4, 0, 0, 4, kind=2),
    bytes([DMA_MAP, 5, 3, 0, 0, 1]),
    dma_map(0, 4, 0, 8, 1, kind=9),
    dma_map(3, 2, 1, 16, 4),
    dma_map(1, 4, 0, 24, 4, kind=4),
    dma_map(4, 1, 0, 32, 1, kind=8),
    bytes([READ, 0, 21, C4]),
    bytes([READ, 9, 0, C4]),
    bytes([READ, 7, 13, C8]),
    bytes([GET_INFO, 8]),
    bytes([VERSION | 0x80, 0]),
    bytes([UNSUPPORTED, 1, 8]) + b"\0" * 8,
    bytes([RAW]) + u16(16) + bytes([0]) + u16(1) + u16(1) + u32(8) + u32(0) + u32(0),
    bytes([VERSION, 0]),
]
seeds["refusals.bin"] = b"".join(bad)

# A function-level reset through PCIe DevCtl, then a device reset and a read.
seeds["flr.bin"] = b"".join(
    [
        bytes([VERSION, 2]),
        reg(SCRATCH, 0xDEADBEEF),
        bytes([WRITE, 7, CFG_DEVCTL, C2]) + u16(0x8000),
        bytes([READ, 0, BAR0_SCRATCH, C4]),
        bytes([RESET]),
    ]
)

os.makedirs(HERE, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)
    print(f"{name}: {len(data)} bytes")
