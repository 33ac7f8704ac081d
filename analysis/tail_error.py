#!/usr/bin/env python3
"""The measured error of tail completion (--trace-tail), router by router.

    analysis/tail_error.py [--moebench build/release/moebench] [--work DIR] [--sources zipf,lognormal,capture]
                           [--models mass,profile] [--top-k 6] [--experts 64] [--tokens 4096] [--steps 2]
                           [--layers 2] [--routers ...] [--json OUT.json] [--markdown]

For every source of full router logits, the script writes the full-logit trace, truncates it to the top-k
trace a logger would have written (`moebench trace truncate --weights-are probabilities`), completes that
under every tail model (`--trace-tail MODEL`), runs every router on the full trace and on each completed
copy (same cluster, same seed) and prints, per router and model, the relative error of what the completed
replay reports against the truth:

    max/mean   expert load max/mean (expert_imbalance), mean over steps and layers
    drop       drop rate
    inter      inter-node dispatch bytes
    dispatch   modelled dispatch time
    claim      the router's own figures (ETR's C_ETR/C_base, KERN's free sparsity, ...) and its experts per
               token and max tokens per expert

Relative error = (completed - full) / |full|; when the full value is 0 the absolute difference is shown
(suffix "abs"). Sources: `zipf` and `lognormal` (moebench trace gen) and `capture` (a small PyTorch MoE,
written by workloads/capture/capture_router_trace.py; needs torch, skipped with a note when absent).
Exit 0 when the table was made, 2 on a bad argument or a failed command (the command is named).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import pyenv  # noqa: E402

pyenv.require(("h5py", "numpy"), missing_exit=3)

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402

ALL_ROUTERS = ["softmax_topk", "sigmoid_topk", "deepseek_v3", "kern", "etr", "lapsum", "remoe", "expert_choice",
               "sinkhorn", "base", "beta"]
METRICS = [("max/mean", "expert_imbalance"), ("drop", "drop_rate"), ("inter", "bytes_inter"),
           ("dispatch", "model_dispatch_s")]
EXTRA_CLAIM_FIELDS = ["mean_active_experts", "max_tokens_per_expert"]
CAPTURE = os.path.join(ROOT, "workloads", "capture", "capture_router_trace.py")
SMALL_MOE = os.path.join(HERE, "tail_error_moe.py")


def fail(msg):
    sys.stderr.write("tail_error.py: error: %s\n" % msg)
    sys.exit(2)


def run(cmd, quiet=True):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        fail("command failed (exit %d): %s\n%s%s" % (p.returncode, " ".join(shlex.quote(c) for c in cmd),
                                                     p.stdout[-2000:], p.stderr[-2000:]))
    if not quiet:
        sys.stdout.write(p.stdout)
    return p.stdout


def summary(path, routers):
    """Per router: the mean of each metric and figure over every (step, layer)."""
    out = {}
    with h5py.File(path, "r") as f:
        done = int(f.attrs["steps_done"])
        for r in routers:
            g = f["runs"][r]
            row = {"tail_completed": int(g.attrs.get("tail_completed", 0))}
            for _, name in METRICS:
                row[name] = float(np.mean(g[name][:done]))
            for name in EXTRA_CLAIM_FIELDS:
                row[name] = float(np.mean(g[name][:done]))
            if "figures" in g:
                for name in g["figures"]:
                    v = g["figures"][name][:done]
                    v = v[~np.isnan(v)]
                    row["figure:" + name] = float(np.mean(v)) if v.size else float("nan")
            out[r] = row
    return out


def rel_error(full, got):
    if math.isnan(full) and math.isnan(got):
        return 0.0, False
    if math.isnan(full) or math.isnan(got):
        return float("nan"), False
    if full == 0:
        return got - full, True
    return (got - full) / abs(full), False


def fmt_err(e, absolute):
    if math.isnan(e):
        return "n/a"
    return ("%+.3g abs" % e) if absolute else ("%+.1f%%" % (100 * e))


def make_sources(a, work):
    """{name: full-logit trace path}"""
    sources = {}
    for name in a.sources:
        path = os.path.join(work, "full-%s.h5" % name)
        if name in ("zipf", "lognormal", "layer_affinity", "uniform"):
            run([a.moebench, "trace", "gen", "--workload", name, "--experts", str(a.experts), "--top-k", str(a.top_k),
                 "--layers", str(a.layers), "--steps", str(a.steps), "--tokens", str(a.tokens), "--seq-len",
                 str(a.seq_len), "--seed", str(a.seed), "--dtype", "fp32", "--out", path, "--force"])
        elif name == "capture":
            if importlib.util.find_spec("torch") is None:
                print("note: source capture skipped: this interpreter (%s) has no torch (Debian: python3-torch)"
                      % sys.executable)
                continue
            run([sys.executable, CAPTURE, "--model-module", SMALL_MOE + ":build", "--model-arg",
                 "experts=%d" % a.experts, "--model-arg", "top_k=%d" % a.top_k, "--model-arg",
                 "tokens=%d" % (a.tokens * a.steps), "--model-arg", "steps=%d" % a.steps, "--model-arg",
                 "seq_len=%d" % a.seq_len, "--model-arg",
                 "layers=%d" % a.layers, "--model-arg", "seed=%d" % a.seed, "--preset", "mixtral", "--dtype", "fp32",
                 "--out", path, "--force"])
        else:
            fail("--sources: unknown source '%s' (known: zipf, lognormal, layer_affinity, uniform, capture)" % name)
        sources[name] = path
    return sources


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moebench", default=os.path.join(ROOT, "build", "release", "moebench"))
    ap.add_argument("--work", default="tail-error")
    ap.add_argument("--sources", default="zipf,lognormal,capture")
    ap.add_argument("--models", default="mass,profile")
    ap.add_argument("--routers", default=",".join(ALL_ROUTERS))
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=6)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=4096, help="tokens per step")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--ranks-per-node", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write every value and error here")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    ap.add_argument("--summary", action="store_true",
                    help="one markdown row per router and model, the four errors of every source side by side")
    a = ap.parse_args()
    a.sources = [s for s in a.sources.split(",") if s]
    a.models = [m for m in a.models.split(",") if m]
    routers = [r for r in a.routers.split(",") if r]
    for m in a.models:
        if m not in ("mass", "profile"):
            fail("--models: unknown tail model '%s' (known: mass, profile)" % m)
    if not os.access(a.moebench, os.X_OK):
        fail("--moebench %s: not an executable (build it: cmake --build --preset release)" % a.moebench)
    ranks = a.nodes * a.ranks_per_node
    if a.tokens // a.seq_len < ranks:  # every EP rank needs whole sequences of its own
        a.seq_len = max(1, a.tokens // ranks)
        print("note: --seq-len lowered to %d so that %d tokens per step fill %d EP ranks" % (a.seq_len, a.tokens, ranks))
    os.makedirs(a.work, exist_ok=True)
    common = ["--nodes", str(a.nodes), "--ranks-per-node", str(a.ranks_per_node), "--backend", "sim", "--seed",
              str(a.seed), "--progress", "off", "--top-k", str(a.top_k), "--routers", ",".join(routers), "--force"]
    # Every router is configured as in the full run; the labelled-workload figures do not apply here.
    results = {}
    for name, full in make_sources(a, a.work).items():
        trunc = os.path.join(a.work, "top%d-%s.h5" % (a.top_k, name))
        run([a.moebench, "trace", "truncate", full, "--top-k", str(a.top_k), "--weights-are", "probabilities",
             "--out", trunc, "--force"])
        full_out = os.path.join(a.work, "run-%s-full.h5" % name)
        run([a.moebench, "run", "--workload", "trace", "--trace", full, "--out", full_out] + common)
        truth = summary(full_out, routers)
        results[name] = {"full": truth}
        for m in a.models:
            out = os.path.join(a.work, "run-%s-%s.h5" % (name, m))
            run([a.moebench, "run", "--workload", "trace", "--trace", trunc, "--trace-tail", m, "--out", out] + common)
            results[name][m] = summary(out, routers)
    rows = []
    for name, by in results.items():
        for r in routers:
            for m in a.models:
                t, c = by["full"][r], by[m][r]
                cells = {}
                for label, field in METRICS:
                    cells[label] = rel_error(t[field], c[field])
                claims = {}
                for key in sorted(t):
                    if key.startswith("figure:") or key in EXTRA_CLAIM_FIELDS:
                        claims[key.replace("figure:", "")] = rel_error(t[key], c.get(key, float("nan")))
                rows.append({"source": name, "router": r, "model": m, "tail_completed": c["tail_completed"],
                             "errors": {k: v[0] for k, v in cells.items()},
                             "absolute": {k: v[1] for k, v in cells.items()},
                             "claim_errors": {k: v[0] for k, v in claims.items()},
                             "claim_absolute": {k: v[1] for k, v in claims.items()},
                             "full": t, "completed": c})
    if a.summary:
        print_summary(rows, list(results), routers, a.models)
        rows_out(a, rows, results, routers)
        return 0
    head = ["source", "router", "model", "completed"] + [l for l, _ in METRICS] + ["claim figures"]
    if a.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    else:
        print("%-10s %-14s %-8s %-9s %10s %10s %10s %10s  %s" % tuple(head))
    for row in rows:
        cells = [fmt_err(row["errors"][l], row["absolute"][l]) for l, _ in METRICS]
        claims = ", ".join("%s %s" % (k, fmt_err(v, row["claim_absolute"][k])) for k, v in row["claim_errors"].items())
        done = "yes" if row["tail_completed"] else "no"
        if a.markdown:
            print("| " + " | ".join([row["source"], row["router"], row["model"], done] + cells + [claims]) + " |")
        else:
            print("%-10s %-14s %-8s %-9s %10s %10s %10s %10s  %s" % tuple([row["source"], row["router"], row["model"],
                                                                          done] + cells + [claims]))
    rows_out(a, rows, results, routers)
    return 0


def print_summary(rows, sources, routers, models):
    by = {(r["source"], r["router"], r["model"]): r for r in rows}
    head = ["router", "model"] + ["%s %s" % (s, l) for s in sources for l, _ in METRICS]
    print("| " + " | ".join(head) + " |")
    print("|---|---|" + "---:|" * (len(head) - 2))
    for r in routers:
        for m in models:
            cells = []
            for s in sources:
                row = by[(s, r, m)]
                cells += [fmt_err(row["errors"][l], row["absolute"][l]) for l, _ in METRICS]
            print("| " + " | ".join([r, m] + cells) + " |")


def rows_out(a, rows, results, routers):
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"top_k": a.top_k, "experts": a.experts, "sources": list(results), "models": a.models,
                       "routers": routers, "rows": rows}, f, indent=1, default=float)


if __name__ == "__main__":
    sys.exit(main())
