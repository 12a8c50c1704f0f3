#!/usr/bin/env python3
"""Regenerates a100-mig.toml (the builtin profile table) from the numbers below.

Run from this directory: python3 derive.py > a100-mig.toml
The Rust crate never runs this; it exists so every [D] number can be re-derived
and the derivation reviewed. Inputs: data/migperf-a100-80gb-cv.csv (a copy of
MIGPerf's published sweep) and the constants in this file, each with its source.
"""
import csv
import math

# MIGPerf (github.com/HuaizhengZhang/MIGProfiler, commit 5462a7c1, file
# data/A100-80g/infer/cv/integrated_result.csv; arXiv 2301.00407): PyTorch eager
# FP32, CUDA-event timed forward pass only, A100-SXM4-80GB.
MIGPERF = "MIGPerf (arXiv 2301.00407; HuaizhengZhang/MIGProfiler@5462a7c1 data/A100-80g/infer/cv/integrated_result.csv), PyTorch eager FP32, forward only"
CSV_MODEL = {"resnet50": "resnet50", "vision_transformer": "vit_b_16"}
SLICES_80 = ["1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb"]
SLICES_40 = ["1g.5gb", "2g.10gb", "3g.20gb", "7g.40gb"]
# SMs per slice (nvidia-smi mig -lgip; the 80GB profiles have the same SM counts).
SMS = {"1g": 14, "2g": 28, "3g": 42, "7g": 98}
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
# Slope of ResNet-50 latency per sample on each slice relative to 1g (MIGPerf
# linear fits over b=32..256: 2.35 / 1.17 / 0.66 / 0.315 ms per image).
R50_SLOPE = {"1g": 2.35, "2g": 1.17, "3g": 0.66, "7g": 0.315}


def fmt(x):
    return repr(round(x, 4))


def point(b, p50, p95, thr):
    return "  { batch = %d, p50_ms = %s, p95_ms = %s, throughput = %s }," % (
        b, fmt(p50), fmt(p95), fmt(thr))


def entry(model, slice_, source, pts, bucket=None):
    lines = ["[[entry]]", 'model = "%s"' % model, 'slice = "a100-%s"' % slice_]
    if bucket is not None:
        lines.append("bucket = %d" % bucket)
    lines.append("source = %s" % tomlstr(source))
    lines.append("points = [")
    lines += [point(*p) for p in pts]
    lines.append("]")
    return "\n".join(lines) + "\n"


