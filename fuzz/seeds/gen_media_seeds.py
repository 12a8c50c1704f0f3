#!/usr/bin/env python3
"""Writes small seed files for the golden_jpeg and golden_wav fuzz targets
into fuzz/seeds/golden_jpeg/ and fuzz/seeds/golden_wav/: every JPEG kind the
decoders take (baseline 4:2:0/4:2:2/4:4:4/4:1:1, grayscale, progressive,
optimized Huffman tables, restart intervals by blocks and by rows, RGB-coded,
CMYK, extreme quality, APP markers, odd and tiny sizes, both sides of the
targets' pixel cap) and every WAV layout the reader takes (8/16/24/32-bit
PCM, 32/64-bit float, WAVE_FORMAT_EXTENSIBLE, extra chunks with pad bytes,
streaming data lengths, rate and channel bounds), all a few KiB at most so
the fuzzers run fast on them (the fixtures are 20-500 KiB).

JPEGs need Pillow: ~/.cache/preba/venv/bin/python fuzz/seeds/gen_media_seeds.py
(the output is deterministic for a given Pillow/libjpeg-turbo)."""
import io
import math
import os
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
    print(f"{target}/{name}: {len(data)} bytes")


# --- JPEG -----------------------------------------------------------------


def picture(w, h, mode="RGB"):
    """A deterministic picture with gradients, edges and texture."""
    from PIL import Image

    im = Image.new("RGB", (w, h))
    px = im.load()
    for y in range(h):
        for x in range(w):
            r = (x * 255 // max(w - 1, 1)) ^ (y * 7 % 64)
            g = (y * 255 // max(h - 1, 1)) if (x // 4 + y // 4) % 2 else 40
            b = int(128 + 127 * math.sin((x + 2 * y) / 3.0))
            px[x, y] = (r & 255, g & 255, b & 255)
    return im.convert(mode) if mode != "RGB" else im


def jpeg(w, h, mode="RGB", **opts):
    buf = io.BytesIO()
    picture(w, h, mode).save(buf, "JPEG", **opts)
    return buf.getvalue()


def jpegs():
    try:
        import PIL  # noqa: F401
    except ImportError:
        print("no Pillow: JPEG seeds skipped")
        return
    s = {}
    for w, h in [(1, 1), (8, 8), (9, 9), (16, 16), (17, 13), (64, 1), (1, 64), (127, 9)]:
        s[f"baseline_420_{w}x{h}.jpg"] = jpeg(w, h, quality=75, subsampling=2)
    s["baseline_422_33x17.jpg"] = jpeg(33, 17, quality=80, subsampling=1)
    s["baseline_444_24x24.jpg"] = jpeg(24, 24, quality=90, subsampling=0)
    s["baseline_411_40x16.jpg"] = jpeg(40, 16, quality=75, subsampling="4:1:1")
    s["gray_15x15.jpg"] = jpeg(15, 15, "L", quality=75)
    s["gray_progressive_20x12.jpg"] = jpeg(20, 12, "L", progressive=True)
    s["progressive_420_32x24.jpg"] = jpeg(32, 24, progressive=True, subsampling=2)
    s["progressive_444_17x17.jpg"] = jpeg(17, 17, progressive=True, subsampling=0)
    s["optimized_420_30x20.jpg"] = jpeg(30, 20, optimize=True, subsampling=2)
    s["restart_blocks_420_48x32.jpg"] = jpeg(48, 32, subsampling=2, restart_marker_blocks=1)
    s["restart_rows_422_40x24.jpg"] = jpeg(40, 24, subsampling=1, restart_marker_rows=1)
    s["rgb_coded_16x16.jpg"] = jpeg(16, 16, subsampling=0, keep_rgb=True)
    s["cmyk_16x16.jpg"] = jpeg(16, 16, "CMYK")
    s["q100_16x16.jpg"] = jpeg(16, 16, quality=100)
    s["q1_16x16.jpg"] = jpeg(16, 16, quality=1)
    s["app_markers_16x8.jpg"] = jpeg(
        16, 8, icc_profile=b"\0" * 132, exif=b"Exif\0\0MM\0*\0\0\0\x08\0\0", comment=b"preba"
    )
    # Both sides of the targets' cap (128 x 128 pixels decoded).
    s["cap_128x128.jpg"] = jpeg(128, 128, quality=50, subsampling=2)
    s["over_cap_129x128.jpg"] = jpeg(129, 128, quality=50, subsampling=2)
    for name, data in s.items():
        write("golden_jpeg", name, data)


# --- WAV ------------------------------------------------------------------


def chunk(tag, body):
    pad = b"\0" if len(body) % 2 else b""
    return tag + struct.pack("<I", len(body)) + body + pad


def riff(chunks, riff_len=None):
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if riff_len is None else riff_len) + body


def fmt(tag, channels, rate, bits, ext=None):
    block = channels * bits // 8
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    if ext is not None:
        valid, mask, sub = ext
        guid = struct.pack("<H", sub) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        body += struct.pack("<HHI", 22, valid, mask) + guid
    return chunk(b"fmt ", body)


def tone(frames, channels, rate):
    for i in range(frames):
        for c in range(channels):
            yield 0.6 * math.sin(2 * math.pi * (440 + 110 * c) * i / rate)


def samples(kind, frames, channels, rate):
    out = bytearray()
    for v in tone(frames, channels, rate):
        if kind == "u8":
            out += struct.pack("<B", int(128 + 127 * v))
        elif kind == "s16":
            out += struct.pack("<h", int(32767 * v))
        elif kind == "s24":
            out += struct.pack("<i", int(8388607 * v))[:3]
        elif kind == "s32":
            out += struct.pack("<i", int(2147483647 * v))
        elif kind == "f32":
            out += struct.pack("<f", v)
        elif kind == "f64":
            out += struct.pack("<d", v)
    return bytes(out)


BITS = {"u8": 8, "s16": 16, "s24": 24, "s32": 32, "f32": 32, "f64": 64}


def wav(kind, frames, channels, rate, extensible=False, extra=(), data_len=None, fact=False):
    bits = BITS[kind]
    tag = 3 if kind.startswith("f") else 1
    if extensible:
        f = fmt(0xFFFE, channels, rate, bits, (bits, (1 << channels) - 1, tag))
    else:
        f = fmt(tag, channels, rate, bits)
    data = samples(kind, frames, channels, rate)
    chunks = [f, *extra]
    if fact:
        chunks.append(chunk(b"fact", struct.pack("<I", frames)))
    if data_len is None:
        chunks.append(chunk(b"data", data))
    else:
        chunks.append(b"data" + struct.pack("<I", data_len) + data)
    return riff(chunks)


def wavs():
    s = {}
    s["s16_mono_16k_400.wav"] = wav("s16", 400, 1, 16000)
    s["s16_stereo_8k_300.wav"] = wav("s16", 300, 2, 8000)
    s["u8_mono_11k_201.wav"] = wav("u8", 201, 1, 11025)  # odd data: pad byte
    s["s24_mono_22k_256.wav"] = wav("s24", 256, 1, 22050)
    s["s32_mono_44k_300.wav"] = wav("s32", 300, 1, 44100)
    s["f32_mono_48k_256.wav"] = wav("f32", 256, 1, 48000, fact=True)
    s["f64_mono_16k_100.wav"] = wav("f64", 100, 1, 16000, fact=True)
    s["ext_s16_6ch_16k_64.wav"] = wav("s16", 64, 6, 16000, extensible=True)
    s["ext_f32_stereo_16k_128.wav"] = wav("f32", 128, 2, 16000, extensible=True)
    s["ext_s24_mono_16k_100.wav"] = wav("s24", 100, 1, 16000, extensible=True)
    s["list_junk_chunks_s16.wav"] = wav(
        "s16",
        160,
        1,
        16000,
        extra=[chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 5) + b"preba\0"), chunk(b"junk", b"abc")],
    )
    s["streaming_len_ffffffff_s16.wav"] = wav("s16", 200, 1, 16000, data_len=0xFFFFFFFF)
    s["data_past_eof_s16.wav"] = wav("s16", 100, 1, 16000, data_len=4000)
    s["one_frame_s16.wav"] = wav("s16", 1, 1, 16000)
    s["zero_frames_s16.wav"] = wav("s16", 0, 1, 16000)
    s["rate_1000_s16.wav"] = wav("s16", 200, 1, 1000)
    s["rate_384k_s16.wav"] = wav("s16", 2048, 1, 384000)
    s["ch32_s16_16k_8.wav"] = wav("s16", 8, 32, 16000)
    s["riff_len_short_s16.wav"] = riff([fmt(1, 1, 16000, 16), chunk(b"data", samples("s16", 50, 1, 16000))], 20)
    s["over_cap_s16_16k_9000.wav"] = wav("s16", 9000, 1, 16000)
    for name, data in s.items():
        write("golden_wav", name, data)


if __name__ == "__main__":
    jpegs()
    wavs()
