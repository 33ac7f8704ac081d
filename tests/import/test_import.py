#!/usr/bin/env python3
"""Tests of the importers of production captures, one case per call:

    test_import.py CASE WORKDIR MOEBENCH     CASE: megatron vllm_routed weights layer_mismatch sglang per_layer

Each case writes small inputs in exactly the layout the source project documents (Megatron-Core's
router_trace.py, vLLM's routed_experts arrays, SGLang's expert-distribution recorder dumps), converts
them with `moebench trace convert` (or workloads/capture/sglang_to_moebench.py) and checks the trace's
content with h5py; malformed inputs must fail with one `error:` line naming file, record and field,
and leave no output file. Runs under an interpreter with numpy and h5py (torch for sglang), re-executing
itself under /usr/bin/python3 when needed; exits 77 (ctest skip) when there is none.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

NEEDED = ("h5py", "numpy")


def _reexec_or_skip():
    if all(importlib.util.find_spec(m) for m in NEEDED):
        return
    if os.environ.get("MOEBENCH_TEST_IMPORT_REEXEC") != "1":
        probe = "import importlib.util as u, sys; sys.exit(0 if all(u.find_spec(m) for m in %r) else 1)" % (NEEDED,)
        for python in ["/usr/bin/python3"] + [shutil.which("python3.%d" % n) for n in range(20, 7, -1)]:
            if python and os.access(python, os.X_OK) and subprocess.run([python, "-c", probe]).returncode == 0:
                os.environ["MOEBENCH_TEST_IMPORT_REEXEC"] = "1"
                os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])
    print("SKIP: no Python interpreter with h5py and numpy (Debian: apt-get install python3-h5py python3-numpy)")
    sys.exit(77)


_reexec_or_skip()

import h5py  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MB = None


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def run(args, what="moebench"):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    print("$ " + " ".join(args) + "\n" + p.stdout)
    return p


def convert(*args):
    p = run([MB, "trace", "convert"] + [str(a) for a in args])
    check(p.returncode == 0, "convert failed: %s" % " ".join(map(str, args)))
    return p.stdout


def expect_error(regex, args, out="bad.h5"):
    """The command fails with exactly one error line matching regex and leaves neither OUT nor OUT.tmp."""
    p = run([str(a) for a in args])
    check(p.returncode != 0, "expected a non-zero exit from %s" % args)
    errors = [l for l in p.stdout.splitlines() if re.search(r"(^moebench|^sglang_to_moebench\.py): error:", l)]
    check(len(errors) == 1, "expected one error line, got %d" % len(errors))
    check(re.search(regex, errors[0]), "error line %r does not match %r" % (errors[0], regex))
    check(not os.path.exists(out) and not os.path.exists(out + ".tmp"), "an output file was left behind")


def bad_convert(regex, *args):
    expect_error(regex, [MB, "trace", "convert"] + list(args) + ["--out", "bad.h5"])


def attr(f, name):
    v = f.attrs[name]
    return v.decode() if isinstance(v, bytes) else (v if not isinstance(v, np.ndarray) else v.tolist())


# ---------------------------------------------------------------------------------------------- megatron
def bf16_bits(x):
    """bfloat16 bits of float32 values that bfloat16 holds exactly."""
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    assert not (bits & 0xFFFF).any(), "not exact in bfloat16"
    return (bits >> 16).astype("<u2")


def write_megatron(folder, E=8, k=2, rows=None, layers=(1, 3), mtp=True, logits=True, seed=1):
    """Megatron-Core router_trace.py output: router_trace_rank{r}.jsonl (+ logits_rank{r}.bin).
    rows[step][rank] = tokens that rank routed in that step. Returns {(step, layer_id, rank): (ids, logits)}."""
    rng = np.random.default_rng(seed)
    rows = rows or [[3, 2], [1, 2]]
    os.makedirs(folder, exist_ok=True)
    truth = {}
    ranks = len(rows[0])
    for r in range(ranks):
        recs, offset, blob = [], 0, b""
        for s, per_rank in enumerate(rows):
            n = per_rank[r]
            entries = [("decoder", None, l) for l in layers] + ([("mtp", 0, 1)] if mtp else [])
            for block, mtp_idx, layer in entries:
                # distinct multiples of 1/4 in each row: exact in bfloat16, no ties
                z = np.array([(rng.permutation(E) - E / 2) / 4.0 for _ in range(n)], dtype=np.float32).reshape(n, E)
                ids = np.argsort(-z, axis=1, kind="stable")[:, :k].astype(np.int32)
                rec = {"step": s, "stage": "pre_dispatch", "block": block, "layer": layer, "rank": r,
                       "num_tokens": n, "topk": k}
                if mtp_idx is not None:
                    rec["mtp_idx"] = mtp_idx
                if logits:
                    b = bf16_bits(z).tobytes()
                    rec.update(logit_offset=offset, logit_bytes=len(b), logit_shape=[n, E])
                    blob += b
                    offset += len(b)
                rec["top_indices"] = ids.tolist()
                recs.append(rec)
                lid = layer if block == "decoder" else 1000 * (mtp_idx + 1) + layer
                truth[(s, lid, r)] = (ids, z)
        with open(os.path.join(folder, "router_trace_rank%d.jsonl" % r), "w") as f:
            for rec in recs:
                f.write(json.dumps(rec) + "\n")
        if logits:
            with open(os.path.join(folder, "logits_rank%d.bin" % r), "wb") as f:
                f.write(blob)
    return truth


def case_megatron():
    rows = [[3, 2], [1, 2]]
    truth = write_megatron("mt", rows=rows)
    out = convert("--from", "megatron", "--in", "mt", "--out", "m.h5", "--dtype", "fp32")
    check("skipped 4 MTP records" in out, "MTP records (2 steps x 2 ranks) are counted")
    with h5py.File("m.h5") as f:
        check(attr(f, "kind") == "logits", "sidecar present: a logit trace")
        check(attr(f, "num_experts") == 8 and attr(f, "top_k") == 2, "E and k")
        check(list(f.attrs["layer_ids"]) == [1, 3], "decoder layers only by default: %s" % f.attrs["layer_ids"])
        check(list(f["steps/offset"][...]) == [0, 5, 8], "steps: %s" % f["steps/offset"][...])
        check(list(f["tokens/rank"][...]) == [0, 0, 0, 1, 1, 0, 1, 1], "source ranks %s" % f["tokens/rank"][...])
        check(list(f["tokens/position"][...]) == [0, 1, 2, 0, 1, 0, 0, 1], "positions")
        check(attr(f, "has_sequences") == 0, "Megatron records carry no sequences")
        lg = f["logits"][...]
        for li, layer in enumerate([1, 3]):
            want = np.concatenate([truth[(s, layer, r)][1] for s in range(2) for r in range(2)])
            check(np.array_equal(lg[li], want), "layer %d logits differ from the sidecar" % layer)
    # The default fp16 storage holds these values exactly too.
    convert("--from", "megatron", "--in", "mt/router_trace_rank0.jsonl", "mt/router_trace_rank1.jsonl", "--out", "m16.h5")
    with h5py.File("m16.h5") as f, h5py.File("m.h5") as g:
        check(f["logits"].dtype == np.float16 and np.array_equal(f["logits"][...].astype(np.float32), g["logits"][...]),
              "fp16 logits")
    # MTP layers as their own layers; ids only.
    convert("--from", "megatron", "--in", "mt", "--out", "mtp.h5", "--mtp-layers", "import", "--ignore-logits")
    with h5py.File("mtp.h5") as f:
        check(attr(f, "kind") == "assignments" and attr(f, "weights_are") == "unknown", "--ignore-logits: ids")
        check(list(f.attrs["layer_ids"]) == [1, 3, 1001], "MTP head 0 layer 1 is layer 1001")
        ids, w = f["expert_ids"][...], f["weights"][...]
        for li, layer in enumerate([1, 3, 1001]):
            want = np.concatenate([truth[(s, layer, r)][0] for s in range(2) for r in range(2)])
            check(np.array_equal(ids[li], want), "layer %d ids differ from top_indices" % layer)
        check(np.all(w == 0.5), "no recorded weights: 1/k each")
    info = run([MB, "trace", "info", "mtp.h5"]).stdout
    check("weights: unknown" in info, "info shows the weights' meaning")
    # Replay: every router runs on the full logits (a router that needs the whole distribution).
    p = run([MB, "run", "--workload", "trace", "--trace", "m.h5", "--experts", "8", "--top-k", "2",
             "--routers", "softmax_topk,sinkhorn", "--progress", "off", "--out", "r.h5"])
    check(p.returncode == 0, "replay of the megatron logit trace")
    # Malformed input.
    bad_convert(r"--weights-are probabilities: Megatron router-trace records carry no weights",
                "--from", "megatron", "--in", "mt", "--weights-are", "probabilities")
    bad_convert(r"--layer-mismatch intersect: Megatron router-trace records carry no token identity",
                "--from", "megatron", "--in", "mt", "--layer-mismatch", "intersect")
    shutil.copytree("mt", "trunc")
    with open("trunc/logits_rank1.bin", "r+b") as f:
        f.truncate(100)
    bad_convert(r"trunc/logits_rank1.bin: truncated: trunc/router_trace_rank1.jsonl: line \d+ \(field logit_offset",
                "--from", "megatron", "--in", "trunc")
    shutil.copytree("mt", "nokey")
    lines = open("nokey/router_trace_rank0.jsonl").read().splitlines()
    rec = json.loads(lines[1])
    del rec["layer"]
    lines[1] = json.dumps(rec)
    open("nokey/router_trace_rank0.jsonl", "w").write("\n".join(lines) + "\n")
    bad_convert(r"nokey/router_trace_rank0.jsonl: line 2: field layer is missing", "--from", "megatron", "--in", "nokey")
    shutil.copytree("mt", "range")
    lines = open("range/router_trace_rank0.jsonl").read().splitlines()
    rec = json.loads(lines[0])
    rec["top_indices"][1][1] = 8
    lines[0] = json.dumps(rec)
    open("range/router_trace_rank0.jsonl", "w").write("\n".join(lines) + "\n")
    bad_convert(r"range/router_trace_rank0.jsonl: line 1: field top_indices: row 1: expert id 8 outside \[0, 8\)",
                "--from", "megatron", "--in", "range", "--ignore-logits", "--experts", "8")
    # A layer that lost a row of rank 1 in step 1.
    write_megatron("short", rows=[[3, 2], [1, 2]], mtp=False, logits=False)
    lines = open("short/router_trace_rank1.jsonl").read().splitlines()
    rec = json.loads(lines[3])  # step 1, layer 3
    rec["top_indices"] = rec["top_indices"][:1]
    rec["num_tokens"] = 1
    lines[3] = json.dumps(rec)
    open("short/router_trace_rank1.jsonl", "w").write("\n".join(lines) + "\n")
    bad_convert(r"step 1: the layers hold different tokens: layer 1 has 3, layer 3 has 2 of the step's 3 .*"
                r"every layer must route the same rows of each rank \(--layer-mismatch", "--from", "megatron", "--in", "short",
                "--experts", "8")
    shutil.copytree("mt", "type")
    lines = open("type/router_trace_rank0.jsonl").read().splitlines()
    rec = json.loads(lines[0])
    rec["logit_shape"] = [3, 7]
    lines[0] = json.dumps(rec)
    open("type/router_trace_rank0.jsonl", "w").write("\n".join(lines) + "\n")
    bad_convert(r"type/router_trace_rank0.jsonl: line 2: field logit_shape: 8 experts, earlier records have 7",
                "--from", "megatron", "--in", "type")


# ------------------------------------------------------------------------------------------- vllm-routed
def case_vllm_routed():
    """vLLM routed_experts: one .npy per request, [seq_len, layers, topk] int16/int32, -1 in empty slots."""
    E, L, K = 16, 3, 4
    rng = np.random.default_rng(7)
    os.makedirs("req", exist_ok=True)
    reqs = []
    for i, (n, dt) in enumerate([(5, np.int16), (3, np.int32), (4, np.int32)]):
        a = np.full((n, L, K), -1, dtype=dt)
        for t in range(n):
            for l in range(L):
                k = K if (t + l + i) % 3 else 2  # some rows use 2 of the 4 slots
                a[t, l, :k] = rng.permutation(E)[:k]
        np.save("req/req_%03d.npy" % i, a)
        reqs.append(a)
    out = convert("--from", "vllm-routed", "--in", "req", "--experts", E, "--layers", "3,7,11",
                  "--tokens-per-step", 8, "--out", "v.h5")
    with h5py.File("v.h5") as f:
        check(attr(f, "kind") == "assignments" and attr(f, "weights_are") == "unknown", "kind, weights")
        check(attr(f, "variable_k") == 1 and attr(f, "top_k") == K, "variable k, width %d" % K)
        check(list(f.attrs["layer_ids"]) == [3, 7, 11], "layer numbers")
        # requests of 5, 3, 4 tokens at 8 tokens a step: [5 + 3], [4]
        check(list(f["steps/offset"][...]) == [0, 8, 12], "steps hold whole requests: %s" % f["steps/offset"][...])
        check(attr(f, "has_sequences") == 1, "sequences")
        check(list(f["tokens/sequence"][...]) == [0] * 5 + [1] * 3 + [2] * 4, "one request = one sequence")
        check(list(f["tokens/position"][...]) == [0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3], "positions")
        ids, w = f["expert_ids"][...], f["weights"][...]
        want = np.concatenate(reqs).transpose(1, 0, 2)
        check(np.array_equal(ids, want), "ids differ from the arrays")
        k = (want >= 0).sum(axis=2, keepdims=True)
        check(np.allclose(w, np.where(want >= 0, 1.0 / k, 0.0)), "weights: 1/k of each recorded expert")
    # The recorded router replays the ids: expert demand per (step, layer) equals the arrays' counts.
    p = run([MB, "run", "--workload", "trace", "--trace", "v.h5", "--routers", "recorded", "--ep-size", "2",
             "--workload-arg", "trace.split=block", "--progress", "off", "--out", "r.h5"])
    check(p.returncode == 0, "recorded replay")
    with h5py.File("r.h5") as f:
        demand = f["runs/recorded/expert_demand"][...]
    flat = np.concatenate(reqs)
    for s, (a, b) in enumerate([(0, 8), (8, 12)]):
        for l in range(L):
            got = np.bincount(flat[a:b, l][flat[a:b, l] >= 0], minlength=E)
            check(np.array_equal(demand[s, l], got), "step %d layer %d demand %s, want %s" % (s, l, demand[s, l], got))
    # Malformed input.
    np.save("f32.npy", np.zeros((2, L, K), dtype=np.float32))
    bad_convert(r"f32.npy: header field descr: dtype '<f4' is not int16 or int32", "--from", "vllm-routed", "--in",
                "f32.npy", "--experts", E)
    np.save("flat.npy", np.zeros((2, L * K), dtype=np.int32))
    bad_convert(r"flat.npy: header field shape: \[2, 12\] has 2 dimensions \(routed_experts is \[seq_len, layers, topk\]\)",
                "--from", "vllm-routed", "--in", "flat.npy", "--experts", E)
    gap = reqs[1].copy()
    gap[2, 1] = [5, -1, 6, -1]
    np.save("gap.npy", gap)
    bad_convert(r"gap.npy: token 2 layer 1: field expert_ids: slot 2 holds expert 6 after an empty slot",
                "--from", "vllm-routed", "--in", "gap.npy", "--experts", E)
    big = reqs[1].copy()
    big[1, 2, 0] = 16
    np.save("big.npy", big)
    bad_convert(r"big.npy: token 1 layer 2: field expert_ids: expert id 16 outside \[0, 16\)",
                "--from", "vllm-routed", "--in", "big.npy", "--experts", E)
    np.save("other.npy", np.zeros((2, L, K + 1), dtype=np.int32))
    bad_convert(r"other.npy: header field shape: \[2, 3, 5\], but req/req_000.npy has 3 layers and topk 4",
                "--from", "vllm-routed", "--in", "req/req_000.npy", "other.npy", "--experts", E)
    data = open("req/req_001.npy", "rb").read()
    open("cut.npy", "wb").write(data[:-10])
    bad_convert(r"cut.npy: truncated data: ", "--from", "vllm-routed", "--in", "cut.npy", "--experts", E)
    bad_convert(r"--weights-are gates: vLLM routed_experts arrays carry no weights", "--from", "vllm-routed", "--in",
                "req", "--experts", E, "--weights-are", "gates")
    bad_convert(r"needs --experts E", "--from", "vllm-routed", "--in", "req")

# ------------------------------------------------------------------------------------------------ weights
def case_weights():
    """--weights-are is checked against the recorded weights (jsonl, csv) and shown by trace info."""
    def jsonl(name, rows):
        with open(name, "w") as f:
            for i, w in enumerate(rows):
                f.write(json.dumps({"layer": 0, "pos": i, "ids": list(range(len(w))), "w": w}) + "\n")
    jsonl("p.jsonl", [[0.5, 0.3], [0.6, 0.39]])
    args = ["--from", "jsonl", "--experts", "8", "--field", "experts=ids", "--field", "weights=w"]
    for kind in ("probabilities", "gates", "unknown"):
        convert(*args, "--in", "p.jsonl", "--weights-are", kind, "--out", kind + ".h5")
        info = run([MB, "trace", "info", kind + ".h5"]).stdout
        check("(weights: %s)" % kind in info, "info shows weights: " + kind)
        with h5py.File(kind + ".h5") as f:
            check(attr(f, "weights_are") == kind, "attribute weights_are")
    bad_convert(r"p.jsonl: line 1: field weights \(key 'w'\): token 0: weights sum to 0.800000, not 1 "
                r"\(--weights-are renormalized", *args, "--in", "p.jsonl", "--weights-are", "renormalized")
    jsonl("r.jsonl", [[0.5, 0.5], [0.7, 0.3005], [0.9, 0.2]])
    convert(*args, "--in", "r.jsonl", "--weights-are", "gates", "--out", "r.h5")
    bad_convert(r"r.jsonl: line 3: field weights \(key 'w'\): token 0: weights sum to 1.100000 > 1 "
                r"\(--weights-are probabilities", *args, "--in", "r.jsonl", "--weights-are", "probabilities")
    jsonl("g.jsonl", [[0.5, 0.5], [1.5, 0.2]])
    bad_convert(r"g.jsonl: line 2: field weights \(key 'w'\): token 0: weight 1.500000 \(slot 0\) is outside \[0, 1\] "
                r"\(--weights-are gates\)", *args, "--in", "g.jsonl", "--weights-are", "gates")
    jsonl("n.jsonl", [[0.5, 0.5]])
    bad_convert(r"--weights-are probabilities: the records have no weights", "--from", "jsonl", "--experts", "8",
                "--field", "experts=ids", "--in", "n.jsonl", "--weights-are", "probabilities")
    # CSV (FLAME's layout): a row of probabilities summing past 1.
    with open("p.csv", "w") as f:
        f.write("layer_id,token_id,expert_0,expert_1,expert_2,expert_3\n0,0,0.5,0,0.25,0\n0,1,0,0.7,0,0.4\n")
    convert("--from", "csv", "--in", "p.csv", "--weights-are", "gates", "--out", "c.h5")
    bad_convert(r"p.csv: line 3: fields expert_\*: weights sum to 1.100000 > 1 \(--weights-are probabilities",
                "--from", "csv", "--in", "p.csv", "--weights-are", "probabilities")

# ----------------------------------------------------------------------------------------- layer mismatch
def case_layer_mismatch():
    """--layer-mismatch error|intersect on per-layer records (jsonl, vllm-routed), duplicated records."""
    E = 8
    rng = np.random.default_rng(3)
    recs, truth = [], {}
    for step in range(2):
        for layer in (2, 4, 6):
            for seq in (10, 11):
                for pos in range(3):
                    if (step, layer, seq, pos) in ((0, 4, 11, 1), (1, 6, 10, 0), (1, 6, 10, 2)):
                        continue  # the logger missed these
                    ids = rng.permutation(E)[:2].tolist()
                    truth[(step, layer, seq, pos)] = ids
                    recs.append({"step": step, "layer": layer, "req": seq, "pos": pos, "ids": ids})
    rng.shuffle(recs[:9])  # record order inside a step does not matter (sorted by sequence, position)
    recs.sort(key=lambda r: r["step"])
    with open("m.jsonl", "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    args = ["--from", "jsonl", "--in", "m.jsonl", "--experts", E, "--field", "experts=ids", "--field", "layer=layer",
            "--field", "step=step", "--field", "sequence=req", "--field", "position=pos"]
    bad_convert(r"m.jsonl: step 0: the layers hold different tokens: layer 2 has 6, layer 4 has 5 of the step's 6 "
                r"\(5 in every layer\); --layer-mismatch intersect keeps those", *args)
    out = convert(*args, "--layer-mismatch", "intersect", "--out", "i.h5")
    check("dropped tokens missing from other layers of their step: layer 2: 3, layer 4: 2, layer 6: 1" in out,
          "intersect prints what it dropped per layer")
    # independent computation: the keys every layer has, per step, in (sequence, position) order
    keep = []
    for step in range(2):
        keys = sorted({(s, q, p) for (s, l, q, p) in truth if s == step})
        keep += [k for k in keys if all((k[0], l, k[1], k[2]) in truth for l in (2, 4, 6))]
    with h5py.File("i.h5") as f:
        seq, pos = f["tokens/sequence"][...], f["tokens/position"][...]
        check(list(zip(seq, pos)) == [(q, p) for (_, q, p) in keep], "kept tokens %s" % list(zip(seq, pos)))
        offs = f["steps/offset"][...]
        check(list(offs) == [0, 5, 9], "steps %s" % offs)
        ids = f["expert_ids"][...]
        for li, layer in enumerate((2, 4, 6)):
            want = [truth[(s, layer, q, p)] for (s, q, p) in keep]
            check(ids[li].tolist() == want, "layer %d ids" % layer)
    bad_convert(r"--layer-mismatch per-layer: not implemented yet", *args, "--layer-mismatch", "per-layer")
    bad_convert(r"--layer-mismatch intersect: needs a token identity", "--from", "jsonl", "--in", "m.jsonl",
                "--experts", E, "--field", "experts=ids", "--field", "layer=layer", "--layer-mismatch", "intersect")
    # The same (sequence, position, layer) twice: both lines named.
    lines = open("m.jsonl").read().splitlines()
    dup = json.loads(lines[0])
    lines.insert(4, json.dumps(dup))
    open("d.jsonl", "w").write("\n".join(lines) + "\n")
    bad_convert(r"d.jsonl: line 1 and d.jsonl: line 5: step 0: layer %d: sequence %d position %d is recorded twice"
                % (dup["layer"], dup["req"], dup["pos"]), *(["--in", "d.jsonl"] + args[3:] + ["--from", "jsonl"]))
    # vllm-routed: a token with an empty row (all -1) in one layer.
    a = np.array([[[1, 2], [3, 4]], [[5, 6], [-1, -1]], [[0, 1], [2, 3]]], dtype=np.int32)
    np.save("r0.npy", a)
    bad_convert(r"r0.npy: step 0: the layers hold different tokens: layer 0 has 3, layer 1 has 2 of the step's 3",
                "--from", "vllm-routed", "--in", "r0.npy", "--experts", E)
    out = convert("--from", "vllm-routed", "--in", "r0.npy", "--experts", E, "--layer-mismatch", "intersect", "--out", "v.h5")
    check("layer 0: 1, layer 1: 0" in out, "vllm intersect summary")
    with h5py.File("v.h5") as f:
        check(list(f["tokens/position"][...]) == [0, 2], "token 1 dropped")
        check(f["expert_ids"][...].tolist() == [[[1, 2], [0, 1]], [[3, 4], [2, 3]]], "vllm intersect ids")

# ------------------------------------------------------------------------------------------------- sglang
def case_sglang():
    """SGLang per_token dumps (torch.save dicts, one per rank) through workloads/capture/sglang_to_moebench.py."""
    try:
        import torch
    except ImportError:
        print("SKIP: no torch")
        sys.exit(77)
    script = os.path.join(ROOT, "workloads", "capture", "sglang_to_moebench.py")
    L, P, K = 3, 6, 2  # layer 0 is dense (never recorded); 6 physical slots for 4 logical experts
    phys = torch.tensor([[0, 1, 2, 3, 0, 1]] * L, dtype=torch.int64)
    rng = np.random.default_rng(5)
    want = {}  # (fp, rank) -> logical ids [L, T, K]

    def record(fp, rank, lens):
        n = sum(lens) if lens else 3
        t = torch.full((L, n, 8), -1, dtype=torch.int32)  # SGLang pads to its _TOP_K_NUM = 8 slots
        for l in (1, 2):
            for i in range(n):
                # K distinct logical experts, each through one of its physical replicas (logical e: e, e + 4)
                t[l, i, :K] = torch.tensor([e + 4 * int(rng.integers(2)) if e < 2 else e
                                            for e in rng.permutation(4)[:K]], dtype=torch.int32)
        want[(fp, rank)] = phys[0][t.clamp(min=0).long()].masked_fill(t < 0, -1)
        pos = [p for length in (lens or [1] * n) for p in range(length)]
        return {"forward_pass_id": fp, "rank": rank, "gatherer_key": "primary", "input_ids": list(range(100, 100 + n)),
                "positions": pos, "extend_seq_lens": lens, "forward_mode": 1, "topk_ids_of_layer": t,
                "misc_objects": [], "global_physical_count": torch.zeros(L, P, dtype=torch.int32)}
    torch.save({"records": [record(0, 0, [2, 1]), record(1, 0, None)], "last_physical_to_logical_map": phys}, "r0.pt")
    torch.save({"records": [record(0, 1, [2]), record(1, 1, None)], "last_physical_to_logical_map": phys}, "r1.pt")
    p = run([sys.executable, script, "--in", "r0.pt", "r1.pt", "--out", "s.h5", "--moebench", MB])
    check(p.returncode == 0, "sglang conversion")
    with h5py.File("s.h5") as f:
        check(attr(f, "num_experts") == 4, "logical experts from the map")
        check(list(f.attrs["layer_ids"]) == [1, 2], "the dense layer 0 is left out")
        check(list(f["steps/offset"][...]) == [0, 5, 11], "steps = forward passes: %s" % f["steps/offset"][...])
        check(list(f["tokens/rank"][...]) == [0, 0, 0, 1, 1] + [0] * 3 + [1] * 3, "ranks")
        check(list(f["tokens/position"][...]) == [0, 1, 0, 0, 1] + [0] * 6, "positions")
        seq = list(f["tokens/sequence"][...])
        # a fresh id per request of each pass, numbered file by file: r0.pt passes 0, 1 then r1.pt passes 0, 1
        check(seq == [0, 0, 1, 5, 5, 2, 3, 4, 6, 7, 8], "sequences %s (decode pass: one a token)" % seq)
        check(list(f["tokens/token_id"][...]) == [100, 101, 102, 100, 101] + [100, 101, 102] * 2, "token ids")
        ids = f["expert_ids"][...]
        for li, l in enumerate((1, 2)):
            w = torch.cat([want[(0, 0)][l], want[(0, 1)][l], want[(1, 0)][l], want[(1, 1)][l]])[:, :K]
            check(ids[li].tolist() == w.tolist(), "layer %d: logical ids" % l)
    # Malformed input: one line naming file, record and field; no output.
    def bad(regex, data, name="bad.pt"):
        if data is not None:
            torch.save(data, name)
        expect_error(regex, [sys.executable, script, "--in", name, "--out", "bad.h5", "--moebench", MB])
    r = record(0, 0, [3])
    bad(r"bad.pt: field last_physical_to_logical_map is missing", {"records": [r]})
    r64 = dict(r, topk_ids_of_layer=r["topk_ids_of_layer"].long())
    bad(r"bad.pt: record 0: field topk_ids_of_layer: dtype torch.int64, expected torch.int32",
        {"records": [r64], "last_physical_to_logical_map": phys})
    r2 = dict(r, topk_ids_of_layer=r["topk_ids_of_layer"][1])
    bad(r"bad.pt: record 0: field topk_ids_of_layer: 2 dimensions", {"records": [r2], "last_physical_to_logical_map": phys})
    g = r["topk_ids_of_layer"].clone()
    g[2, 1, :3] = torch.tensor([4, -1, 5])
    bad(r"bad.pt: record 0: field topk_ids_of_layer: layer 2 token 1: an id follows -1",
        {"records": [dict(r, topk_ids_of_layer=g)], "last_physical_to_logical_map": phys})
    o = r["topk_ids_of_layer"].clone()
    o[1, 2, 0] = 6
    bad(r"bad.pt: record 0: field topk_ids_of_layer: layer 1 token 2: physical expert id 6 outside the map's \[0, 6\)",
        {"records": [dict(r, topk_ids_of_layer=o)], "last_physical_to_logical_map": phys})
    nokey = dict(r)
    del nokey["positions"]
    bad(r"bad.pt: record 0: field positions is missing", {"records": [nokey], "last_physical_to_logical_map": phys})
    open("cut.pt", "wb").write(open("r0.pt", "rb").read()[:200])
    bad(r"cut.pt: cannot load \(truncated", None, "cut.pt")
    # A token missed in layer 2 only: a layer mismatch; intersect drops it.
    m = r["topk_ids_of_layer"].clone()
    m[2, 0, :] = -1
    torch.save({"records": [dict(r, topk_ids_of_layer=m)], "last_physical_to_logical_map": phys}, "miss.pt")
    bad(r"\(forward passes of miss.pt\): step 0: the layers hold different tokens: layer 1 has 3, layer 2 has 2",
        None, "miss.pt")
    p = run([sys.executable, script, "--in", "miss.pt", "--out", "i.h5", "--moebench", MB, "--layer-mismatch", "intersect"])
    check(p.returncode == 0 and "layer 1: 1, layer 2: 0" in p.stdout, "intersect")
    with h5py.File("i.h5") as f:
        check(list(f["tokens/position"][...]) == [1, 2], "the missed token is dropped")

def main():
    global MB
    if len(sys.argv) != 4:
        print(__doc__)
        sys.exit(2)
    case, work, MB = sys.argv[1], sys.argv[2], os.path.abspath(sys.argv[3])
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.chdir(work)
    fn = globals().get("case_" + case)
    if fn is None:
        fail("unknown case " + case)
    fn()
    print("PASS:", case)


if __name__ == "__main__":
    main()
