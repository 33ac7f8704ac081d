#!/usr/bin/env python3
"""Tests of workloads/capture/capture_router_trace.py, one case per call:

    test_capture.py CASE WORKDIR [MOEBENCH]     CASE: library cli hf errors no_python replay

Runs under an interpreter with torch, h5py and numpy (re-executes itself under /usr/bin/python3 or a
python3.N on PATH that has them); exits 77 (ctest skip) when there is none.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

NEEDED = ("torch", "h5py", "numpy")


def _reexec_or_skip():
    if all(importlib.util.find_spec(m) for m in NEEDED):
        return
    if os.environ.get("MOEBENCH_TEST_CAPTURE_REEXEC") != "1":
        candidates = ["/usr/bin/python3"] + [shutil.which("python3.%d" % n) for n in range(20, 7, -1)]
        probe = "import importlib.util as u, sys; sys.exit(0 if all(u.find_spec(m) for m in %r) else 1)" % (NEEDED,)
        for python in filter(None, candidates):
            if os.access(python, os.X_OK) and subprocess.run([python, "-c", probe]).returncode == 0:
                os.environ["MOEBENCH_TEST_CAPTURE_REEXEC"] = "1"
                os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])
    print("SKIP: no Python interpreter with torch, h5py and numpy (Debian: apt-get install python3-torch "
          "python3-h5py python3-numpy)")
    sys.exit(77)


_reexec_or_skip()

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "workloads", "capture", "capture_router_trace.py")
sys.path.insert(0, os.path.dirname(SCRIPT))
sys.path.insert(0, HERE)
import capture_router_trace as crt  # noqa: E402
import toy_moe  # noqa: E402

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL: " + what)


def run_cli(args, env=None, python=None):
    e = dict(os.environ)
    e.pop("MOEBENCH_CAPTURE_REEXEC", None)
    e.update(env or {})
    cmd = (python or [sys.executable]) + [SCRIPT] + args
    p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=120)
    return p.returncode, p.stdout, p.stderr


def attr(f, name):
    v = f.attrs[name]
    return v.decode() if isinstance(v, bytes) else v


# ---------------------------------------------------------------- reference and checker

def reference(model, batches):
    """Per step: (logits per MoE layer [B, S, E] as logged by the gates themselves, mask, ids, domain)."""
    for log in model.logit_log.values():
        log.clear()
    model.eval()
    with torch.no_grad():
        for b in batches:
            model(b) if isinstance(b, torch.Tensor) else model(b["input_ids"], attention_mask=b["attention_mask"])
    steps = []
    for i, b in enumerate(batches):
        ids = b if isinstance(b, torch.Tensor) else b["input_ids"]
        mask = torch.ones_like(ids) if isinstance(b, torch.Tensor) else b["attention_mask"]
        domain = None if isinstance(b, torch.Tensor) or "domain" not in b else b["domain"][:, None].expand_as(ids)
        steps.append(([model.logit_log[l][i].numpy() for l in model.moe_layers], mask.numpy() != 0, ids.numpy(),
                      None if domain is None else domain.numpy()))
    return steps


def check_trace(path, steps, layer_ids, top_k, dtype, model_name, source, with_ids=True, with_domain=True,
                exact=False):
    tag = os.path.basename(path)
    check(os.path.exists(path) and not os.path.exists(path + ".tmp"), "%s: written, no .tmp left" % tag)
    E, L, S = 8, len(layer_ids), len(steps)
    counts = [int(m.sum()) for _, m, _, _ in steps]
    T = sum(counts)
    with h5py.File(path, "r") as f:
        for name, want in (("format", "moebench-trace"), ("kind", "logits"), ("model", model_name),
                           ("source", source), ("weights_are", "")):
            check(attr(f, name) == want, "%s: attribute %s = %r, want %r" % (tag, name, attr(f, name), want))
        for name in ("capture_method", "created_by"):
            check(isinstance(attr(f, name), str) and len(attr(f, name)) > 0, "%s: attribute %s empty" % (tag, name))
        check("capture_router_trace.py" in attr(f, "created_by"), "%s: created_by names the script" % tag)
        for name, want in (("format_version", 1), ("num_experts", E), ("num_layers", L), ("num_steps", S),
                           ("num_tokens", T), ("top_k", top_k), ("variable_k", 0), ("has_sequences", 1)):
            v = f.attrs[name]
            check(v.dtype == np.int64 and v.shape == () and int(v) == want,
                  "%s: attribute %s = %r (%s), want int64 %d" % (tag, name, v, v.dtype, want))
        check(f.attrs["layer_ids"].dtype == np.int64 and list(f.attrs["layer_ids"]) == layer_ids,
              "%s: layer_ids %s, want %s" % (tag, list(f.attrs["layer_ids"]), layer_ids))
        want_sets = {"step": np.int32, "sequence": np.int64, "position": np.int32}
        if with_ids:
            want_sets["token_id"] = np.int64
        if with_domain:
            want_sets["domain"] = np.int32
        check(sorted(f["tokens"].keys()) == sorted(want_sets), "%s: /tokens has %s" % (tag, sorted(f["tokens"].keys())))
        for name, dt in want_sets.items():
            d = f["tokens"][name]
            check(d.dtype == dt and d.shape == (T,), "%s: /tokens/%s %s %s" % (tag, name, d.dtype, d.shape))
        z = f["logits"]
        check(z.dtype == dtype and z.shape == (L, T, E), "%s: /logits %s %s" % (tag, z.dtype, z.shape))
        check(z.chunks is not None and z.chunks[0] == 1 and z.chunks[1] <= 65536 and z.chunks[2] == E,
              "%s: /logits chunks %s" % (tag, z.chunks))
        check(z.compression == "gzip" and z.shuffle, "%s: /logits compression %s shuffle %s"
              % (tag, z.compression, z.shuffle))
        offset = f["steps/offset"][:]
        check(f["steps/offset"].dtype == np.int64 and list(offset) == list(np.concatenate([[0], np.cumsum(counts)])),
              "%s: /steps/offset %s, tokens per step %s" % (tag, list(offset), counts))
        step = f["tokens/step"][:]
        seq = f["tokens/sequence"][:]
        pos = f["tokens/position"][:]
        logits = z[:].astype(np.float32)
        tok = f["tokens/token_id"][:] if with_ids else None
        dom = f["tokens/domain"][:] if with_domain else None
    seen = set()
    worst = 0.0
    for s, (ref, mask, ids, domain) in enumerate(steps):
        lo, hi = offset[s], offset[s + 1]
        check((step[lo:hi] == s).all(), "%s: /tokens/step in step %d" % (tag, s))
        rows = [b for b in range(mask.shape[0]) if mask[b].any()]
        seq_ids = list(dict.fromkeys(seq[lo:hi].tolist()))
        check(len(seq_ids) == len(rows), "%s: step %d has %d sequences, want %d" % (tag, s, len(seq_ids), len(rows)))
        check(not (set(seq_ids) & seen), "%s: step %d reuses sequence ids" % (tag, s))
        seen.update(seq_ids)
        keys = list(zip(seq[lo:hi].tolist(), pos[lo:hi].tolist()))
        check(keys == sorted(keys) and len(set(keys)) == len(keys), "%s: step %d not ordered by sequence, position"
              % (tag, s))
        t = lo
        for b, sid in zip(rows, seq_ids):
            for p, c in enumerate(np.nonzero(mask[b])[0]):
                ok = seq[t] == sid and pos[t] == p
                ok = ok and (tok is None or tok[t] == ids[b, c]) and (dom is None or dom[t] == domain[b, c])
                if not ok:
                    check(False, "%s: token %d (step %d row %d col %d): sequence %d position %d" % (tag, t, s, b, c,
                                                                                                  seq[t], pos[t]))
                for li in range(L):
                    want = ref[li][b, c]
                    got = logits[li, t]
                    worst = max(worst, float(np.max(np.abs(got - want) / (np.abs(want) + 1e-2))))
                    tol = dict(rtol=1e-6, atol=1e-6) if exact else dict(rtol=1e-3, atol=2e-3)
                    if not np.allclose(got, want, **tol):
                        check(False, "%s: logits layer %d token %d differ: %s vs %s" % (tag, li, t, got, want))
                t += 1
    print("%s: %d steps, %d layers, %d tokens checked; worst relative logit error %.2e" % (tag, S, L, T, worst))


# ---------------------------------------------------------------- cases

def case_library(work):
    for style, preset, layers, first_dense in (("mixtral", "mixtral", 4, 0), ("deepseek", "deepseek", 4, 1)):
        model = toy_moe.ToyMoeModel(style=style, layers=layers, first_dense=first_dense)
        batches = toy_moe.make_batches(3)
        steps = reference(model, batches)
        for dtype, np_dtype in (("fp16", np.float16), ("fp32", np.float32)):
            rec = crt.TraceRecorder(model, preset=preset, dtype=dtype)
            check(rec.layer_ids == model.moe_layers, "%s: layer ids %s, want %s" % (style, rec.layer_ids,
                                                                                   model.moe_layers))
            check(rec.top_k == 2, "%s: top_k found on the gates: %d" % (style, rec.top_k))
            with torch.no_grad(), rec:
                for b in batches:  # input_ids positionally, the mask as a keyword
                    with rec.step(input_ids=b["input_ids"], attention_mask=b["attention_mask"], domain=b["domain"]):
                        model(b["input_ids"], attention_mask=b["attention_mask"])
            check(all(not m._forward_hooks for _, m in model.named_modules()), "%s: hooks removed" % style)
            path = os.path.join(work, "%s_%s.h5" % (style, dtype))
            summary = rec.write(path, model="toy-" + style, source="make_batches(3)")
            check(summary["tokens"] == sum(int(b["attention_mask"].sum()) for b in batches), "%s: summary %s"
                  % (style, summary))
            check_trace(path, steps, model.moe_layers, 2, np_dtype, "toy-" + style, "make_batches(3)",
                        exact=dtype == "fp32")
            # Refuses to overwrite; force overwrites.
            try:
                rec.write(path)
                check(False, "%s: write over an existing file should fail" % style)
            except crt.CaptureError as e:
                check("file exists" in str(e), "%s: overwrite message: %s" % (style, e))
            rec.write(path, model="toy-" + style, source="make_batches(3)", force=True)
            check_trace(path, steps, model.moe_layers, 2, np_dtype, "toy-" + style, "make_batches(3)",
                        exact=dtype == "fp32")

    # Flattened gate input, no mask or ids given: the batch shape comes from the model's positional argument;
    # an explicit top_k wins; the step installs and removes the hooks by itself.
    model = toy_moe.ToyMoeModel(style="mixtral", layers=2)
    batches = toy_moe.make_batches(2, kind="tensor")
    steps = reference(model, batches)
    rec = crt.TraceRecorder(model, pattern=r"layers\.(?P<layer>\d+)\.block_sparse_moe\.gate$", top_k=3)
    with torch.no_grad():
        for b in batches:
            with rec.step():
                model(b)
    check(all(not m._forward_hooks for _, m in model.named_modules()), "step() removes the hooks it installed")
    path = os.path.join(work, "tensor_batches.h5")
    rec.write(path)
    check_trace(path, steps, [0, 1], 3, np.float16, "", "", with_ids=False, with_domain=False)


def case_cli(work):
    out = os.path.join(work, "cli_deepseek.h5")
    toy = os.path.join(HERE, "toy_moe.py")
    rc, so, se = run_cli(["--model-module", toy + ":build", "--model-arg", "style=deepseek", "--model-arg",
                          "first_dense=1", "--preset", "deepseek_v3", "--out", out, "--model", "toy-ds"])
    check(rc == 0, "cli deepseek: rc %d, stderr %s" % (rc, se))
    check("wrote %s: 3 steps, 3 layers (ids 1,2,3)" % out in so, "cli deepseek summary: %s" % so)
    model, batches = toy_moe.build(style="deepseek", first_dense=1)
    check_trace(out, reference(model, batches), [1, 2, 3], 2, np.float16, "toy-ds",
                toy + ":build --model-arg style=deepseek --model-arg first_dense=1")

    out = os.path.join(work, "cli_mixtral.h5")
    rc, so, se = run_cli(["--model-module", toy, "--model-arg", "kind=tensor", "--model-arg", "batches=2",
                          "--preset", "mixtral", "--dtype", "fp32", "--top-k", "2", "--num-experts", "8",
                          "--out", out, "--source", "unit test", "--quiet"])
    check(rc == 0 and se == "", "cli mixtral: rc %d, stderr %r" % (rc, se))
    model, batches = toy_moe.build(kind="tensor", batches=2)
    check_trace(out, reference(model, batches), [0, 1, 2, 3], 2, np.float32, "toy_moe", "unit test",
                with_ids=True, with_domain=False, exact=True)

    rc, so, se = run_cli(["--model-module", toy, "--model-arg", "style=deepseek", "--model-arg", "first_dense=1",
                          "--preset", "qwen2_moe", "--list-gates"])
    lines = so.strip().splitlines()
    check(rc == 0 and len(lines) == 4 and lines[0].startswith("layer 1  model.layers.1.mlp.gate  (MoEGate)")
          and "shared_expert_gate" not in so and "gate_proj" not in so, "--list-gates: rc %d %s %s" % (rc, so, se))


FAKE_TRANSFORMERS = """
# A stand-in for the transformers package: just what capture_router_trace.py --hf-model calls.
import sys, types
sys.path.insert(0, %r)
import toy_moe

