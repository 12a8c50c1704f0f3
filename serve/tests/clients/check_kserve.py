#!/usr/bin/env python3
"""Acceptance checks of `preba serve` through Triton's own client (tritonclient.http)
and raw HTTP, against references computed here with onnxruntime.

Run by serve/tests/kserve.rs with PREBA_CLIENT_PYTHON. Prints one line per
check ("ok NAME" / "FAIL NAME: why"); exits 1 naming every failed check.

Arguments (all paths absolute):
  --url HOST:PORT             the server's KServe v2 HTTP address
  --models DIR                PREBA_MODELS (reference ONNX files)
  --images A.jpg,B.jpg,...    decodable JPEGs
  --golden-images G.npy       `preba preprocess --card cpu` of --images, FP32 [N,3,224,224]
  --corrupt X.jpg             a JPEG both paths refuse
  --wavs A.wav,B.wav,...      WAVs
  --golden-audio F.npz        `preba preprocess --card cpu` of --wavs (members "0", "1", ...)
  --corrupt-wav X.wav         a WAV the server must refuse
  --groups g1,g2              which groups of checks to run (default: all):
                              meta, infer, errors, audio, queue, isolation, perf
  --max-body N                the server's --max-body (for the 413 checks)
  --max-queue N               the server's --max-queue (for the 503 checks)
  --slow-model NAME           a model on a slow (modeled) slice, for queue-full
  --perf-analyzer PATH        perf_analyzer binary (group perf)
  --workdir DIR               scratch space
"""

import argparse
import base64
import http.client
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import traceback

import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

IMAGE_MODEL = "squeezenet1_1"
AUDIO_MODEL = "tiny_audio"

FAILED = []


def check(name):
    def deco(f):
        def run(*a, **k):
            try:
                f(*a, **k)
                print(f"ok {name}", flush=True)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                msg = f"{type(e).__name__}: {e}"
                print(f"FAIL {name}: {msg}", flush=True)
                traceback.print_exc(file=sys.stderr)
                FAILED.append(name)

        return run

    return deco


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def close_to(got, ref, what):
    got = np.asarray(got, dtype=np.float32)
    ref = np.asarray(ref, dtype=np.float32)
    expect(got.shape == ref.shape, f"{what}: shape {got.shape}, reference {ref.shape}")
    tol = 1e-4 * float(np.abs(ref).max())
    err = float(np.abs(got - ref).max())
    expect(err <= tol, f"{what}: max |diff| {err:.3g} > {tol:.3g} (1e-4 x max|ref|)")


class Ctx:
    def __init__(self, a):
        self.a = a
        self.host, port = a.url.rsplit(":", 1)
        self.port = int(port)
        self.client = httpclient.InferenceServerClient(a.url, concurrency=8, network_timeout=120.0)
        self.images = [p for p in a.images.split(",") if p]
        self.jpegs = [open(p, "rb").read() for p in self.images]
        self.golden = np.load(a.golden_images) if a.golden_images else None
        self.wavs = [p for p in (a.wavs or "").split(",") if p]
        self.wav_bytes = [open(p, "rb").read() for p in self.wavs]
        z = np.load(a.golden_audio) if a.golden_audio else None
        self.feats = [z[str(i)] for i in range(len(self.wavs))] if z is not None else []
        self._img_sess = None
        self._aud_sess = None

    # ---- references -------------------------------------------------------
    def img_ref(self, idx):
        """onnxruntime on the golden tensors of images idx (list) -> [len, 1000]."""
        if self._img_sess is None:
            self._img_sess = ort.InferenceSession(
                os.path.join(self.a.models, IMAGE_MODEL, "1", "model.onnx"), providers=["CPUExecutionProvider"]
            )
        x = self.golden[idx].astype(np.float32)
        return self._img_sess.run(None, {"input": x})[0]

    def aud_ref(self, idx):
        """onnxruntime on the golden features of wavs idx, padded to the longest."""
        if self._aud_sess is None:
            self._aud_sess = ort.InferenceSession(
                os.path.join(self.a.models, AUDIO_MODEL, "1", "model.onnx"), providers=["CPUExecutionProvider"]
            )
        fs = [self.feats[i] for i in idx]
        t = max(f.shape[1] for f in fs)
        x = np.zeros((len(fs), fs[0].shape[0], t), np.float32)
        for i, f in enumerate(fs):
            x[i, :, : f.shape[1]] = f
        lens = np.array([f.shape[1] for f in fs], np.int64)
        return self._aud_sess.run(None, {"features": x, "lengths": lens})[0]

    # ---- requests ---------------------------------------------------------
    def bytes_input(self, name, items, binary=True):
        inp = httpclient.InferInput(name, [len(items), 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b] for b in items], dtype=np.object_), binary_data=binary)
        return inp

    def infer_images(self, jpegs, binary_out=True, class_count=0, model=IMAGE_MODEL, version=""):
        out = httpclient.InferRequestedOutput("output", binary_data=binary_out, class_count=class_count)
        return self.client.infer(model, [self.bytes_input("IMAGE", jpegs)], outputs=[out], model_version=version)

    def raw(self, method, path, body=b"", headers=None, timeout=60):
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read(), r
        finally:
            c.close()

    def raw_infer(self, model, header, data=b"", header_len=None):
        h = json.dumps(header).encode()
        body = h + data
        hdrs = {"Content-Type": "application/octet-stream"}
        hdrs["Inference-Header-Content-Length"] = str(len(h) if header_len is None else header_len)
        return self.raw("POST", f"/v2/models/{model}/infer", body, hdrs)


