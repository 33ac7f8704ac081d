#!/usr/bin/env python3
"""Convert SGLang expert-distribution recorder dumps (per_token mode) into a moebench trace.

    sglang_to_moebench.py --in expert_distribution_recorder_*.pt [...] --out TRACE.h5
                          [--experts E] [--layer-mismatch error|intersect] [--model NAME] [--force]
                          [--moebench PATH]

Source: SGLang's `--expert-distribution-recorder-mode per_token`
(python/sglang/srt/eplb/expert_distribution.py, _DetailAccumulator.dump): one torch.save file per
rank, a dict with
  records: a list, one per forward pass, each a dict with forward_pass_id, rank, input_ids,
           positions, extend_seq_lens (None in decode passes: one token per request),
           topk_ids_of_layer (int32 [layers, tokens, topk], -1 where nothing was recorded);
  last_physical_to_logical_map: int [layers, num_physical_experts] (physical slot -> logical expert).

The trace: step = forward_pass_id (records of one pass from several ranks form one step), tokens
rank by rank; /tokens/rank = the record's rank; sequences from extend_seq_lens (a fresh id for each
request of each pass: SGLang records no request ids), positions and token ids from the record;
expert ids mapped from physical to logical with the map; layers whose rows are -1 in every record
(dense layers) are left out, the others keep their index. No weights (weights_are unknown, 1/k
each). A token whose row is all -1 in some MoE layers only is a layer mismatch (--layer-mismatch).
Writes an intermediate JSON-lines file next to OUT, converts it with `moebench trace convert --from
jsonl` (which builds OUT.tmp and renames it) and removes it: on any error no output is left.

Malformed input is one line `sglang_to_moebench.py: error: FILE: record N: field F: ...`, exit 2.
Needs torch (Debian: python3-torch).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

PROG = "sglang_to_moebench.py"


class InputError(Exception):
    pass


def _find_moebench(explicit):
    here = os.path.dirname(os.path.abspath(__file__))
    for c in (explicit, os.environ.get("MOEBENCH"), os.path.join(here, "..", "..", "build", "release", "moebench"),
              shutil.which("moebench")):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise InputError("cannot find the moebench executable (pass --moebench PATH or set MOEBENCH)")


def _ints(value, where, field):
    """A list of ints from a list or a 1-D integer tensor."""
    import torch
    if isinstance(value, torch.Tensor):
        if value.dim() != 1 or value.dtype.is_floating_point:
            raise InputError("%s: field %s: expected a 1-D integer list, got a %s tensor of shape %s"
                             % (where, field, value.dtype, list(value.shape)))
        return value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, int) for x in value):
        raise InputError("%s: field %s: expected a list of integers" % (where, field))
    return list(value)


def load_dump(path):
    import torch
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or not a torch.save file
        raise InputError("%s: cannot load (truncated or not a torch.save file): %s" % (path, str(e).splitlines()[0]))
    if not isinstance(data, dict):
        raise InputError("%s: expected a dict with records and last_physical_to_logical_map" % path)
    for key in ("records", "last_physical_to_logical_map"):
        if key not in data:
            raise InputError("%s: field %s is missing (not a per_token dump?)" % (path, key))
    m = data["last_physical_to_logical_map"]
    if not isinstance(m, torch.Tensor) or m.dim() != 2 or m.dtype.is_floating_point:
        raise InputError("%s: field last_physical_to_logical_map: expected an integer [layers, num_physical] tensor"
                         % path)
    if not isinstance(data["records"], list):
        raise InputError("%s: field records: expected a list" % path)
    return data


def read_records(path, data):
    """Yields (forward_pass_id, rank, tokens) with tokens = [(seq_index, position, token_id, {layer: ids})]."""
    import torch
    phys_map = data["last_physical_to_logical_map"].to(torch.int64)
    num_layers, num_physical = phys_map.shape
    for i, rec in enumerate(data["records"]):
        where = "%s: record %d" % (path, i)
        if not isinstance(rec, dict):
            raise InputError("%s: not a dict" % where)
        for key in ("forward_pass_id", "rank", "topk_ids_of_layer", "input_ids", "positions", "extend_seq_lens"):
            if key not in rec:
                raise InputError("%s: field %s is missing" % (where, key))
        t = rec["topk_ids_of_layer"]
        if not isinstance(t, torch.Tensor):
            raise InputError("%s: field topk_ids_of_layer: not a tensor" % where)
        if t.dtype != torch.int32:
            raise InputError("%s: field topk_ids_of_layer: dtype %s, expected torch.int32" % (where, t.dtype))
        if t.dim() != 3:
            raise InputError("%s: field topk_ids_of_layer: %d dimensions %s, expected [layers, tokens, topk]"
                             % (where, t.dim(), list(t.shape)))
        if t.shape[0] != num_layers:
            raise InputError("%s: field topk_ids_of_layer: %d layers, last_physical_to_logical_map has %d"
                             % (where, t.shape[0], num_layers))
        positions = _ints(rec["positions"], where, "positions")
        input_ids = _ints(rec["input_ids"], where, "input_ids")
        n = t.shape[1]
        if len(positions) != n or len(input_ids) != n:
            raise InputError("%s: field positions/input_ids: %d and %d entries for %d tokens of topk_ids_of_layer"
                             % (where, len(positions), len(input_ids), n))
        lens = rec["extend_seq_lens"]
        lens = [1] * n if lens is None else _ints(lens, where, "extend_seq_lens")
        if sum(lens) != n or any(x < 0 for x in lens):
            raise InputError("%s: field extend_seq_lens: %s sums to %d for %d tokens" % (where, lens, sum(lens), n))
        ids = t.to(torch.int64)
        valid = ids >= 0
        # -1 pads the end of a row only: no id after a -1
        after_gap = (valid[:, :, 1:] & ~valid[:, :, :-1]).any(dim=2)
        if after_gap.any():
            l, tok = [int(x) for x in after_gap.nonzero()[0]]
            raise InputError("%s: field topk_ids_of_layer: layer %d token %d: an id follows -1 in %s"
                             % (where, l, tok, ids[l, tok].tolist()))
        bad = (ids < -1) | (ids >= num_physical)
        if bad.any():
            l, tok, j = [int(x) for x in bad.nonzero()[0]]
            raise InputError("%s: field topk_ids_of_layer: layer %d token %d: physical expert id %d outside the map's "
                             "[0, %d) (last_physical_to_logical_map)" % (where, l, tok, int(ids[l, tok, j]), num_physical))
        logical = torch.where(valid, torch.gather(phys_map, 1, ids.clamp(min=0).reshape(num_layers, -1))
                              .reshape(ids.shape), torch.full_like(ids, -1))
        srt = logical.sort(dim=2).values
        twice = ((srt[:, :, 1:] == srt[:, :, :-1]) & (srt[:, :, 1:] >= 0)).any(dim=2)
        if twice.any():
            l, tok = [int(x) for x in twice.nonzero()[0]]
            raise InputError("%s: field topk_ids_of_layer: layer %d token %d: physical ids %s map to logical %s "
                             "(an expert twice)" % (where, l, tok, ids[l, tok].tolist(), logical[l, tok].tolist()))
        seq_of = [s for s, length in enumerate(lens) for _ in range(length)]
        yield (int(rec["forward_pass_id"]), int(rec["rank"]), logical, seq_of, positions, input_ids, where)


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--in", dest="inputs", nargs="+", required=True, help="SGLang per_token dump files (.pt)")
    ap.add_argument("--out", required=True, help="moebench trace to write")
    ap.add_argument("--experts", type=int, default=0, help="logical experts E (default: the map's largest id + 1)")
    ap.add_argument("--layer-mismatch", default="error", choices=["error", "intersect"])
    ap.add_argument("--model", default="")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--moebench", default=None, help="the moebench executable")
    args = ap.parse_args(argv)
    tmp = args.out + ".sglang.jsonl"
    try:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise InputError("needs torch (Debian: apt-get install python3-torch)")
        mb = _find_moebench(args.moebench)
        if os.path.exists(args.out) and not args.force:
            raise InputError("%s: exists (pass --force to replace it)" % args.out)
        passes, E, used_layers = {}, args.experts, set()
        seq_base = 0
        for path in args.inputs:
            data = load_dump(path)
            E = E or int(data["last_physical_to_logical_map"].max()) + 1
            for fp, rank, logical, seq_of, positions, input_ids, where in read_records(path, data):
                used_layers.update(int(l) for l in (logical >= 0).any(dim=2).any(dim=1).nonzero().flatten())
                seq = [seq_base + s for s in seq_of]
                seq_base += (max(seq_of) + 1) if seq_of else 0
                passes.setdefault(fp, []).append((rank, logical, seq, positions, input_ids))
        if not used_layers:
            raise InputError("%s: no expert id in any record" % args.inputs[0])
        with open(tmp, "w") as f:
            for fp in sorted(passes):
                for rank, logical, seq, positions, input_ids in sorted(passes[fp], key=lambda r: r[0]):
                    for layer in sorted(used_layers):
                        rows = logical[layer].tolist()
                        keep = [i for i, r in enumerate(rows) if r[0] >= 0]
                        if not keep:
                            continue
                        f.write(json.dumps({"step": fp, "layer": layer, "rank": rank,
                                            "seq": [seq[i] for i in keep], "pos": [positions[i] for i in keep],
                                            "tok": [input_ids[i] for i in keep],
                                            "ids": [[x for x in rows[i] if x >= 0] for i in keep]}) + "\n")
        cmd = [mb, "trace", "convert", "--from", "jsonl", "--in", tmp, "--out", args.out, "--experts", str(E),
               "--field", "experts=ids", "--field", "layer=layer", "--field", "step=step", "--field", "rank=rank",
               "--field", "sequence=seq", "--field", "position=pos", "--field", "token=tok",
               "--layer-mismatch", args.layer_mismatch, "--model", args.model]
        if args.force:
            cmd.append("--force")
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        text = p.stdout.replace(tmp, "(forward passes of %s)" % ", ".join(args.inputs))
        if p.returncode != 0:
            lines = [l for l in text.splitlines() if l.startswith("moebench: error: ")]
            raise InputError(lines[0][len("moebench: error: "):] if lines else text.strip())
        sys.stdout.write(text)
        return 0
    except InputError as e:
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        return 2
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


if __name__ == "__main__":
    sys.exit(main())
