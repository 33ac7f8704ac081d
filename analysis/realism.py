#!/usr/bin/env python3
"""How far is a (synthetic) workload's routing from a real one, in the load statistics that matter?

    python3 analysis/realism.py CANDIDATE.h5 REFERENCE.h5 [--top-k K] [--router NAME] [--json]

Each file is a routing trace (workloads/TRACE_FORMAT.md; logit traces route each token to its
top-k by logit, k from --top-k or the `top_k` attribute) or a results file
(harness/report/SCHEMA.md; `expert_demand` of one router: load statistics only, the token-level
ones are unavailable). Typical use: CANDIDATE = the synthetic workload, REFERENCE = a real trace.

Statistics, per (step, layer) and then averaged (tokens per expert = assignments before capacity):
  gini            Gini coefficient of tokens per expert (0 = even, -> 1 = all on one expert)
  cv              std / mean of tokens per expert (population std)
  max_over_mean   busiest expert / mean expert
  keep_any        share of consecutive token pairs (same step, same sequence when known) that share
                  at least one expert
  keep_overlap    mean share of a token's experts that the previous token also had
  cross_layer_nmi normalised mutual information between a token's experts in consecutive stored
                  layers (0: independent); its shuffled-token baseline is printed beside it
  cross_layer_load_corr  Pearson correlation of tokens per expert between consecutive layers
The verdict compares the imbalance (geometric mean of the gini and cv ratios) and the persistence.
Exit codes: 0, 2 bad input.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyenv  # noqa: E402

if __name__ == "__main__":
    pyenv.require(("h5py", "numpy"))

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402

from h5files import InputError, Results, Trace, file_format  # noqa: E402

CHUNK_TOKENS = 1 << 16
LOAD_STATS = ("gini", "cv", "max_over_mean")
TOKEN_STATS = ("keep_any", "keep_overlap", "cross_layer_nmi")
ALL_STATS = LOAD_STATS + TOKEN_STATS + ("cross_layer_load_corr",)
TOLERANCE = 1.25  # within a factor 1.25 either way counts as matching


def gini(counts):
    c = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = c.size, c.sum()
    if n == 0 or total == 0:
        return float("nan")
    return float((2.0 * np.sum(np.arange(1, n + 1) * c)) / (n * total) - (n + 1.0) / n)


def load_stats(counts):
    c = np.asarray(counts, dtype=np.float64)
    mean = c.mean()
    if mean == 0:
        return {"gini": float("nan"), "cv": float("nan"), "max_over_mean": float("nan")}
    return {"gini": gini(c), "cv": float(c.std() / mean), "max_over_mean": float(c.max() / mean)}


def pearson(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def nmi(joint):
    """Normalised mutual information I(X;Y) / sqrt(H(X) H(Y)) of a joint count matrix."""
    total = joint.sum()
    if total == 0:
        return float("nan")
    p = joint / total
    px, py = p.sum(axis=1), p.sum(axis=0)
    nz = p > 0
    mi = float(np.sum(p[nz] * np.log(p[nz] / np.outer(px, py)[nz])))
    hx = -float(np.sum(px[px > 0] * np.log(px[px > 0])))
    hy = -float(np.sum(py[py > 0] * np.log(py[py > 0])))
    return mi / math.sqrt(hx * hy) if hx > 0 and hy > 0 else float("nan")


def co_occurrence(a, b, experts):
    """Joint counts of (expert of the token in layer l, expert of the same token in layer l+1)."""
    ka, kb = a.shape[1], b.shape[1]
    joint = np.zeros(experts * experts, dtype=np.int64)
    for lo in range(0, a.shape[0], CHUNK_TOKENS):
        x = np.repeat(a[lo:lo + CHUNK_TOKENS], kb, axis=1).reshape(-1)
        y = np.tile(b[lo:lo + CHUNK_TOKENS], (1, ka)).reshape(-1)
        ok = (x >= 0) & (y >= 0)
        joint += np.bincount(x[ok] * experts + y[ok], minlength=experts * experts)
    return joint.reshape(experts, experts).astype(np.float64)


def mean_of(values):
    v = [x for x in values if not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else float("nan")


def profile_trace(path, top_k_opt):
    t = Trace(path)
    try:
        k = top_k_opt or t.top_k
        if t.kind == "logits":
            if k <= 0:
                raise InputError("%s: root attribute 'top_k' is %d and no --top-k was given: a logit trace needs k" % (path, t.top_k))
            if k > t.experts:
                raise InputError("%s: --top-k %d exceeds num_experts %d" % (path, k, t.experts))
        E = t.experts
        per = {s: [] for s in LOAD_STATS}
        load_corr, keep_any, keep_overlap = [], [], []
        joints, shuffled = [], []
        rng = np.random.default_rng(12345)
        assignments = 0
        for s in range(t.steps):
            first, last = int(t.offset[s]), int(t.offset[s + 1])
            if last == first:
                continue
            prev_sets, prev_counts = None, None
            for layer in range(t.layers):
                counts = np.zeros(E, dtype=np.int64)
                sets = []
                pairs_total = pairs_any = 0
                overlap_sum = 0.0
                for lo in range(first, last, CHUNK_TOKENS):
                    hi = min(last, lo + CHUNK_TOKENS)
                    ids = t.expert_sets(layer, lo, hi, k)
                    counts += np.bincount(ids[ids >= 0], minlength=E)
                    sets.append(ids)
                ids = np.concatenate(sets, axis=0) if len(sets) > 1 else sets[0]
                assignments += int((ids >= 0).sum())
                for name, v in load_stats(counts).items():
                    per[name].append(v)
                # Consecutive tokens: same step (by construction) and, when known, same sequence.
                if ids.shape[0] > 1:
                    same = np.ones(ids.shape[0] - 1, dtype=bool)
                    if t.sequence is not None:
                        seq = t.sequence[first:last]
                        same &= seq[1:] == seq[:-1]
                    a, b = ids[:-1][same], ids[1:][same]
                    shared = ((b[:, :, None] == a[:, None, :]) & (b[:, :, None] >= 0)).any(axis=2).sum(axis=1)
                    n_b = (b >= 0).sum(axis=1)
                    has = n_b > 0
                    pairs_total = int(has.sum())
                    pairs_any = int((shared[has] > 0).sum())
                    overlap_sum = float((shared[has] / n_b[has]).sum())
                if pairs_total:
                    keep_any.append(pairs_any / pairs_total)
                    keep_overlap.append(overlap_sum / pairs_total)
                if prev_sets is not None:
                    joints.append(co_occurrence(prev_sets, ids, E))
                    shuffled.append(co_occurrence(prev_sets, ids[rng.permutation(ids.shape[0])], E))
                    load_corr.append(pearson(prev_counts, counts))
                prev_sets, prev_counts = ids, counts
        out = {name: mean_of(v) for name, v in per.items()}
        out.update(keep_any=mean_of(keep_any), keep_overlap=mean_of(keep_overlap),
                   cross_layer_nmi=mean_of([nmi(j) for j in joints]),
                   cross_layer_nmi_shuffled=mean_of([nmi(j) for j in shuffled]),
                   cross_layer_load_corr=mean_of(load_corr))
        records = sum(1 for s in range(t.steps) if t.offset[s + 1] > t.offset[s]) * t.layers
        out["_meta"] = {"path": path, "kind": "trace (%s)" % t.kind, "experts": E, "top_k": k, "layers": t.layers,
                        "steps": t.steps, "records": records,
                        "assignments_per_record": assignments / records if records else 0.0,
                        "chance_keep_any": chance_keep_any(E, k), "chance_keep_overlap": k / E if E else float("nan")}
        return out
    finally:
        t.close()


def profile_results(path, router):
    r = Results(path)
    try:
        if router is None:
            router = r.routers[0] if r.routers else None
        if router not in r.routers:
            raise InputError("%s: --router %r is not a router of this file (routers: %s)" % (path, router, ", ".join(r.routers)))
        demand = np.asarray(r.data(router, "expert_demand"), dtype=np.int64)  # [S, L, E]
        per = {s: [] for s in LOAD_STATS}
        load_corr = []
        for s in range(demand.shape[0]):
            for layer in range(demand.shape[1]):
                for name, v in load_stats(demand[s, layer]).items():
                    per[name].append(v)
                if layer > 0:
                    load_corr.append(pearson(demand[s, layer - 1], demand[s, layer]))
        out = {name: mean_of(v) for name, v in per.items()}
        nan = float("nan")
        out.update(keep_any=nan, keep_overlap=nan, cross_layer_nmi=nan, cross_layer_nmi_shuffled=nan,
                   cross_layer_load_corr=mean_of(load_corr))
        k = int(r.config.get("top_k", 0))
        records = demand.shape[0] * demand.shape[1]
        out["_meta"] = {"path": path, "kind": "results (router %s%s)" % (router, ", partial" if r.partial else ""),
                        "experts": r.experts, "top_k": k, "layers": r.layers, "steps": r.steps_done, "records": records,
                        "assignments_per_record": float(demand.sum()) / records if records else 0.0,
                        "chance_keep_any": chance_keep_any(r.experts, k), "chance_keep_overlap": k / r.experts}
        return out
    finally:
        r.close()


def chance_keep_any(E, k):
    """P(two independent uniform top-k sets share an expert)."""
    if k <= 0 or k > E:
        return float("nan")
    return 1.0 - math.comb(E - k, k) / math.comb(E, k)


def cv_floor(meta):
    """CV of tokens per expert that pure sampling noise gives with uniform routing (multinomial)."""
    n = meta["assignments_per_record"]
    return math.sqrt((meta["experts"] - 1) / n) if n > 0 else float("nan")


def ratio(a, b):
    if any(isinstance(x, float) and math.isnan(x) for x in (a, b)) or b == 0:
        return float("nan")
    return a / b


def verdict(a, b, name_a, name_b):
    parts = []
    rg, rc = ratio(a["gini"], b["gini"]), ratio(a["cv"], b["cv"])
    good = [x for x in (rg, rc) if not math.isnan(x) and x > 0]
    factor = math.exp(sum(math.log(x) for x in good) / len(good)) if good else float("nan")
    if math.isnan(factor):
        empty = [n for n, p in ((name_a, a), (name_b, b)) if math.isnan(p["cv"])]
        even = [n for n, p in ((name_a, a), (name_b, b)) if p["cv"] == 0]
        parts.append("imbalance not comparable (%s)" % ("no routed tokens in " + ", ".join(empty) if empty
                                                        else "a perfectly even load in " + ", ".join(even)))
    elif 1 / TOLERANCE <= factor <= TOLERANCE:
        parts.append("%s matches %s's expert imbalance within %.0f%% (%.2fx; cv %.3f vs %.3f)"
                     % (name_a, name_b, (TOLERANCE - 1) * 100, factor, a["cv"], b["cv"]))
    else:
        parts.append("%s %s expert imbalance %.1fx relative to %s (cv %.3f vs %.3f, gini %.3f vs %.3f, max/mean %.2f vs %.2f)"
                     % (name_a, "OVERSTATES" if factor > 1 else "UNDERSTATES", factor if factor > 1 else 1 / factor,
                        name_b, a["cv"], b["cv"], a["gini"], b["gini"], a["max_over_mean"], b["max_over_mean"]))
    rp = ratio(a["keep_overlap"], b["keep_overlap"])
    if math.isnan(rp):
        parts.append("persistence not comparable (needs token-level routing in both files)")
    elif 1 / TOLERANCE <= rp <= TOLERANCE:
        parts.append("persistence matches (%.3f vs %.3f)" % (a["keep_overlap"], b["keep_overlap"]))
    else:
        parts.append("persistence %s %.1fx (%.3f vs %.3f)" % ("overstated" if rp > 1 else "understated",
                                                             rp if rp > 1 else 1 / rp, a["keep_overlap"], b["keep_overlap"]))
    return "verdict: " + "; ".join(parts)


def fmt(v):
    return "n/a" if isinstance(v, float) and math.isnan(v) else "%.4f" % v


def main(argv=None):
    ap = argparse.ArgumentParser(description="Distance in load statistics between two routing workloads.")
    ap.add_argument("candidate", help="trace or results file, e.g. the synthetic workload")
    ap.add_argument("reference", help="trace or results file, e.g. a real trace")
    ap.add_argument("--top-k", type=int, default=0, help="k for logit traces (default: the trace's top_k attribute)")
    ap.add_argument("--router", help="router of a results file (default: its first)")
    ap.add_argument("--json", action="store_true", help="print the statistics as JSON")
    a = ap.parse_args(argv)
    prog = os.path.basename(sys.argv[0])
    if a.top_k < 0:
        sys.stderr.write("%s: error: --top-k %d is negative\n" % (prog, a.top_k))
        return 2
    try:
        profiles = []
        for path in (a.candidate, a.reference):
            kind = file_format(path)
            profiles.append(profile_trace(path, a.top_k) if kind == "trace" else profile_results(path, a.router))
    except InputError as err:
        sys.stderr.write("%s: error: %s\n" % (prog, err))
        return 2
    pa, pb = profiles
    na, nb = os.path.basename(a.candidate), os.path.basename(a.reference)
    if na == nb:
        na, nb = a.candidate, a.reference
    line = verdict(pa, pb, na, nb)
    notes = []
    if pa["_meta"]["experts"] != pb["_meta"]["experts"]:
        notes.append("the files have different expert counts (%d vs %d): imbalance statistics depend on E; compare with care"
                     % (pa["_meta"]["experts"], pb["_meta"]["experts"]))
    for p, n in ((pa, na), (pb, nb)):
        floor = cv_floor(p["_meta"])
        if not math.isnan(p["cv"]) and p["cv"] < 1.5 * floor:
            notes.append("%s's cv %.3f is near its sampling floor %.3f (uniform routing of %.0f assignments per step and layer "
                         "gives that much): more tokens per step would resolve lower imbalance" % (n, p["cv"], floor,
                                                                                                  p["_meta"]["assignments_per_record"]))
    if a.json:
        out = {"candidate": pa, "reference": pb, "ratios": {s: ratio(pa[s], pb[s]) for s in ALL_STATS},
               "verdict": line, "notes": notes}
        print(json.dumps(out, indent=1, default=float).replace("NaN", "null"))
        return 0
    print("realism: %s (candidate) vs %s (reference)" % (a.candidate, a.reference))
    for p, n in ((pa, na), (pb, nb)):
        m = p["_meta"]
        print("  %s: %s, E=%d, k=%d, %d layers, %d steps, %.0f assignments per step and layer; sampling cv floor %.4f"
              % (n, m["kind"], m["experts"], m["top_k"], m["layers"], m["steps"], m["assignments_per_record"], cv_floor(m)))
    w = max(len(na), len(nb), 12)
    print("%-26s %*s %*s %9s" % ("statistic", w, na, w, nb, "ratio"))
    for s in ALL_STATS:
        print("%-26s %*s %*s %9s" % (s, w, fmt(pa[s]), w, fmt(pb[s]), fmt(ratio(pa[s], pb[s]))))
    print("%-26s %*s %*s" % ("  nmi, shuffled tokens", w, fmt(pa["cross_layer_nmi_shuffled"]), w, fmt(pb["cross_layer_nmi_shuffled"])))
    print("%-26s %*s %*s" % ("  keep_any, uniform chance", w, fmt(pa["_meta"]["chance_keep_any"]), w, fmt(pb["_meta"]["chance_keep_any"])))
    print("%-26s %*s %*s" % ("  keep_overlap, chance", w, fmt(pa["_meta"]["chance_keep_overlap"]), w,
                            fmt(pb["_meta"]["chance_keep_overlap"])))
    for n in notes:
        print("note: " + n)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