def bytes_tensor(items):
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def error_of(status, body, want_status, *needles):
    expect(status == want_status, f"status {status} (want {want_status}); body {body[:300]!r}")
    try:
        v = json.loads(body)
    except ValueError:
        raise AssertionError(f"error body is not JSON: {body[:300]!r}")
    expect(isinstance(v, dict) and isinstance(v.get("error"), str) and v["error"], f'no {{"error": ...}}: {v}')
    for n in needles:
        expect(n in v["error"], f"error {v['error']!r} does not name {n!r}")
    return v["error"]


# ---- meta -----------------------------------------------------------------
def group_meta(c: Ctx):
    @check("health live/ready")
    def _():
        expect(c.client.is_server_live(), "not live")
        expect(c.client.is_server_ready(), "not ready")
        expect(c.client.is_model_ready(IMAGE_MODEL), f"{IMAGE_MODEL} not ready")
        expect(c.client.is_model_ready(IMAGE_MODEL, "1"), f"{IMAGE_MODEL} v1 not ready")
        expect(not c.client.is_model_ready("no_such_model"), "unknown model reported ready")

    _()

    @check("server metadata")
    def _():
        m = c.client.get_server_metadata()
        expect(m.get("name"), f"no name: {m}")
        expect(m.get("version"), f"no version: {m}")
        for e in ("binary_tensor_data", "classification", "statistics", "model_repository"):
            expect(e in m.get("extensions", []), f"extension {e} missing: {m}")

    _()

    @check("model metadata (IMAGE BYTES [-1,1] -> output FP32 [-1,1000])")
    def _():
        m = c.client.get_model_metadata(IMAGE_MODEL)
        expect(m["name"] == IMAGE_MODEL, m)
        expect("1" in m["versions"], m)
        expect(m["inputs"] == [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1, 1]}], m["inputs"])
        expect(m["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 1000]}], m["outputs"])
        v = c.client.get_model_metadata(IMAGE_MODEL, "1")
        expect(v["name"] == IMAGE_MODEL, v)

    _()

    @check("model config (what perf_analyzer reads)")
    def _():
        cfg = c.client.get_model_config(IMAGE_MODEL)
        expect(cfg["name"] == IMAGE_MODEL, cfg)
        expect(isinstance(cfg["max_batch_size"], int) and cfg["max_batch_size"] >= 4, cfg)
        expect([i["name"] for i in cfg["input"]] == ["IMAGE"], cfg["input"])
        expect(cfg["input"][0]["data_type"] == "TYPE_STRING", cfg["input"])
        expect(cfg["input"][0]["dims"] == [1], cfg["input"])
        expect([o["name"] for o in cfg["output"]] == ["output"], cfg["output"])
        expect(cfg["output"][0]["data_type"] == "TYPE_FP32" and cfg["output"][0]["dims"] == [1000], cfg["output"])

    _()

    @check("statistics: /v2/models/M/stats and /v2/models/stats name and version")
    def _():
        s = c.client.get_inference_statistics(IMAGE_MODEL)
        ms = s["model_stats"]
        expect(len(ms) == 1 and ms[0]["name"] == IMAGE_MODEL and ms[0]["version"] == "1", s)
        for k in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
            expect(k in ms[0]["inference_stats"], f"inference_stats.{k} missing: {ms[0]}")
        s = c.client.get_inference_statistics(IMAGE_MODEL, "1")
        expect(s["model_stats"][0]["name"] == IMAGE_MODEL, s)
        allm = c.client.get_inference_statistics()
        names = {(m["name"], m["version"]) for m in allm["model_stats"]}
        expect((IMAGE_MODEL, "1") in names and (AUDIO_MODEL, "1") in names, names)

    _()

    @check("repository index")
    def _():
        idx = c.client.get_model_repository_index()
        by = {m["name"]: m for m in idx}
        for n in (IMAGE_MODEL, AUDIO_MODEL):
            expect(n in by, f"{n} missing from {idx}")
            expect(by[n].get("version") == "1" and by[n].get("state") == "READY", by[n])

    _()


# ---- infer ----------------------------------------------------------------
def group_infer(c: Ctx):
    n = len(c.images)

    @check(f"infer: each of {n} images alone equals onnxruntime on the golden tensor")
    def _():
        for i in range(n):
            r = c.infer_images([c.jpegs[i]])
            got = r.as_numpy("output")
            close_to(got, c.img_ref([i]), os.path.basename(c.images[i]))
            resp = r.get_response()
            expect(resp["model_name"] == IMAGE_MODEL and resp["model_version"] == "1", resp)

    _()

    @check("infer: client batch of 4 (BYTES [4,1]), binary outputs")
    def _():
        idx = [0, min(1, n - 1), min(2, n - 1), 0]
        r = c.infer_images([c.jpegs[i] for i in idx], version="1")
        got = r.as_numpy("output")
        expect(got.shape == (4, 1000), got.shape)
        close_to(got, c.img_ref(idx), "batch of 4")
        o = r.get_output("output")
        expect(o["parameters"]["binary_data_size"] == 4 * 1000 * 4, o)

    _()

    @check("infer: JSON outputs (binary_data=False)")
    def _():
        r = c.infer_images([c.jpegs[0], c.jpegs[-1]], binary_out=False)
        o = r.get_output("output")
        expect("data" in o and "binary_data_size" not in (o.get("parameters") or {}), list(o.keys()))
        expect(o["datatype"] == "FP32" and o["shape"] == [2, 1000], (o["datatype"], o["shape"]))
        close_to(np.array(o["data"], np.float32).reshape(2, 1000), c.img_ref([0, n - 1]), "JSON output")

    _()

    @check("infer: classification class_count=3 -> BYTES score:index:label")
    def _():
        idx = [0, n - 1]
        r = c.infer_images([c.jpegs[i] for i in idx], binary_out=False, class_count=3)
        o = r.get_output("output")
        expect(o["datatype"] == "BYTES" and o["shape"] == [2, 3], (o["datatype"], o["shape"]))
        ref = c.img_ref(idx)
        got = r.as_numpy("output")
        for row, refrow in zip(got, ref):
            parts = [(x.decode() if isinstance(x, bytes) else x).split(":") for x in row]
            expect(all(len(p) == 3 for p in parts), f"not score:index:label: {row}")
            order = np.argsort(-refrow, kind="stable")[:3]
            top = int(parts[0][1])
            expect(top == int(order[0]), f"top index {top}, reference argmax {order[0]}")
            expect(parts[0][2] == f"label{top}", f"label {parts[0][2]!r} for index {top}")
            for p in parts:
                expect(abs(float(p[0]) - refrow[int(p[1])]) <= 1e-4 * np.abs(refrow).max() + 1e-6, f"score {p} vs {refrow[int(p[1])]}")
            scores = [float(p[0]) for p in parts]
            expect(scores == sorted(scores, reverse=True), f"not sorted: {scores}")
        # Binary classification output too.
        rb = c.infer_images([c.jpegs[0]], binary_out=True, class_count=3)
        first = rb.as_numpy("output")[0][0]
        first = first.decode() if isinstance(first, bytes) else first
        expect(int(first.split(":")[1]) == int(np.argmax(ref[0])), f"binary classification {first}")

    _()

    @check("infer: preprocessed FP32 tensor under the ONNX input name (ideal path) gives the same output")
    def _():
        k = min(2, n)
        x = c.golden[:k].astype(np.float32)
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        r = c.client.infer(IMAGE_MODEL, [inp], outputs=[httpclient.InferRequestedOutput("output", binary_data=True)])
        ideal = r.as_numpy("output")
        close_to(ideal, c.img_ref(list(range(k))), "ideal path")
        via_jpeg = c.infer_images(c.jpegs[:k]).as_numpy("output")
        close_to(via_jpeg, ideal, "IMAGE path vs ideal path")
        # The same tensor as JSON numbers.
        inp = httpclient.InferInput("input", [1, 3, 224, 224], "FP32")
        inp.set_data_from_numpy(x[:1], binary_data=False)
        r = c.client.infer(IMAGE_MODEL, [inp])
        close_to(r.as_numpy("output"), ideal[:1], "ideal path, JSON input")

    _()


# ---- errors ---------------------------------------------------------------
def group_errors(c: Ctx):
    jpg = c.jpegs[0]
    good_hdr = lambda n: {  # noqa: E731
        "inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": n}}],
        "outputs": [{"name": "output", "parameters": {"binary_data": False, "classification": 1}}],
    }
    data = bytes_tensor([jpg])

    @check("raw HTTP: a well-formed binary request succeeds (control for the framing checks)")
    def _():
        st, body, r = c.raw_infer(IMAGE_MODEL, good_hdr(len(data)), data)
        expect(st == 200, f"{st} {body[:300]!r}")
        v = json.loads(body)
        expect(v["outputs"][0]["shape"] == [1, 1], v)

    _()

    @check("bad framing: Inference-Header-Content-Length past the body -> 400")
    def _():
        h = json.dumps(good_hdr(len(data))).encode()
        st, body, _ = c.raw_infer(IMAGE_MODEL, good_hdr(len(data)), data, header_len=len(h) + len(data) + 10)
        error_of(st, body, 400, "Inference-Header-Content-Length")

    _()

    @check("bad framing: Inference-Header-Content-Length cutting the JSON -> 400")
    def _():
        st, body, _ = c.raw_infer(IMAGE_MODEL, good_hdr(len(data)), data, header_len=10)
        error_of(st, body, 400)

    _()

    @check("bad framing: Inference-Header-Content-Length not a number -> 400")
    def _():
        st, body, _ = c.raw_infer(IMAGE_MODEL, good_hdr(len(data)), data, header_len="abc")
        error_of(st, body, 400, "Inference-Header-Content-Length")

    _()

    @check("bad framing: binary_data_size past the body -> 400 naming the input")
    def _():
        st, body, _ = c.raw_infer(IMAGE_MODEL, good_hdr(len(data) + 100), data)
        error_of(st, body, 400, "IMAGE", "binary_data_size")

    _()

    @check("bad framing: bytes left after the last input -> 400")
    def _():
        st, body, _ = c.raw_infer(IMAGE_MODEL, good_hdr(len(data) - 10), data)
        error_of(st, body, 400)

    _()

    @check("bad framing: BYTES element length prefix past the tensor -> 400 naming IMAGE[0]")
    def _():
        d = struct.pack("<I", 1000) + b"x" * 10
        st, body, _ = c.raw_infer(IMAGE_MODEL, good_hdr(len(d)), d)
        error_of(st, body, 400, "IMAGE[0]")

    _()

    @check("bad framing: body not JSON -> 400")
    def _():
        st, body, _ = c.raw("POST", f"/v2/models/{IMAGE_MODEL}/infer", b"{not json", {"Content-Type": "application/json"})
        error_of(st, body, 400)

    _()

    @check("wrong datatype -> 400 naming the input")
    def _():
        hdr = {"inputs": [{"name": "IMAGE", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
        st, body, _ = c.raw_infer(IMAGE_MODEL, hdr)
        error_of(st, body, 400, "IMAGE", "FP32")
        # Through tritonclient: the message reaches the client.
        inp = httpclient.InferInput("IMAGE", [1, 1], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 1), np.float32))
        try:
            c.client.infer(IMAGE_MODEL, [inp])
            raise AssertionError("tritonclient: no error")
        except InferenceServerException as e:
            expect("IMAGE" in e.message(), e.message())
        # The tensor input with the wrong type.
        x = np.zeros((1, 3, 224, 224), np.float16)
        inp = httpclient.InferInput("input", [1, 3, 224, 224], "FP16")
        inp.set_data_from_numpy(x)
        try:
            c.client.infer(IMAGE_MODEL, [inp])
            raise AssertionError("FP16 tensor accepted")
        except InferenceServerException as e:
            expect("input" in e.message() and str(e.status()) == "400", f"{e.status()} {e.message()}")

    _()

    @check("wrong shape -> 400 naming the input")
    def _():
        d = bytes_tensor([jpg, jpg])
        hdr = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1, 2], "parameters": {"binary_data_size": len(d)}}]}
        st, body, _ = c.raw_infer(IMAGE_MODEL, hdr, d)
        error_of(st, body, 400, "IMAGE")
        # Shape says 3 elements, data holds 2.
        hdr["inputs"][0]["shape"] = [3, 1]
        st, body, _ = c.raw_infer(IMAGE_MODEL, hdr, d)
        error_of(st, body, 400, "IMAGE")
        x = np.zeros((1, 3, 224, 225), np.float32).tobytes()
        hdr = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 225], "parameters": {"binary_data_size": len(x)}}]}
        st, body, _ = c.raw_infer(IMAGE_MODEL, hdr, x)
        error_of(st, body, 400, "input")
        hdr = {"inputs": [{"name": "bogus", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": len(data)}}]}
        st, body, _ = c.raw_infer(IMAGE_MODEL, hdr, data)
        error_of(st, body, 400, "bogus")
        hdr = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": len(data)}}],
               "outputs": [{"name": "nope"}]}
        st, body, _ = c.raw_infer(IMAGE_MODEL, hdr, data)
        error_of(st, body, 400, "nope")

    _()

    @check("corrupt JPEG element in a client batch -> 400 naming IMAGE[2]")
    def _():
        bad = open(c.a.corrupt, "rb").read()
        items = [c.jpegs[0], c.jpegs[-1], bad, c.jpegs[0]]
        d = bytes_tensor(items)
        hdr = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [4, 1], "parameters": {"binary_data_size": len(d)}}]}
        st, body, _ = c.raw_infer(IMAGE_MODEL, hdr, d)
        error_of(st, body, 400, "IMAGE[2]")
        # An empty element and a non-JPEG one.
        for items, want in (([c.jpegs[0], b""], "IMAGE[1]"), ([b"hello, not a jpeg", c.jpegs[0]], "IMAGE[0]")):
            d = bytes_tensor(items)
            hdr["inputs"][0]["shape"] = [len(items), 1]
            hdr["inputs"][0]["parameters"]["binary_data_size"] = len(d)
            st, body, _ = c.raw_infer(IMAGE_MODEL, hdr, d)
            error_of(st, body, 400, want)

    _()

    @check("unknown model / version -> 404")
    def _():
        st, body, _ = c.raw_infer("no_such_model", good_hdr(len(data)), data)
        error_of(st, body, 404, "no_such_model")
        st, body, _ = c.raw("GET", "/v2/models/no_such_model")
        error_of(st, body, 404)
        st, body, _ = c.raw("GET", "/v2/models/no_such_model/config")
        error_of(st, body, 404)
        h = json.dumps(good_hdr(len(data))).encode()
        st, body, _ = c.raw(
            "POST", f"/v2/models/{IMAGE_MODEL}/versions/7/infer", h + data, {"Inference-Header-Content-Length": str(len(h))}
        )
        error_of(st, body, 404, "7")
        st, body, _ = c.raw("GET", f"/v2/models/{IMAGE_MODEL}/versions/7")
        error_of(st, body, 404)
        try:
            c.infer_images([jpg], version="7")
            raise AssertionError("version 7 answered")
        except InferenceServerException as e:
            expect(str(e.status()) == "404", f"tritonclient status {e.status()}: {e.message()}")

    _()

    mb = c.a.max_body

    @check(f"body over --max-body {mb} (Content-Length) -> 413")
    def _():
        expect(mb > 0, "--max-body not given")
        s = socket.create_connection((c.host, c.port), timeout=30)
        try:
            s.sendall(
                (
                    f"POST /v2/models/{IMAGE_MODEL}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {mb + 1}\r\n\r\n"
                ).encode()
            )
            st, body = read_response(s)
        finally:
            s.close()
        error_of(st, body, 413)

    _()

    @check(f"body over --max-body {mb} (chunked, no Content-Length) -> 413")
    def _():
        s = socket.create_connection((c.host, c.port), timeout=30)
        try:
            s.sendall(
                (
                    f"POST /v2/models/{IMAGE_MODEL}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"
                ).encode()
            )
            chunk = b"x" * 65536
            sent = 0
            while sent < mb * 2:
                r, _, _ = select.select([s], [], [], 0)
                if r:
                    break
                try:
                    s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                except OSError:
                    break
                sent += len(chunk)
            st, body = read_response(s)
        finally:
            s.close()
        error_of(st, body, 413)

    _()

    @check("a body just under --max-body is not refused for its size")
    def _():
        # Valid framing, an IMAGE element padded with junk: 400 (not a JPEG), not 413.
        pad = mb - 4096
        d = bytes_tensor([b"\x00" * pad])
        hdr = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": len(d)}}]}
        st, body, _ = c.raw_infer(IMAGE_MODEL, hdr, d)
        expect(st in (400,), f"status {st}: {body[:200]!r}")

    _()


