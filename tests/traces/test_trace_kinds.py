#!/usr/bin/env python3
"""End-to-end tests of labelled and count-only traces (workloads/TRACE_FORMAT.md), one case per call:

    test_trace_kinds.py CASE --moebench PATH --work DIR

labelled  an NPY logit trace with a token table (sequence, position, domain) and a domain -> experts
          map, replayed by softmax_topk, beta, beta@ahead and sigmoid_topk on 1 and 2 processes: the
          transition figures (acc, p_correct, coverage@1..4) equal an independent numpy computation
          from the trace file, and the map given at replay wins over the stored one.

counts    a count-only trace from counts-npy and counts-csv (the same counts), replayed by recorded on
          1, 2 and 4 processes (EP 4, capacity factor 1, EPLB with replicas and re-placement):
          identical results, expert demand equal to the file's counts, loads = min(demand, C), the
          uniform attribution's dispatch matrix, other routers and --top-k 2 refused.
sglang    a torch.save dump in SGLang's stat layout (logical_count [steps, layers, experts] with a
          dense layer and an unused buffer step) through workloads/capture/sglang_stat_to_npy.py and
          --from sglang-stat; the pickle itself is refused with that command.

Needs h5py and numpy (sglang: torch too) (analysis/pyenv.py finds an interpreter; exit 77 = skip).
"""
import argparse
import os
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "analysis"))
import pyenv  # noqa: E402

pyenv.require(("h5py", "numpy"), missing_exit=77)

import h5py  # noqa: E402
import numpy as np  # noqa: E402

MPIEXEC = shlex.split(os.environ.get("MOEBENCH_MPIEXEC", "mpiexec --oversubscribe"))
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL: " + what)


def attr(f, name):
    v = f.attrs[name]
    return v.decode() if isinstance(v, bytes) else str(v)


def run(cmd, expect_ok=True):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if expect_ok and p.returncode != 0:
        print(" ".join(cmd))
        print(p.stdout + p.stderr)
        sys.exit("FAIL: command failed")
    return p


# ---------------------------------------------------------------------------------------------
# labelled


def make_labelled(work, mb):
    """The beta-MoE ablation's shape: 4 experts, 2 domains, sequences of 12 tokens, domain A at
    positions 0..5 and B at 6..11; the correct expert of domain 0 is 0, of domain 1 is 2 (decoys
    1 and 3). Random gate logits with a boost on the current domain's expert."""
    rng = np.random.default_rng(7)
    L, E, seqs, n = 2, 4, 40, 12
    T = seqs * n
    seq = np.repeat(np.arange(seqs), n)
    pos = np.tile(np.arange(n), seqs)
    first = rng.integers(0, 2, size=seqs)
    dom = np.where(pos < 6, first[seq], 1 - first[seq]).astype(np.int64)
    correct = np.array([0, 2])
    z = rng.normal(0, 1.0, size=(L, T, E)).astype(np.float32)
    for l in range(L):
        z[l, np.arange(T), correct[dom]] += 1.5
        z[l, :, 1] += 0.7  # a decoy that is often second
    np.save(os.path.join(work, "gate.npy"), z)
    with open(os.path.join(work, "tokens.csv"), "w") as f:
        f.write("sequence,position,domain\n")
        for t in range(T):
            f.write("%d,%d,%d\n" % (seq[t], pos[t], dom[t]))
    out = os.path.join(work, "labelled.h5")
    # 4 steps of 120 tokens (10 whole sequences each), float32 storage; a wrong map stored on
    # purpose (domain 1 -> 3) to check that the map given at replay wins.
    run([mb, "trace", "convert", "--from", "npy", "--in", os.path.join(work, "gate.npy"), "--token-table",
         os.path.join(work, "tokens.csv"), "--tokens-per-step", "120", "--dtype", "fp32", "--domain-experts",
         "0=0;1=3", "--out", out, "--force"])
    return out


def softmax_figures(scores, chosen_first, nxt_correct):
    """acc (first choice), p_correct (softmax mass over all E) and coverage@1..4 (a correct expert
    among the K highest scores, ties to the lower index) of one transition token."""
    s = scores.astype(np.float64)
    p = np.exp(s - s.max())
    p /= p.sum()
    E = len(s)
    order = sorted(range(E), key=lambda e: (-scores[e], e))
    rank = min(order.index(c) for c in nxt_correct)
    return [1.0 if chosen_first in nxt_correct else 0.0, float(sum(p[c] for c in nxt_correct))] + \
        [1.0 if rank < K else 0.0 for K in (1, 2, 3, 4)]