class AutoTokenizer:
    pad_token_id = None
    eos_token_id = 1
    @classmethod
    def from_pretrained(cls, path, trust_remote_code=False):
        return cls()
    def __call__(self, text):
        return {"input_ids": [2 + ord(ch) %% 60 for ch in text]}

class AutoModelForCausalLM:
    @staticmethod
    def from_pretrained(path, torch_dtype=None, trust_remote_code=False):
        model = toy_moe.ToyMoeModel(style="deepseek", layers=3, first_dense=1)
        model.config = types.SimpleNamespace(model_type="deepseek_v3", num_experts_per_tok=2,
                                             _name_or_path="fake/" + path.rstrip("/").split("/")[-1])
        return model
"""


def case_hf(work):
    """--hf-model with a stand-in transformers package: tokenizing, cutting, padding, preset from model_type."""
    fake = os.path.join(work, "fake")
    os.makedirs(os.path.join(fake, "transformers"))
    with open(os.path.join(fake, "transformers", "__init__.py"), "w") as fh:
        fh.write(FAKE_TRANSFORMERS % HERE)
    text = os.path.join(work, "text.txt")
    with open(text, "w") as fh:
        fh.write("the quick brown fox\n\njumps over\nthe lazy dog, twice over\n")
    out = os.path.join(work, "hf.h5")
    rc, so, se = run_cli(["--hf-model", os.path.join(work, "toy-ds-hf"), "--text-file", text, "--seq-len", "8",
                          "--batch-size", "3", "--out", out], env={"PYTHONPATH": fake})
    check(rc == 0, "--hf-model: rc %d stderr %s" % (rc, se))
    sys.path.insert(0, fake)
    import transformers
    batches = crt.hf_batches(transformers.AutoTokenizer(), text, 8, 3)
    check([tuple(b["input_ids"].shape) for b in batches] == [(3, 8), (3, 8), (2, 8)]
          and [int(b["attention_mask"].sum()) for b in batches] == [19, 18, 16],
          "hf batches: %s" % [(tuple(b["input_ids"].shape), int(b["attention_mask"].sum())) for b in batches])
    model = transformers.AutoModelForCausalLM.from_pretrained("x")
    steps = [(r, m, i, None) for r, m, i, _ in reference(model, batches)]
    check_trace(out, steps, [1, 2], 2, np.float16, "fake/toy-ds-hf", text, with_domain=False)
    with h5py.File(out, "r") as f:
        check("preset deepseek" in attr(f, "capture_method"), "capture_method %r" % attr(f, "capture_method"))


def expect_capture_error(argv, needle, what):
    try:
        crt.main(argv)
        check(False, "%s: no error" % what)
    except crt.CaptureError as e:
        check(needle in str(e) and "\n" not in str(e), "%s: message %r lacks %r" % (what, str(e), needle))


def case_errors(work):
    toy = os.path.join(HERE, "toy_moe.py")
    out = os.path.join(work, "bad.h5")
    # As a user sees it: exit 2, one line naming the pattern, no file left behind.
    rc, so, se = run_cli(["--model-module", toy, "--pattern", r"layers\.\d+\.moe\.router$", "--out", out])
    check(rc == 2 and len(se.strip().splitlines()) == 1 and r"pattern 'layers\.\d+\.moe\.router$'" in se
          and "no module of ToyMoeModel matches" in se and "model.layers.0.block_sparse_moe.gate" in se,
          "no match: rc %d stderr %r" % (rc, se))
    check(not os.path.exists(out) and not os.path.exists(out + ".tmp"), "no match: a file was left")
    with open(out, "w") as fh:
        fh.write("keep me")
    rc, so, se = run_cli(["--model-module", toy, "--preset", "mixtral", "--out", out])
    check(rc == 2 and "bad.h5: file exists; refusing to overwrite" in se, "existing out: rc %d %r" % (rc, se))
    check(open(out).read() == "keep me", "existing out was modified")
    os.remove(out)

    expect_capture_error(["--model-module", toy, "--preset", "mixtral", "--out", os.path.join(work, "no", "t.h5")],
                         "/no does not exist", "missing output directory")
    expect_capture_error(["--model-module", toy, "--preset", "bogus", "--out", out], "preset 'bogus' is unknown",
                         "bad preset")
    expect_capture_error(["--model-module", os.path.join(work, "missing.py"), "--preset", "mixtral", "--out", out],
                         "missing.py: no such file", "missing module file")
    expect_capture_error(["--model-module", toy + ":nope", "--preset", "mixtral", "--out", out],
                         "has no function 'nope'", "missing function")
    expect_capture_error(["--model-module", toy, "--model-arg", "colour=red", "--preset", "mixtral", "--out", out],
                         "build(colour='red') does not fit its signature", "bad model arg")
    expect_capture_error(["--model-module", toy, "--preset", "mixtral", "--num-experts", "7", "--out", out],
                         "num_experts 7: the gates give logits over 8 experts", "wrong expert count")
    expect_capture_error(["--model-module", toy, "--pattern", "(", "--out", out], "not a valid regular expression",
                         "bad regex")
    expect_capture_error(["--model-module", toy, "--model-arg", "style=deepseek", "--pattern",
                          r"block_sparse_moe\.gate$", "--out", out],
                         "modules named like gates: model.layers.0.mlp.gate", "pattern of the wrong layout")
    if importlib.util.find_spec("transformers") is None:
        expect_capture_error(["--hf-model", work, "--text-file", toy, "--out", out],
                             "needs the Python package transformers", "no transformers")
    else:
        print("note: transformers is installed; its absence message is not tested")
    check(not os.path.exists(out) and not os.path.exists(out + ".tmp"), "an error left a file")

    # Library misuse.
    model = toy_moe.ToyMoeModel(style="deepseek", layers=2)
    try:
        crt.TraceRecorder(model, pattern=r"layers\.\d+\.mlp\.(gate|shared_expert_gate)$")
        check(False, "two gates per layer: no error")
    except crt.CaptureError as e:
        check("both map to layer 0" in str(e), "two gates per layer: %s" % e)
    model = toy_moe.ToyMoeModel(style="mixtral", layers=2)
    ids = torch.zeros(2, 3, dtype=torch.int64)
    rec = crt.TraceRecorder(model, preset="mixtral")
    def layers_only():  # the gates see [B*S, H], and the model itself is not called
        h = model.model.embed_tokens(ids)
        for layer in model.model.layers:
            h = layer(h)

    for what, run, needle in (
            ("unknown batch shape", layers_only, "batch shape is unknown"),
            ("two passes in one step", lambda: (model(ids), model(ids)), "ran 2 times"),
            ("no pass in a step", lambda: None, "ran 0 times")):
        try:
            with torch.no_grad(), rec.step():
                run()
            check(False, "%s: no error" % what)
        except crt.CaptureError as e:
            check(needle in str(e), "%s: %s" % (what, e))
    check(rec.num_steps == 0, "failed steps were recorded")
    try:
        rec.write(out)
        check(False, "write with no step: no error")
    except crt.CaptureError as e:
        check("nothing recorded" in str(e), "write with no step: %s" % e)
    with torch.no_grad(), rec.step(batch_shape=(2, 3)):
        layers_only()
    check(rec.num_steps == 1, "batch_shape= gives the shape of flattened gate input")



def case_no_python(work):
    # An interpreter without torch: `python -S` leaves site-packages out.
    lacks = subprocess.run([sys.executable, "-S", "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           capture_output=True, text=True).stdout.strip()
    if lacks != "True":
        print("SKIP: %s -S still finds torch; cannot test the interpreter search" % sys.executable)
        sys.exit(77)
    missing = os.path.join(work, "no", "python3")
    rc, so, se = run_cli(["--list-presets"], env={"MOEBENCH_CAPTURE_PYTHON": missing}, python=[sys.executable, "-S"])
    check(rc == 3 and "apt-get install python3-torch python3-h5py python3-numpy" in se
          and "%s (not found)" % missing in se and "lacks torch" in se and len(se.strip().splitlines()) == 1,
          "no interpreter: rc %d stderr %r" % (rc, se))
    check(so == "", "no interpreter: stdout %r" % so)
    # With one listed that has them, it re-executes itself there.
    rc, so, se = run_cli(["--list-presets"], env={"MOEBENCH_CAPTURE_PYTHON": missing + os.pathsep + sys.executable},
                         python=[sys.executable, "-S"])
    check(rc == 0 and "deepseek" in so, "re-exec: rc %d stdout %r stderr %r" % (rc, so, se))
    # Imported as a library without torch: an ImportError naming the packages.
    code = "import sys; sys.path.insert(0, %r); import capture_router_trace" % os.path.dirname(SCRIPT)
    p = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
    check(p.returncode != 0 and "ImportError" in p.stderr and "python3-torch python3-h5py python3-numpy" in p.stderr,
          "library import without torch: %r" % p.stderr[-300:])


def case_replay(work, moebench):
    if not moebench or not os.access(moebench, os.X_OK):
        print("SKIP: no moebench executable given")
        sys.exit(77)
    help_text = subprocess.run([moebench, "run", "--help"], capture_output=True, text=True).stdout
    if "--trace" not in help_text:
        print("SKIP: this moebench has no 'run --trace' yet; replay not tested")
        sys.exit(77)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    launchers = [("1 process", [])]
    if os.environ.get("MOEBENCH_MPIEXEC"):
        launchers.append(("2 processes", os.environ["MOEBENCH_MPIEXEC"].split() + ["-n", "2"]))
    traces = []
    for style, first_dense in (("mixtral", 0), ("deepseek", 1)):
        model, batches = toy_moe.build(style=style, first_dense=first_dense, batches=3)
        rec = crt.TraceRecorder(model, preset=style)
        crt.capture(model, batches, rec)
        trace = os.path.join(work, "replay_%s.h5" % style)
        rec.write(trace, model="toy-" + style, source="make_batches(3)")
        traces.append(trace)
        with h5py.File(trace, "r") as f:
            z = f["logits"][:].astype(np.float32)
            offset = f["steps/offset"][:]
            k = int(f.attrs["top_k"])
        check(k == 2, "%s: top_k attribute %d, want the toy model's 2" % (style, k))
        S, L, E = len(offset) - 1, z.shape[0], z.shape[2]
        # Expert demand per step and layer = top-k counts of the stored logits (softmax keeps the order),
        # on one process and on two (the sequences split over 2 EP ranks); E, k, layers, steps from the trace.
        for what, launcher in launchers:
            results = os.path.join(work, "results_%s_%s.h5" % (style, what.replace(" ", "_")))
            p = subprocess.run(launcher + [moebench, "run", "--workload", "trace", "--trace", trace, "--routers",
                                           "softmax_topk", "--progress", "off", "--out", results],
                               capture_output=True, text=True, env=env, timeout=120)
            print(p.stdout[-1500:], p.stderr[-1500:])
            check(p.returncode == 0, "%s, %s: moebench run --workload trace: rc %d" % (style, what, p.returncode))
            if p.returncode != 0:
                continue
            with h5py.File(results, "r") as f:
                demand = f["runs/softmax_topk/expert_demand"][:]
            check(demand.shape == (S, L, E), "%s, %s: expert_demand shape %s, want %s"
                  % (style, what, demand.shape, (S, L, E)))
            if demand.shape != (S, L, E):
                continue
            for s in range(S):
                for l in range(L):
                    top = np.argsort(-z[l, offset[s]:offset[s + 1]], axis=1, kind="stable")[:, :k]
                    want = np.bincount(top.reshape(-1), minlength=E)
                    check((demand[s, l] == want).all(), "%s, %s, step %d layer %d: demand %s, top-%d of the trace %s"
                          % (style, what, s, l, demand[s, l].tolist(), k, want.tolist()))
    print("replayed %s with moebench on %s" % (", ".join(traces), " and ".join(w for w, _ in launchers)))


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    case, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    cases = {"library": case_library, "cli": case_cli, "hf": case_hf, "errors": case_errors,
             "no_python": case_no_python,
             "replay": lambda w: case_replay(w, sys.argv[3] if len(sys.argv) > 3 else None)}
    if case not in cases:
        print("unknown case %r (known: %s)" % (case, ", ".join(cases)))
        return 2
    cases[case](work)
    if failures:
        print("%d check(s) failed in case %s" % (len(failures), case))
        return 1
    print("case %s: all checks passed" % case)
    return 0


if __name__ == "__main__":
    sys.exit(main())