def tomlstr(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def published():
    rows = {}
    with open("data/migperf-a100-80gb-cv.csv") as f:
        for r in csv.DictReader(f):
            key = (CSV_MODEL[r["model"]], r["mig_profile"])
            mean, std = float(r["latency_ms"]), float(r["latency_std_ms"])
            # p95 is not published: mean + 1.645 std assumes normal jitter [D].
            rows.setdefault(key, []).append(
                (int(r["batch_size"]), mean, mean + 1.645 * std, float(r["throughput_per_s"])))
    out = []
    for model in ["resnet50", "vit_b_16"]:
        for s80, s40 in zip(SLICES_80, SLICES_40):
            pts = sorted(rows[(model, s80)])
            out.append(entry(model, s80,
                             "[P] p50 = published mean latency, throughput as published; [D] p95 = mean + 1.645 std. " + MIGPERF,
                             pts))
            out.append(entry(model, s40,
                             "[D] copy of the a100-%s numbers: same SM count (%d), only memory differs. " % (s80, SMS[s80[:2]]) + MIGPERF,
                             pts))
    return out


def linear(a, c, jitter=1.1):
    """lat(b) = a + c*b ms; p95 = jitter * p50 [D: no published tail data]."""
    pts = []
    for b in BATCHES:
        p50 = a + c * b
        pts.append((b, p50, p50 * jitter, b * 1000.0 / p50))
    return pts


# Image models with no published MIG sweep (docs/background.md section 7.6): the
# per-sample slope is ResNet-50's on the same slice times the model's cost
# ratio r (timm / FLOPs, section 4); the floor a is chosen as k*c_1g so that the
# knee rule on these points reproduces the paper's Batch_knee on 1g.5gb and
# 7g.40gb (docs/background.md section 1): k must lie in the intersection of the ranges
# that give those two knees, 2g/3g follow from the same a and c.
DERIVED_IMAGE = [
    # model, r, k, paper knees (1g, 7g)
    ("mobilenet_v3_small", 0.10, 1.6, (16, 128)),
    ("squeezenet1_1", 0.12, 0.35, (4, 32)),
    ("swin_t", 1.6, 0.18, (2, 16)),
]


def derived_images():
    out = []
    for model, r, k, knees in DERIVED_IMAGE:
        a = k * R50_SLOPE["1g"] * r
        for s in SLICES_40:
            c = R50_SLOPE[s[:2]] * r
            src = ("[D] lat(b) = a + c*b ms with c = ResNet-50 MIGPerf slope on %s (%.3f ms/img) x cost ratio %.2f "
                   "(docs/background.md s7.4/s7.6), a = %.3f ms chosen so the knee rule gives the paper's Batch_knee "
                   "%d on 1g.5gb and %d on 7g.40gb (arXiv 2411.19114 via docs/background.md s1); p95 = 1.1 x p50"
                   % (s, R50_SLOPE[s[:2]], r, a, knees[0], knees[1]))
            out.append(entry(model, s, src, linear(a, c)))
    return out


# Audio: CitriNet-256 TensorRT FP16 on a TITAN V (pytorch/TensorRT
# notebooks/CitriNet-example.ipynb): about 3 ms floor and 0.50 ms per 14.9 s
# utterance; docs/background.md s7.6 takes c_3g ~ 0.25 ms per 7.4 s utterance and
# scales other slices by SM count, linearly in utterance length. Conformer:
# 2.5x CitriNet per utterance (a guess, no published numbers).
BUCKET_W = 2.5
BUCKETS = 6  # [0,2.5) [2.5,5) ... [12.5, inf): the last holds LibriSpeech's long tail
BUCKET_REP_S = [1.25, 3.75, 6.25, 8.75, 11.25, 16.0]  # representative length per bucket
AUDIO = [("citrinet_256", 1.0), ("conformer", 2.5)]


def derived_audio():
    out = []
    for model, mult in AUDIO:
        for s in SLICES_40:
            c_utt = 0.25 * SMS["3g"] / SMS[s[:2]] * mult  # ms per 7.4 s utterance
            for bkt in range(BUCKETS):
                d = BUCKET_REP_S[bkt]
                c = c_utt * d / 7.4
                src = ("[D] lat(b) = 3.0 + c*b ms, c = %.4f ms per %.2f s utterance: CitriNet-256 TRT FP16 c_3g = 0.25 ms per 7.4 s "
                       "(TITAN V sweep, pytorch/TensorRT notebooks/CitriNet-example.ipynb; docs/background.md s7.4/s7.6) scaled by SM count, "
                       "by length, and x%.1f for this model; p95 = 1.1 x p50" % (c, d, mult))
                out.append(entry(model, s, src, linear(3.0, c), bucket=bkt))
    return out


HEADER = """# preba default profile table: A100 MIG slices (format preba-profile-1).
#
# Generated by batcher/profiles/derive.py; edit that, not this file.
# Every entry says in `source` where its numbers come from: [P] copied from a
# published source, [D] derived here. Latencies are per batch in ms.
# - resnet50, vit_b_16: MIGPerf's published sweep on A100-SXM4-80GB (slices
#   a100-1g.10gb, 2g.20gb, 3g.40gb, 7g.80gb) [P], copied to the 40GB names
#   (a100-1g.5gb, 2g.10gb, 3g.20gb, 7g.40gb; same SM counts) [D].
# - mobilenet_v3_small, squeezenet1_1, swin_t: no published MIG numbers; derived
#   from ResNet-50's per-slice slope and cost ratios, the floor fitted to the
#   PREBA paper's knees (arXiv 2411.19114) [D]. 40GB slice names only.
# - citrinet_256, conformer: audio, one entry per 2.5 s length bucket (bucket i
#   covers [2.5 i, 2.5 (i+1)) s, bucket 5 everything from 12.5 s) [D].
# No entry sets batch_knee / time_knee_ms: they follow from the points by the
# knee rule (smallest batch within 10% of the best throughput; Time_knee = p95
# there). Replace [D] entries with measurements when a GPU is at hand.
format = "preba-profile-1"
"""

if __name__ == "__main__":
    print(HEADER)
    for e in published() + derived_images() + derived_audio():
        print(e)