def independent(trace, router, mapping):
    """Per (step, layer) transition figures of `router`, from the trace file alone."""
    with h5py.File(trace, "r") as f:
        z = f["logits"][...].astype(np.float32)
        seq = f["tokens/sequence"][...]
        pos = f["tokens/position"][...]
        dom = f["tokens/domain"][...]
        off = f["steps/offset"][...]
    L = z.shape[0]
    S = len(off) - 1
    out = np.full((S, L, 7), np.nan)
    for s in range(S):
        a, b = off[s], off[s + 1]
        for l in range(L):
            zz = z[l, a:b]
            sq, ps, dm = seq[a:b], pos[a:b], dom[a:b]
            n = b - a
            cont = np.zeros(n, dtype=bool)
            cont[1:] = (ps[1:] != 0) & (sq[1:] == sq[:-1])
            if router == "beta":  # u_t = 0.9 u_{t-1} + z_t in float32, reset at sequence starts
                sc = np.empty_like(zz)
                for t in range(n):
                    sc[t] = zz[t] if not cont[t] else np.float32(0.9) * sc[t - 1] + zz[t]
            elif router == "beta@ahead":  # route t on z_{t+1} of the same sequence
                sc = zz.copy()
                for t in range(n - 1):
                    if cont[t + 1]:
                        sc[t] = zz[t + 1]
            else:
                sc = zz
            rows = []
            for t in range(n - 1):
                if sq[t + 1] != sq[t] or dm[t + 1] == dm[t]:
                    continue
                first = min(range(sc.shape[1]), key=lambda e: (-sc[t, e], e))
                if router == "sigmoid_topk":  # among-chosen, k = 1: the first choice alone
                    ok = first in mapping[dm[t + 1]]
                    rows.append([1.0 if ok else 0.0] * 6)
                else:
                    rows.append(softmax_figures(sc[t], first, mapping[dm[t + 1]]))
            if rows:
                out[s, l, 0] = len(rows)
                out[s, l, 1:] = np.mean(np.array(rows), axis=0)
    return out


FULL = ["transitions", "acc_at_transition", "p_correct_at_transition", "coverage_at_1", "coverage_at_2",
        "coverage_at_3", "coverage_at_4"]
AMONG = ["transitions", "acc_at_transition", "p_correct_among_chosen_at_transition", "coverage_among_chosen_at_1",
         "coverage_among_chosen_at_2", "coverage_among_chosen_at_3", "coverage_among_chosen_at_4"]


