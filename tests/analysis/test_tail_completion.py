#!/usr/bin/env python3
"""End-to-end tests of tail completion (--trace-tail), `moebench trace truncate` and analysis/tail_error.py.

    test_tail_completion.py CASE --moebench PATH --work DIR      CASE: truncate identity determinism report error_table

Traces come from `moebench trace gen` (full logits) and `moebench trace truncate`; every check recomputes
what it compares from the raw datasets with h5py/numpy. Exit 0 pass, 1 fail, 77 skip (a package is missing).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "analysis"))
import pyenv  # noqa: E402

pyenv.require(("h5py", "numpy"), missing_exit=77)

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402

MPIEXEC = shlex.split(os.environ.get("MOEBENCH_MPIEXEC", "mpiexec --oversubscribe"))
E, K = 16, 4
ALL = "softmax_topk,sigmoid_topk,deepseek_v3,kern,etr,lapsum,remoe,expert_choice,sinkhorn,base,beta"
COUNTS = ["expert_demand", "expert_load", "rank_load", "rank_send_bytes", "dropped", "kept_assignments",
          "max_tokens_per_expert", "bytes_inter", "bytes_intra"]


class Fail(Exception):
    pass


def text(v):
    return v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v)


def check(cond, what):
    if not cond:
        raise Fail(what)


def sh(cmd, ok=(0,)):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if p.returncode not in ok:
        raise Fail("exit %d from %s\nstdout: %s\nstderr: %s" % (p.returncode, " ".join(cmd), p.stdout[-2000:],
                                                                p.stderr[-2000:]))
    return p


def traces(a):
    full = os.path.join(a.work, "full.h5")
    top = os.path.join(a.work, "top%d.h5" % K)
    if not os.path.exists(top):
        sh([a.moebench, "trace", "gen", "--workload", "zipf", "--experts", str(E), "--top-k", str(K), "--layers", "2",
            "--steps", "2", "--tokens", "512", "--seq-len", "64", "--dtype", "fp32", "--out", full, "--force"])
        sh([a.moebench, "trace", "truncate", full, "--top-k", str(K), "--weights-are", "probabilities", "--out", top,
            "--force"])
    return full, top


def run(a, trace, out, routers, extra=(), np_=1, top_k=K):
    cmd = ([] if np_ == 1 else MPIEXEC + ["-n", str(np_)]) + [
        a.moebench, "run", "--workload", "trace", "--trace", trace, "--routers", routers, "--top-k", str(top_k),
        "--nodes", "2", "--ranks-per-node", "2", "--backend", "sim", "--progress", "off", "--out", out, "--force"]
    sh(cmd + list(extra))
    return out


def counts(path, router):
    with h5py.File(path, "r") as f:
        g = f["runs"][router]
        return {n: np.asarray(g[n][:]) for n in COUNTS}, int(g.attrs["tail_completed"])


def case_truncate(a):
    full, top = traces(a)
    with h5py.File(full, "r") as f, h5py.File(top, "r") as t:
        check(text(t.attrs["kind"]) == "assignments" and int(t.attrs["top_k"]) == K, "truncated kind/top_k")
        check(text(t.attrs["weights_are"]) == "probabilities", "weights_are attribute")
        check(np.array_equal(f["tokens/sequence"][:], t["tokens/sequence"][:]), "sequences copied")
        z = f["logits"][:].astype(np.float64)
        p = np.exp(z - z.max(axis=2, keepdims=True))
        p /= p.sum(axis=2, keepdims=True)
        order = np.argsort(-z, axis=2, kind="stable")[:, :, :K]  # ties to the lower id
        ids = t["expert_ids"][:]
        check(np.array_equal(ids, order), "ids are the top-%d of the logits" % K)
        w = t["weights"][:]
        want = np.take_along_axis(p, order, axis=2)
        check(np.allclose(w, want, rtol=1e-5, atol=1e-7), "weights are the softmax probabilities over all E")
    renorm = os.path.join(a.work, "renorm.h5")
    sh([a.moebench, "trace", "truncate", full, "--top-k", "2", "--weights-are", "renormalized", "--out", renorm,
        "--force"])
    with h5py.File(renorm, "r") as t:
        check(np.allclose(t["weights"][:].sum(axis=2), 1.0, atol=1e-5), "renormalized weights sum to 1")
    # Refusals: one line, exit 2, no output file.
    bad = os.path.join(a.work, "bad.h5")
    for args, msg in ((["--top-k", "2", "--weights-are", "probabilities"], "is not a logit trace"),
                      (["--top-k", "0"], "--top-k must be in"), (["--top-k", "2", "--weights-are", "gates"],
                                                                  "unknown value")):
        src = top if msg == "is not a logit trace" else full
        p = sh([a.moebench, "trace", "truncate", src, "--out", bad] + args, ok=(2,))
        check(msg in p.stderr and p.stderr.count("moebench: error:") == 1, "error for %s: %s" % (args, p.stderr))
        check(not os.path.exists(bad), "no output file after a refusal")


def case_identity(a):
    """Routers that read only the recorded top-k: identical with and without completion."""
    _, top = traces(a)
    for k in (K, 2):
        runs = {m: run(a, top, os.path.join(a.work, "id-%s-k%d.h5" % (m, k)), "recorded,softmax_topk,sigmoid_topk",
                       ["--trace-tail", m], top_k=k) for m in ("none", "mass", "profile")}
        for r in ("recorded", "softmax_topk", "sigmoid_topk"):
            base, _ = counts(runs["none"], r)
            for m in ("mass", "profile"):
                got, used = counts(runs[m], r)
                check(used == 0, "%s k=%d: tail_completed must be 0 under %s" % (r, k, m))
                for n in COUNTS:
                    check(np.array_equal(base[n], got[n]), "%s k=%d %s: %s differs with --trace-tail %s" % (r, k, n, n, m))
    # Without completion the tail routers refuse, naming the option.
    p = sh([a.moebench, "run", "--workload", "trace", "--trace", top, "--routers", "etr", "--progress", "off",
            "--out", os.path.join(a.work, "refused.h5")], ok=(2,))
    check("--trace-tail mass|profile" in p.stderr, "refusal names --trace-tail: " + p.stderr)
    # mass needs probabilities.
    renorm = os.path.join(a.work, "renorm4.h5")
    full, _ = traces(a)
    sh([a.moebench, "trace", "truncate", full, "--top-k", str(K), "--weights-are", "renormalized", "--out", renorm,
        "--force"])
    p = sh([a.moebench, "run", "--workload", "trace", "--trace", renorm, "--routers", "etr", "--trace-tail", "mass",
            "--progress", "off", "--out", os.path.join(a.work, "refused.h5")], ok=(2,))
    check("needs weights that are probabilities" in p.stderr, "mass on renormalized: " + p.stderr)
    run(a, renorm, os.path.join(a.work, "renorm-profile.h5"), "etr", ["--trace-tail", "profile"])


def case_determinism(a):
    """Every router on a completed trace: identical counts on 1, 2 and 4 processes."""
    _, top = traces(a)
    for m in ("mass", "profile"):
        ref = None
        for np_ in (1, 2, 4):
            out = run(a, top, os.path.join(a.work, "det-%s-np%d.h5" % (m, np_)), ALL, ["--trace-tail", m], np_=np_)
            got = {r: counts(out, r) for r in ALL.split(",")}
            if ref is None:
                ref = got
                for r in ALL.split(","):
                    want = 0 if r in ("softmax_topk", "sigmoid_topk") else 1
                    check(got[r][1] == want, "%s: tail_completed %d, expected %d" % (r, got[r][1], want))
                continue
            for r in ALL.split(","):
                for n in COUNTS:
                    check(np.array_equal(ref[r][0][n], got[r][0][n]), "%s %s: %s differs on %d processes" % (m, r, n, np_))
        with h5py.File(out, "r") as f:
            params = json.loads(text(f.attrs["trace_tail_params"]))
            check(text(f.attrs["trace_tail"]) == m and params["model"] == m and "seed" in params, "tail attributes")
            check("completed by --trace-tail " + m in text(f.attrs["workload_source"]), "workload_source names the model")


def case_report(a):
    _, top = traces(a)
    outs = [run(a, top, os.path.join(a.work, "rep-%s.h5" % m), ALL, ["--trace-tail", m]) for m in ("mass", "profile")]
    p = sh([a.moebench, "report", outs[0], "--claims"])
    for line in p.stdout.splitlines():
        if line.strip().startswith("measured: etr:") or line.strip().startswith("measured: deepseek_v3:"):
            check("[tail completed (mass)]" in line, "claims line not marked: " + line)
        if line.strip().startswith("measured: lapsum:"):
            check("[tail completed (mass)]" in line, "claims line not marked: " + line)
    check("tail completed (mass): deepseek_v3, kern, etr" in p.stdout, "router note lists the tail routers")
    rows = [l for l in p.stdout.splitlines() if l.startswith("softmax_topk") or l.startswith("etr")]
    check(any(l.startswith("etr*") for l in rows) and any(l.startswith("softmax_topk ") for l in rows),
          "table marks etr, not softmax_topk: %s" % rows)
    p = sh([a.moebench, "report", outs[0], "--format", "json"])
    j = json.loads(p.stdout)
    tails = {r["router"]: r.get("tail") for r in j["summary"]} if "summary" in j else None
    if tails is not None:
        check(tails["etr"] == "tail completed (mass)" and tails["softmax_topk"] is None, "json tail field")
    p = sh([a.moebench, "report", outs[0], outs[1], "--compare", "--claims"])
    check("Tail sensitivity" in p.stdout, "sensitivity section present")
    verdicts = [l for l in p.stdout.splitlines() if l.startswith("* ") and (" robust" in l or "TAIL-SENSITIVE" in l)]
    check(len(verdicts) >= 5, "a verdict per claim: %s" % verdicts)
    for l in verdicts:  # the conclusion must follow from the two holds/does-not-hold marks printed
        marks = [x for x in ("(holds)", "(does not hold)") if x in l]
        check(("TAIL-SENSITIVE" in l) == (len(marks) == 2), "verdict inconsistent with its marks: " + l)


def case_error_table(a):
    js = os.path.join(a.work, "tail_error.json")
    sources = "zipf,lognormal,capture"
    p = sh([sys.executable, os.path.join(ROOT, "analysis", "tail_error.py"), "--moebench", a.moebench, "--work",
            os.path.join(a.work, "te"), "--sources", sources, "--experts", "32", "--top-k", "4", "--tokens", "1024",
            "--json", js])
    j = json.load(open(js))
    have = set(j["sources"])
    check({"zipf", "lognormal"} <= have, "sources: %s" % have)
    if "capture" not in have:
        check("source capture skipped" in p.stdout, "capture skipped with a note")
    rows = {(r["source"], r["router"], r["model"]): r for r in j["rows"]}
    nonzero = 0
    for s in have:
        for r in ALL.split(","):
            for m in ("mass", "profile"):
                check((s, r, m) in rows, "row %s %s %s" % (s, r, m))
                row = rows[(s, r, m)]
                if r in ("softmax_topk", "sigmoid_topk"):
                    check(row["tail_completed"] == 0, "%s never reads the tail" % r)
                    for name, e in row["errors"].items():
                        check(e == 0, "%s %s %s: %s error %r (must be exact: it reads only the top-k)" % (s, r, m, name, e))
                else:
                    check(row["tail_completed"] == 1, "%s reads the tail" % r)
                    nonzero += any(abs(e) > 0 for e in row["errors"].values() if e == e)
    check(nonzero > 0, "some tail router shows a nonzero error (else the table measures nothing)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case")
    ap.add_argument("--moebench", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    cases = {"truncate": case_truncate, "identity": case_identity, "determinism": case_determinism,
             "report": case_report, "error_table": case_error_table}
    if a.case not in cases:
        print("unknown case %s (known: %s)" % (a.case, ", ".join(cases)))
        return 1
    try:
        cases[a.case](a)
    except Fail as e:
        print("FAIL: %s" % e)
        return 1
    print("PASS: %s" % a.case)
    return 0


if __name__ == "__main__":
    sys.exit(main())
