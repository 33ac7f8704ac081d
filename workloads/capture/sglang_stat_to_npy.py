#!/usr/bin/env python3
"""SGLang expert-distribution recorder, `stat` mode -> the .npy that `moebench trace convert --from
sglang-stat` reads (a count-only trace, workloads/TRACE_FORMAT.md "Count-only traces").

    sglang_stat_to_npy.py DUMP.pt OUT.npy [--keep-empty]

SGLang (--expert-distribution-recorder-mode stat, then /dump_expert_distribution_record) writes
one torch.save file on rank 0: a dict whose `logical_count` is an integer tensor
[steps, layers, logical experts] (the per-forward-pass counts, all-reduced over the ranks). Its
layers are the model's layers, dense ones included (all zero), and a circular buffer leaves unused
steps all zero: both are dropped (--keep-empty keeps them) and the command printed at the end names
the kept model layers with --layers. Writes int64, C order. Needs torch and numpy; the file is
loaded with weights_only=True (tensors and plain values only, no code).
"""
import argparse
import sys


def fail(msg):
    print("sglang_stat_to_npy.py: error: " + msg, file=sys.stderr)
    sys.exit(2)


def layer_list(ids):
    """[3, 4, 5, 9] -> '3-5,9'."""
    out, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else "%d-%d" % (ids[i], ids[j]))
        i = j + 1
    return ",".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dump")
    ap.add_argument("out")
    ap.add_argument("--keep-empty", action="store_true", help="keep all-zero layers and steps")
    a = ap.parse_args()
    try:
        import numpy as np
        import torch
    except ImportError as e:
        fail("needs torch and numpy (%s)" % e)
    try:
        data = torch.load(a.dump, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any load failure is the file's
        fail("%s: cannot load it with torch.load (%s)" % (a.dump, str(e).splitlines()[0] if str(e) else type(e).__name__))
    if not isinstance(data, dict):
        fail("%s: not a dict (an SGLang stat-mode dump is a dict with logical_count)" % a.dump)
    if "logical_count" not in data:
        fail("%s: no key logical_count (keys: %s; per_token dumps hold records: use --from sglang)" % (
            a.dump, ", ".join(sorted(map(str, data))) or "none"))
    c = data["logical_count"]
    if not isinstance(c, torch.Tensor):
        fail("%s: logical_count is a %s, not a tensor" % (a.dump, type(c).__name__))
    if c.is_floating_point() or c.is_complex() or c.dtype == torch.bool:
        fail("%s: logical_count has dtype %s, not an integer type" % (a.dump, c.dtype))
    if c.dim() != 3:
        fail("%s: logical_count has %d dimensions %s (expected [steps, layers, experts])" % (
            a.dump, c.dim(), list(c.shape)))
    c = c.to(torch.int64).numpy()
    if (c < 0).any():
        s, l, e = (int(x) for x in np.argwhere(c < 0)[0])
        fail("%s: logical_count[%d, %d, %d] = %d is negative" % (a.dump, s, l, e, c[s, l, e]))
    layers = list(range(c.shape[1]))
    steps = list(range(c.shape[0]))
    if not a.keep_empty:
        layers = [l for l in layers if c[:, l, :].sum() > 0]
        steps = [s for s in steps if c[s, layers, :].sum() > 0] if layers else []
        if not layers or not steps:
            fail("%s: every count is 0" % a.dump)
        c = c[np.ix_(steps, layers)]
    np.save(a.out, np.ascontiguousarray(c))
    print("wrote %s: %d steps x %d layers x %d experts (dropped %d empty steps, %d empty layers)" % (
        a.out, c.shape[0], c.shape[1], c.shape[2], data["logical_count"].shape[0] - c.shape[0],
        data["logical_count"].shape[1] - c.shape[1]))
    print("next: moebench trace convert --from sglang-stat --in %s --layers %s --out TRACE.h5" % (a.out, layer_list(layers)))


if __name__ == "__main__":
    main()