def case_labelled(mb, work):
    trace = make_labelled(work, mb)
    info = run([mb, "trace", "info", trace]).stdout
    print(info)
    check("2 labels (0, 1)" in info, "trace info shows the domain labels")
    check("domain map  0=0;1=3" in info, "trace info shows the stored domain -> experts map")
    routers = ["softmax_topk", "beta", "beta@ahead", "sigmoid_topk"]
    mapping = {0: [0], 1: [2]}
    results = {}
    for procs in (1, 2):
        res = os.path.join(work, "labelled_np%d.h5" % procs)
        cmd = ([] if procs == 1 else MPIEXEC + ["-n", str(procs)]) + [
            mb, "run", "--workload", "trace", "--trace", trace, "--experts", "4", "--top-k", "1", "--ep-size", "2",
            "--routers", ",".join(routers), "--router-arg", "beta@ahead.lookahead=true",
            "--workload-arg", "trace.domain_experts=0=0;1=2", "--capacity-factor", "0", "--progress", "off",
            "--out", res, "--force"]
        run(cmd)
        results[procs] = res
    for router in routers:
        want = independent(trace, router, mapping)
        names = AMONG if router == "sigmoid_topk" else FULL
        got = {}
        for procs, res in results.items():
            with h5py.File(res, "r") as f:
                g = f["runs/%s/figures" % router]
                missing = [n for n in names if n not in g]
                check(not missing, "%s: figures %s present (%d processes)" % (router, missing, procs))
                if missing:
                    continue
                got[procs] = np.stack([g[n][...] for n in names], axis=-1)
        if len(got) != 2:
            continue
        check(np.array_equal(got[1], got[2], equal_nan=True), "%s: identical figures on 1 and 2 processes" % router)
        g = got[1]
        check(np.nansum(g[..., 0]) > 50, "%s: enough transitions (%s)" % (router, np.nansum(g[..., 0])))
        check(np.array_equal(np.isnan(g), np.isnan(want)), "%s: NaN where no transition" % router)
        err = np.nanmax(np.abs(g - want))
        print("%-12s transitions %d  acc %.4f  p_correct %.4f  coverage@1..4 %s  max |moebench - numpy| %.2e" % (
            router, np.nansum(g[..., 0]), np.nanmean(g[..., 1]), np.nanmean(g[..., 2]),
            " / ".join("%.3f" % np.nanmean(g[..., i]) for i in range(3, 7)), err))
        check(err < 1e-9, "%s: transition figures equal the independent computation (max error %g)" % (router, err))
    # Without the replay's map, the stored one (domain 1 -> 3) is used: other figures.
    res = os.path.join(work, "stored_map.h5")
    run([mb, "run", "--workload", "trace", "--trace", trace, "--experts", "4", "--top-k", "1", "--routers",
         "softmax_topk", "--capacity-factor", "0", "--progress", "off", "--out", res, "--force"])
    with h5py.File(res, "r") as f:
        g = np.stack([f["runs/softmax_topk/figures/" + n][...] for n in FULL], axis=-1)
    want = independent(trace, "softmax_topk", {0: [0], 1: [3]})
    check(np.nanmax(np.abs(g - want)) < 1e-9, "the map stored in the trace is used when the replay gives none")
    # CSV and JSONL labels (--field domain=KEY): an assignment trace, replayed by `recorded`, whose
    # transition figures are among-chosen (the trace has no full distribution).
    with open(os.path.join(work, "lab.jsonl"), "w") as f:
        for t in range(8):
            f.write('{"seq": 0, "pos": %d, "dom": %d, "ids": [%d, %d], "w": [0.6, 0.3]}\n' % (
                t, 0 if t < 4 else 1, 0 if t != 3 else 2, 1))
    jl = os.path.join(work, "lab_jsonl.h5")
    run([mb, "trace", "convert", "--from", "jsonl", "--in", os.path.join(work, "lab.jsonl"), "--experts", "4",
         "--field", "experts=ids", "--field", "weights=w", "--field", "sequence=seq", "--field", "position=pos",
         "--field", "domain=dom", "--domain-experts", "0=0;1=2+3", "--out", jl, "--force"])
    with h5py.File(jl, "r") as f:
        check(list(f["tokens/domain"][...]) == [0, 0, 0, 0, 1, 1, 1, 1], "jsonl: domains stored")
        check(attr(f, "domain_experts") == "0=0;1=2+3", "jsonl: map stored")
    res = os.path.join(work, "lab_jsonl_run.h5")
    run([mb, "run", "--workload", "trace", "--trace", jl, "--experts", "4", "--top-k", "2", "--routers", "recorded",
         "--capacity-factor", "0", "--progress", "off", "--out", res, "--force"])
    with h5py.File(res, "r") as f:
        g = np.stack([f["runs/recorded/figures/" + n][...] for n in AMONG], axis=-1)
    # One transition (token 3 -> 4, domain 0 -> 1, correct {2, 3}): token 3 chose 2 then 1.
    check(np.allclose(g[0, 0], [1, 1, 0.6 / 0.9, 1, 1, 1, 1]), "jsonl: recorded among-chosen figures %s" % g[0, 0])
    with open(os.path.join(work, "lab.csv"), "w") as f:
        f.write("dom,expert_0,expert_1,expert_2,expert_3\n0,0.5,0,0,0\n1,0,0.5,0,0\n")
    run([mb, "trace", "convert", "--from", "csv", "--in", os.path.join(work, "lab.csv"), "--field", "domain=dom",
         "--domain-experts", "0=0;1=1", "--out", os.path.join(work, "lab_csv.h5"), "--force"])
    with h5py.File(os.path.join(work, "lab_csv.h5"), "r") as f:
        check(list(f["tokens/domain"][...]) == [0, 1] and attr(f, "domain_experts") == "0=0;1=1", "csv: labels stored")
    # A map that misses a label of the trace, and a map on a trace without labels: refused.
    p = run([mb, "run", "--workload", "trace", "--trace", trace, "--experts", "4", "--top-k", "1", "--routers",
             "softmax_topk", "--workload-arg", "trace.domain_experts=0=0", "--progress", "off"], expect_ok=False)
    check(p.returncode != 0 and "domain 1 is not in the domain -> experts map" in p.stderr,
          "a label missing from the map is refused: " + p.stderr.strip())


# ---------------------------------------------------------------------------------------------
# counts


def random_counts(rng, S, L, E, per_step):
    c = np.zeros((S, L, E), dtype=np.int64)
    for s_ in range(S):
        for l in range(L):
            c[s_, l] = rng.multinomial(per_step[s_], rng.dirichlet(np.full(E, 0.4)))
    return c