def read_response(s):
    """Reads one HTTP/1.1 response (Content-Length bodies) from a socket."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    expect(lines and lines[0].startswith("HTTP/1."), f"no HTTP response: {buf[:200]!r}")
    st = int(lines[0].split()[1])
    n = 0
    for l in lines[1:]:
        k, _, v = l.partition(":")
        if k.strip().lower() == "content-length":
            n = int(v.strip())
    while len(rest) < n:
        d = s.recv(65536)
        if not d:
            break
        rest += d
    return st, rest[:n]


# ---- audio ----------------------------------------------------------------
def group_audio(c: Ctx):
    expect(len(c.wavs) >= 3, "need 3 WAVs")

    @check("audio: model metadata (AUDIO BYTES [-1,1] -> logits FP32 [-1,32])")
    def _():
        m = c.client.get_model_metadata(AUDIO_MODEL)
        expect(m["inputs"] == [{"name": "AUDIO", "datatype": "BYTES", "shape": [-1, 1]}], m["inputs"])
        expect(m["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 32]}], m["outputs"])

    _()

    def infer_wavs(idx, binary=True):
        inp = c.bytes_input("AUDIO", [c.wav_bytes[i] for i in idx])
        r = c.client.infer(AUDIO_MODEL, [inp], outputs=[httpclient.InferRequestedOutput("logits", binary_data=binary)])
        return r.as_numpy("logits")

    @check("audio: each WAV alone equals onnxruntime on the golden features")
    def _():
        for i in range(len(c.wavs)):
            close_to(infer_wavs([i]), c.aud_ref([i]), os.path.basename(c.wavs[i]))

    _()

    @check("audio: batch of 2 with different lengths (padded to the longest, lengths = real frames)")
    def _():
        lens = [f.shape[1] for f in c.feats]
        # Two pairs: one within one length bucket, one across buckets.
        for pair in ([1, 2], [0, 1]):
            expect(lens[pair[0]] != lens[pair[1]], f"fixtures of equal length {lens}")
            got = infer_wavs(pair, binary=(pair == [0, 1]))
            ref = c.aud_ref(pair)
            close_to(got, ref, f"batch {[os.path.basename(c.wavs[i]) for i in pair]}")
            # And each row equals the element alone (padding does not leak in).
            for j, i in enumerate(pair):
                close_to(got[j : j + 1], c.aud_ref([i]), f"row {j} vs alone")

    _()

    @check("audio: features sent directly under `features` (the ideal path) equal the WAV path")
    def _():
        f = c.feats[0].astype(np.float32)[None]  # [1, 80, T]
        inp = httpclient.InferInput("features", list(f.shape), "FP32")
        inp.set_data_from_numpy(f, binary_data=True)
        r = c.client.infer(AUDIO_MODEL, [inp], outputs=[httpclient.InferRequestedOutput("logits", binary_data=True)])
        close_to(r.as_numpy("logits"), c.aud_ref([0]), "features input")
        bad = httpclient.InferInput("features", [1, 79, f.shape[2]], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 79, f.shape[2]), np.float32), binary_data=True)
        try:
            c.client.infer(AUDIO_MODEL, [bad])
            expect(False, "79 mel bands accepted")
        except InferenceServerException as e:
            expect(e.status() == "400" and "features" in e.message(), f"{e.status()} {e.message()}")

    _()

    @check("audio: a broken WAV in a batch -> 400 naming AUDIO[1]")
    def _():
        bad = open(c.a.corrupt_wav, "rb").read()
        d = bytes_tensor([c.wav_bytes[0], bad])
        hdr = {"inputs": [{"name": "AUDIO", "datatype": "BYTES", "shape": [2, 1], "parameters": {"binary_data_size": len(d)}}]}
        st, body, _ = c.raw_infer(AUDIO_MODEL, hdr, d)
        error_of(st, body, 400, "AUDIO[1]")

    _()


# ---- queue full -----------------------------------------------------------
def group_queue(c: Ctx):
    mq = c.a.max_queue

    @check(f"queue full: a client batch of {mq + 1} > --max-queue {mq} -> 503")
    def _():
        expect(mq > 0, "--max-queue not given")
        items = [c.jpegs[0]] * (mq + 1)
        d = bytes_tensor(items)
        hdr = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [len(items), 1], "parameters": {"binary_data_size": len(d)}}]}
        st, body, _ = c.raw_infer(IMAGE_MODEL, hdr, d)
        error_of(st, body, 503, "queue full")

    _()

    slow = c.a.slow_model

    @check(f"queue full: {mq + 8} concurrent requests to the slow model -> some 503, the rest 200")
    def _():
        expect(slow, "--slow-model not given")
        n = mq + 8
        res = [None] * n
        d = bytes_tensor([c.jpegs[0]])
        hdr = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": len(d)}}],
               "outputs": [{"name": "output", "parameters": {"classification": 1}}]}

        def one(i):
            try:
                st, body, _ = c.raw_infer(slow, hdr, d)
                res[i] = (st, body)
            except Exception as e:  # noqa: BLE001
                res[i] = (-1, repr(e).encode())

        ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        codes = [r[0] if r else None for r in res]
        full = [r for r in res if r and r[0] == 503]
        expect(full, f"no 503 among {codes}")
        for st, body in full:
            error_of(st, body, 503, "queue full")
        expect(all(x in (200, 503) for x in codes), f"statuses {codes}")
        expect(codes.count(200) >= mq // 2, f"too few answered: {codes}")

    _()


# ---- isolation ------------------------------------------------------------
def group_isolation(c: Ctx):
    @check("a bad request never affects another: good requests concurrent with bad ones all succeed")
    def _():
        bad = open(c.a.corrupt, "rb").read()
        idx = [0, len(c.jpegs) - 1]
        ref = c.img_ref(idx)
        good_items = [c.jpegs[i] for i in idx]
        # Loads sized to stay under --max-queue (8 inputs of a model): 2 good
        # requests of 2 and one corrupt batch of 2 admitted at a time.
        bad_reqs = []
        d = bytes_tensor([c.jpegs[0], bad])
        bad_reqs.append(({"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [2, 1], "parameters": {"binary_data_size": len(d)}}]}, d, None, 400))
        bad_reqs.append(({"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": 99999}}]}, d, None, 400))
        bad_reqs.append(({"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": len(d)}}]}, d, 5, 400))
        bad_reqs.append(({"inputs": [{"name": "IMAGE", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}]}, b"", None, 400))
        errors = []

        def good(k):
            try:
                cl = httpclient.InferenceServerClient(c.a.url, network_timeout=120.0)
                for _ in range(3):
                    r = cl.infer(IMAGE_MODEL, [c.bytes_input("IMAGE", good_items)])
                    close_to(r.as_numpy("output"), ref, f"good request {k}")
            except Exception as e:  # noqa: BLE001
                errors.append(f"good {k}: {e}")

        def badf(k):
            try:
                for _ in range(4):
                    h, body, hl, want = bad_reqs[k % len(bad_reqs)]
                    st, b, _ = c.raw_infer(IMAGE_MODEL, h, body, header_len=hl)
                    if st != want:
                        errors.append(f"bad {k}: status {st} (want {want}) {b[:200]!r}")
            except Exception as e:  # noqa: BLE001
                errors.append(f"bad {k}: {e}")

        ts = [threading.Thread(target=good, args=(k,)) for k in range(2)]
        ts += [threading.Thread(target=badf, args=(k,)) for k in range(len(bad_reqs))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(180)
        expect(not errors, "; ".join(errors))

    _()


# ---- perf_analyzer ---------------------------------------------------------
def group_perf(c: Ctx):
    @check("perf_analyzer: Poisson request rate against squeezenet1_1 completes without errors")
    def _():
        pa = c.a.perf_analyzer
        expect(pa and os.path.isfile(pa), f"perf_analyzer {pa!r} missing")
        buf = struct.pack("<I", len(c.jpegs[0])) + c.jpegs[0]
        data = {"data": [{"IMAGE": {"b64": base64.b64encode(buf).decode()}}]}
        dpath = os.path.join(c.a.workdir, "perf_input.json")
        with open(dpath, "w") as f:
            json.dump(data, f)
        env = dict(os.environ)
        venv = os.path.dirname(os.path.dirname(pa))
        libs = []
        for root, dirs, _files in os.walk(os.path.join(venv, "lib")):
            if root.endswith(os.path.join("nvidia", "cuda_runtime", "lib")):
                libs.append(root)
        env["LD_LIBRARY_PATH"] = ":".join(libs + [env.get("LD_LIBRARY_PATH", "")])
        cmd = [
            pa, "-u", c.a.url, "-i", "http", "-m", IMAGE_MODEL, "--input-data", dpath,
            "-s", "30", "--request-rate-range", "20:20:1", "--request-distribution", "poisson",
            "--measurement-interval", "3000", "--max-trials", "10",
        ]
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=150)
        out = p.stdout.decode(errors="replace")
        print(out, file=sys.stderr)
        expect(p.returncode == 0, f"exit {p.returncode}: {out[-1500:]}")
        low = out.lower()
        expect("request rate: 20" in low, f"no result line for rate 20: {out[-800:]}")
        for bad in ("error", "failed", "unstable"):
            expect(bad not in low, f"{bad!r} in output: {out[-1500:]}")

    _()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--images", default="")
    ap.add_argument("--golden-images")
    ap.add_argument("--corrupt")
    ap.add_argument("--wavs")
    ap.add_argument("--golden-audio")
    ap.add_argument("--corrupt-wav")
    ap.add_argument("--groups", default="meta,infer,errors,audio,queue,isolation,perf")
    ap.add_argument("--max-body", type=int, default=0)
    ap.add_argument("--max-queue", type=int, default=0)
    ap.add_argument("--slow-model")
    ap.add_argument("--perf-analyzer")
    ap.add_argument("--workdir", default="/tmp")
    a = ap.parse_args()
    c = Ctx(a)
    groups = {
        "meta": group_meta, "infer": group_infer, "errors": group_errors, "audio": group_audio,
        "queue": group_queue, "isolation": group_isolation, "perf": group_perf,
    }
    for g in a.groups.split(","):
        groups[g](c)
    if FAILED:
        print("FAILED CHECKS: " + " | ".join(FAILED), flush=True)
        sys.exit(1)
    print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