def uniform_dispatch(c, R, rank_of_expert):
    """[R, R] tokens from source rank to destination rank of one (step, layer): the step's
    assignments ordered by expert, assignment j sent by rank j mod R (TRACE_FORMAT.md)."""
    m = np.zeros((R, R), dtype=np.int64)
    j = 0
    for e, n in enumerate(c):
        for src in range(R):  # assignments j .. j+n-1 with j' mod R == src
            m[src, rank_of_expert[e]] += len(range((src - j) % R, n, R))
        j += n
    return m


def case_counts(mb, work):
    rng = np.random.default_rng(3)
    S, L, E, R = 3, 2, 16, 4
    c = random_counts(rng, S, L, E, [402, 398, 517])  # per-step totals not divisible by R
    npy = os.path.join(work, "counts.npy")
    np.save(npy, c.astype(np.int32))
    csv = os.path.join(work, "counts.csv")
    rows = [(100 + s_, 3 + 2 * l, e, c[s_, l, e]) for s_ in range(S) for l in range(L) for e in range(E) if c[s_, l, e]]
    order = rng.permutation(len(rows))
    with open(csv, "w") as f:
        f.write("layer,expert,count,step\n")
        for i in order:
            st, l, e, n = rows[i]
            f.write("%d,%d,%d,%d\n" % (l, e, n, st))
    t_npy, t_csv = os.path.join(work, "c_npy.h5"), os.path.join(work, "c_csv.h5")
    run([mb, "trace", "convert", "--from", "counts-npy", "--in", npy, "--layers", "3,5", "--top-k", "2", "--out", t_npy,
         "--force"])
    run([mb, "trace", "convert", "--from", "counts-csv", "--in", csv, "--experts", str(E), "--out", t_csv, "--force"])
    for t in (t_npy, t_csv):
        with h5py.File(t, "r") as f:
            check(attr(f, "kind") == "counts", t + ": kind counts")
            check(np.array_equal(f["counts"][...], c), t + ": /counts equal the input")
            check(list(f.attrs["layer_ids"]) == [3, 5], t + ": layer ids 3, 5")
            check(int(f.attrs["num_tokens"]) == int(c[:, 0].sum()), t + ": num_tokens = assignments")
    info = run([mb, "trace", "info", t_npy]).stdout
    check("kind counts" in info and "assignments 1317" in info, "trace info on a counts trace:\n" + info)
    # Replay: identical on 1, 2 and 4 processes; EPLB with replicas and re-placement, capacity factor 1.
    shape = [mb, "run", "--workload", "trace", "--trace", t_npy, "--ep-size", str(R), "--routers", "recorded",
             "--capacity-factor", "1.0", "--progress", "off", "--force"]
    res = {}
    for procs in (1, 2, 4):
        out = os.path.join(work, "eplb_np%d.h5" % procs)
        run(([] if procs == 1 else MPIEXEC + ["-n", str(procs)]) + shape + [
            "--placement", "eplb", "--redundant-experts", "4", "--replace-every", "1", "--out", out])
        res[procs] = out
    skip = ("router_s", "measured", "dispatch_s", "combine_s", "bytes_moved")
    with h5py.File(res[1], "r") as f1:
        g1 = f1["runs/recorded"]
        check(attr(f1, "count_sources").startswith("uniform: "), "results record the attribution")
        check(np.array_equal(g1["expert_demand"][...], c), "expert demand equals the file's counts")
        cap = g1["capacity"][...]
        check(np.array_equal(cap, np.ceil(c.sum(axis=2) / E).astype(np.int64)), "capacity C = ceil(CF x A / E) %s" % cap)
        check(np.array_equal(g1["expert_load"][...], np.minimum(c, cap[..., None])), "loads = min(demand, C)")
        check(int(g1["dropped"][...].sum()) == int(np.maximum(c - cap[..., None], 0).sum()) > 0, "drops counted")
        check(int(np.asarray(g1["replaced_copies"][...]).sum()) > 0, "EPLB re-placed experts")
        for procs in (2, 4):
            with h5py.File(res[procs], "r") as fp:
                gp = fp["runs/recorded"]
                diff = [k for k in g1 if isinstance(g1[k], h5py.Dataset) and not any(x in k for x in skip)
                        and not np.array_equal(g1[k][...], gp[k][...], equal_nan=True)]
                check(not diff, "identical results on 1 and %d processes (differ: %s)" % (procs, diff))
    # The uniform attribution's dispatch matrix (contiguous placement, unlimited capacity).
    out = os.path.join(work, "contig.h5")
    run([mb, "run", "--workload", "trace", "--trace", t_npy, "--ep-size", str(R), "--routers", "recorded",
         "--capacity-factor", "0", "--placement", "contiguous", "--progress", "off", "--out", out, "--force"])
    with h5py.File(out, "r") as f:
        got = f["runs/recorded/dispatch_tokens"][...]
    rank_of = [e // (E // R) for e in range(E)]
    want = np.array([[uniform_dispatch(c[s_, l], R, rank_of) for l in range(L)] for s_ in range(S)])
    check(np.array_equal(got, want), "dispatch matrix = the uniform attribution")
    sent = want.sum(axis=3)
    check(np.all(sent.max(axis=2) - sent.min(axis=2) <= 1), "every rank sends floor or ceil of A/R")
    # Other routers and k != 1 are refused, naming the reason.
    p = run([mb, "run", "--workload", "trace", "--trace", t_npy, "--routers", "recorded,softmax_topk", "--progress",
             "off"], expect_ok=False)
    check(p.returncode != 0 and "softmax_topk cannot run on the count-only trace" in p.stderr and
          p.stderr.count("moebench: error:") == 1, "softmax_topk refused: " + p.stderr.strip())
    p = run([mb, "run", "--workload", "trace", "--trace", t_npy, "--routers", "recorded", "--top-k", "2",
             "--progress", "off"], expect_ok=False)
    check(p.returncode != 0 and "replays each assignment as a token with one expert" in p.stderr, "--top-k 2 refused")


def case_sglang(mb, work):
    try:
        import torch
    except ImportError:
        print("SKIP: no torch")
        sys.exit(77)
    rng = np.random.default_rng(5)
    S, L, E = 4, 4, 8
    c = random_counts(rng, S, L, E, [96, 96, 0, 80])  # step 2: an unused buffer slot
    c[:, 0] = 0  # layer 0 is dense
    dump = os.path.join(work, "expert_distribution_recorder_1.pt")
    torch.save(dict(rank=0, logical_count=torch.from_numpy(c).to(torch.int32), average_utilization_rate_over_window=None),
               dump)
    npy = os.path.join(work, "stat.npy")
    script = os.path.join(HERE, "..", "..", "workloads", "capture", "sglang_stat_to_npy.py")
    p = run([sys.executable, script, dump, npy])
    print(p.stdout)
    check("--layers 1-3" in p.stdout, "the script names the kept layers")
    out = os.path.join(work, "stat.h5")
    run([mb, "trace", "convert", "--from", "sglang-stat", "--in", npy, "--layers", "1-3", "--out", out, "--force"])
    with h5py.File(out, "r") as f:
        check(np.array_equal(f["counts"][...], c[[0, 1, 3]][:, 1:]), "sglang-stat: counts of the kept steps and layers")
        check(list(f.attrs["layer_ids"]) == [1, 2, 3], "sglang-stat: layer ids")
        check("stat mode" in attr(f, "capture_method"), "sglang-stat: capture method")
    p = run([mb, "trace", "convert", "--from", "sglang-stat", "--in", dump, "--out", os.path.join(work, "x.h5")],
            expect_ok=False)
    check(p.returncode != 0 and "sglang_stat_to_npy.py" in p.stderr, "a pickle is refused with the script's command")
    check(not os.path.exists(os.path.join(work, "x.h5")), "no output file left")
    torch.save(dict(rank=0, records=[]), os.path.join(work, "per_token.pt"))
    p = run([sys.executable, script, os.path.join(work, "per_token.pt"), npy], expect_ok=False)
    check(p.returncode == 2 and "no key logical_count" in p.stderr, "a dump without logical_count is refused")
    torch.save(dict(logical_count=torch.zeros(2, 3)), os.path.join(work, "float.pt"))
    p = run([sys.executable, script, os.path.join(work, "float.pt"), npy], expect_ok=False)
    check(p.returncode == 2 and "not an integer type" in p.stderr, "a float logical_count is refused")
    torch.save(dict(logical_count=torch.zeros(2, 3, dtype=torch.int32)), os.path.join(work, "rank2.pt"))
    p = run([sys.executable, script, os.path.join(work, "rank2.pt"), npy], expect_ok=False)
    check(p.returncode == 2 and "2 dimensions" in p.stderr, "a 2-D logical_count is refused")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case")
    ap.add_argument("--moebench", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    {"labelled": case_labelled, "counts": case_counts, "sglang": case_sglang}[a.case](os.path.abspath(a.moebench), os.path.abspath(a.work))
    if failures:
        print("%d check(s) failed" % len(failures))
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
