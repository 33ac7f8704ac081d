#!/usr/bin/env python3
"""Capture the router logits of a PyTorch MoE model into a moebench trace (workloads/TRACE_FORMAT.md).

Forward hooks on the model's gate/router modules (found by a regex on module names, with presets
for common layouts) record, per token, the logits over all routed experts together with the step
(one forward pass = one step), the sequence (a batch row, unique over the whole trace) and the
position in the sequence. The result is a `moebench-trace` v1 file of kind `logits`, which
`moebench run --workload trace --trace FILE` replays under any router.

As a library:

    from capture_router_trace import TraceRecorder
    rec = TraceRecorder(model, preset="mixtral", top_k=2)
    with rec:                                    # hooks installed here, removed on exit
        for batch in batches:
            with rec.step(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]):
                model(**batch)                   # one forward pass = one step
    rec.write("t.h5", model="my-moe", source="val.txt")

As a command (see --help and workloads/capture/README.md):

    python3 capture_router_trace.py --model-module my_model.py:build --preset mixtral --out t.h5
    python3 capture_router_trace.py --hf-model DIR --text-file val.txt --out t.h5   # needs transformers

Needs torch, h5py and numpy. Run from an interpreter that lacks them, the script re-executes itself
under one that has them (the list in MOEBENCH_CAPTURE_PYTHON, colon-separated, else /usr/bin/python3
and the python3.N / python3 on PATH) or exits with code 3 naming the packages to install.
Exit codes: 0 done, 2 bad input or capture error (one line on stderr), 3 no usable interpreter.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

PROG = "capture_router_trace.py"
VERSION = "1"
REQUIRED_MODULES = ("torch", "h5py", "numpy")
DEBIAN_PACKAGES = "python3-torch python3-h5py python3-numpy"
EXIT_BAD_INPUT = 2
EXIT_NO_INTERPRETER = 3


# ---------------------------------------------------------------- interpreter selection (no torch yet)

def _missing_modules():
    return [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]


def _candidate_interpreters():
    listed = os.environ.get("MOEBENCH_CAPTURE_PYTHON")
    if listed is not None:
        return [p for p in listed.split(os.pathsep) if p]
    found = ["/usr/bin/python3"]
    for minor in range(20, 7, -1):
        path = shutil.which("python3.%d" % minor)
        if path:
            found.append(path)
    path = shutil.which("python3")
    if path:
        found.append(path)
    unique = []
    for p in found:
        if p not in unique:
            unique.append(p)
    return unique


def _probe(python):
    """The modules of REQUIRED_MODULES that `python` lacks, or None when it cannot be run."""
    code = ("import importlib.util as u, sys; "
            "m = [n for n in sys.argv[1:] if u.find_spec(n) is None]; print(','.join(m))")
    try:
        out = subprocess.run([python, "-c", code] + list(REQUIRED_MODULES), capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    line = out.stdout.strip()
    return [m for m in line.split(",") if m]


def _reexec_or_exit():
    """Return when this interpreter has torch, h5py and numpy; else exec one that has, or exit 3."""
    missing = _missing_modules()
    if not missing:
        return
    tried = ["%s (lacks %s)" % (sys.executable, ", ".join(missing))]
    if os.environ.get("MOEBENCH_CAPTURE_REEXEC") != "1":
        for python in _candidate_interpreters():
            if not (os.path.isfile(python) and os.access(python, os.X_OK)):
                tried.append("%s (not found)" % python)
                continue
            lacks = _probe(python)
            if lacks is None:
                tried.append("%s (does not run)" % python)
            elif lacks:
                tried.append("%s (lacks %s)" % (python, ", ".join(lacks)))
            else:
                os.environ["MOEBENCH_CAPTURE_REEXEC"] = "1"
                script = os.path.abspath(__file__)
                os.execv(python, [python, script] + sys.argv[1:])
    sys.stderr.write(
        "%s: needs the Python packages torch, h5py and numpy, and no interpreter here has all three "
        "(tried: %s). On Debian/Ubuntu: apt-get install %s (then any of python3, /usr/bin/python3 "
        "runs it); elsewhere: pip install torch h5py numpy, or set MOEBENCH_CAPTURE_PYTHON to an "
        "interpreter that has them.\n" % (PROG, "; ".join(tried), DEBIAN_PACKAGES))
    sys.exit(EXIT_NO_INTERPRETER)


if __name__ == "__main__":
    _reexec_or_exit()

try:
    import h5py
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # imported as a library from an interpreter without them
    raise ImportError("%s needs torch, h5py and numpy (%s); on Debian/Ubuntu: apt-get install %s"
                      % (PROG, e, DEBIAN_PACKAGES)) from e

import argparse  # noqa: E402
import contextlib  # noqa: E402
import inspect  # noqa: E402
import re  # noqa: E402

# ---------------------------------------------------------------- presets

# Each preset: a regex on the names of model.named_modules(), and where the logits come from:
#   "auto":   the gate's output when it is a logits tensor (one float row of E values per input token),
#             or the first element of a tuple output that is one (the `TopKRouter`s of recent
#             transformers return (logits, scores, ids)); else recomputed as for "weight".
#   "weight": recomputed from the hook's input hidden states and the gate's `weight` [E, H] (and
#             `bias`, when the module has one) in float32: logits = x @ weight.T (+ bias). For gates
#             that return something else (DeepSeek's MoEGate returns top-k ids and weights).
#   "output": (option only) the gate's output, and an error when it is not a logits tensor.
PRESETS = {
    "mixtral": (r"(^|\.)layers\.\d+\.(block_sparse_moe|mlp)\.gate$", "auto",
                "Mixtral: layers.N.block_sparse_moe.gate (layers.N.mlp.gate in transformers >= 5)"),
    "qwen_moe": (r"(^|\.)layers\.\d+\.mlp\.gate$", "auto",
                 "Qwen-MoE / Qwen2-MoE / Qwen3-MoE: layers.N.mlp.gate (not shared_expert_gate)"),
    "olmoe": (r"(^|\.)layers\.\d+\.mlp\.gate$", "auto", "OLMoE: layers.N.mlp.gate"),
    "deepseek": (r"(^|\.)layers\.\d+\.mlp\.gate$", "weight",
                 "DeepSeek V2/V3 MoEGate: layers.N.mlp.gate, logits = hidden @ gate.weight.T in fp32 "
                 "(the gate itself returns top-k ids/weights; e_score_correction_bias not included)"),
}
PRESET_ALIASES = {"qwen2_moe": "qwen_moe", "qwen3_moe": "qwen_moe", "qwen": "qwen_moe",
                  "deepseek_v2": "deepseek", "deepseek_v3": "deepseek"}
# transformers' config.model_type -> preset, for --hf-model without --preset/--pattern.
MODEL_TYPE_PRESETS = {"mixtral": "mixtral", "qwen2_moe": "qwen_moe", "qwen3_moe": "qwen_moe",
                      "olmoe": "olmoe", "deepseek_v2": "deepseek", "deepseek_v3": "deepseek",
                      "deepseek": "deepseek"}
LOGIT_SOURCES = ("auto", "output", "weight")
MAX_CHUNK_TOKENS = 65536


class CaptureError(Exception):
    """A problem with the model, the inputs or the arguments; the CLI prints it as one line."""


def resolve_preset(name):
    key = PRESET_ALIASES.get(name, name)
    if key not in PRESETS:
        raise CaptureError("preset '%s' is unknown (known: %s)"
                           % (name, ", ".join(sorted(list(PRESETS) + list(PRESET_ALIASES)))))
    return key


def layer_id_of(module_name, regex=None):
    """The model's layer number in a module name: the regex group `layer` when the pattern has one,
    else the number in `layers.N.`, else the last purely numeric name component."""
    if regex is not None and "layer" in regex.groupindex:
        m = regex.search(module_name)
        if m and m.group("layer") is not None:
            return int(m.group("layer"))
    m = re.search(r"(?:^|\.)layers\.(\d+)(?:\.|$)", module_name)
    if m:
        return int(m.group(1))
    numbers = [int(part) for part in module_name.split(".") if part.isdigit()]
    if numbers:
        return numbers[-1]
    raise CaptureError("module '%s': no layer number in its name (expected 'layers.N.'; or give the "
                       "pattern a named group (?P<layer>\\d+))" % module_name)


def _as_mask(mask, shape, what):
    mask = torch.as_tensor(mask).detach().to("cpu")
    if mask.dim() != 2:
        raise CaptureError("%s: expected shape [batch, seq], got %s" % (what, list(mask.shape)))
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise CaptureError("%s: shape %s does not match the batch %s" % (what, list(mask.shape), list(shape)))
    return mask != 0


class _Gate:
    def __init__(self, name, module, layer_id):
        self.name = name
        self.module = module
        self.layer_id = layer_id
        self.handle = None
        self.calls = []  # this step: (logits [N, E] float32 cpu, batch shape (B, S) or None)


class TraceRecorder:
    """Records the router logits of `model` step by step; `write()` stores them as a moebench trace.

    preset / pattern: which modules are gates (`pattern`, a regex searched in module names, wins).
    logits_from: None (the preset's way; "auto" for a pattern), "auto" (the gate's output when it is a
    logits tensor, else recomputed from input and weight), "output" (the gate's output, or an error)
    or "weight" (recomputed from input and weight in fp32).
    num_experts: checked against what the gates produce (None: taken from them).
    top_k: the model's k for the `top_k` attribute (None: the gates' or their parents' `top_k` /
    `num_experts_per_tok` attribute when they have one, else 0).
    dtype: "fp16" (default) or "fp32", the type of the stored logits.
    """

    def __init__(self, model, preset=None, pattern=None, num_experts=None, top_k=None, dtype="fp16",
                 logits_from=None):
        if not isinstance(model, torch.nn.Module):
            raise CaptureError("model: expected a torch.nn.Module, got %s" % type(model).__name__)
        if pattern is None and preset is None:
            raise CaptureError("give a preset (%s) or a pattern" % ", ".join(sorted(PRESETS)))
        self.preset = resolve_preset(preset) if preset is not None else None
        if pattern is not None:
            self.pattern = pattern
            preset_source = "auto"
        else:
            self.pattern, preset_source = PRESETS[self.preset][0], PRESETS[self.preset][1]
        try:
            regex = re.compile(self.pattern)
        except re.error as e:
            raise CaptureError("pattern '%s': not a valid regular expression (%s)" % (self.pattern, e))
        if logits_from is not None and logits_from not in LOGIT_SOURCES:
            raise CaptureError("logits_from '%s': expected one of %s" % (logits_from, ", ".join(LOGIT_SOURCES)))
        self.logits_from = preset_source if logits_from is None else logits_from
        dtypes = {"fp16": np.float16, "float16": np.float16, "fp32": np.float32, "float32": np.float32}
        if dtype not in dtypes:
            raise CaptureError("dtype '%s': expected fp16 or fp32" % dtype)
        self.np_dtype = dtypes[dtype]
        if num_experts is not None and int(num_experts) < 1:
            raise CaptureError("num_experts %s: must be >= 1" % num_experts)
        if top_k is not None and int(top_k) < 0:
            raise CaptureError("top_k %s: must be >= 0" % top_k)
        self.model = model
        self.num_experts = None if num_experts is None else int(num_experts)

        modules = dict(model.named_modules())
        gates = [(n, m) for n, m in modules.items() if n and regex.search(n)]
        if not gates:
            hint = [n for n in modules if re.search(r"gate|router", n.split(".")[-1] if n else "", re.I)]
            hint = [n for n in hint if not n.endswith(("gate_proj", "gate_up_proj"))]
            raise CaptureError("pattern '%s'%s: no module of %s matches%s" % (
                self.pattern, " (preset %s)" % self.preset if pattern is None and self.preset else "",
                type(model).__name__,
                " (modules named like gates: %s%s)" % (", ".join(hint[:6]), ", ..." if len(hint) > 6 else "")
                if hint else " (and no module is named like a gate or router)"))
        by_layer = {}
        for name, module in gates:
            lid = layer_id_of(name, regex)
            if lid in by_layer:
                raise CaptureError("pattern '%s': modules '%s' and '%s' both map to layer %d; narrow the "
                                   "pattern" % (self.pattern, by_layer[lid].name, name, lid))
            by_layer[lid] = _Gate(name, module, lid)
        self.gates = [by_layer[k] for k in sorted(by_layer)]
        for g in self.gates:
            if self.logits_from == "weight" and not isinstance(getattr(g.module, "weight", None), torch.Tensor):
                raise CaptureError("module '%s' (%s): has no 'weight' to compute logits from"
                                   % (g.name, type(g.module).__name__))
        self.top_k = int(top_k) if top_k is not None else self._find_top_k(modules)

        self._installed = False
        self._root_handle = None
        self._in_step = False
        self._root_shape = None
        self._steps = []        # per step: dict of numpy arrays
        self._next_sequence = 0

    # ---------------------------------------------------------------- discovery
    def _find_top_k(self, modules):
        for g in self.gates:
            parent = modules.get(g.name.rsplit(".", 1)[0]) if "." in g.name else None
            for obj in (g.module, parent):
                for attr in ("top_k", "num_experts_per_tok"):
                    v = getattr(obj, attr, None) if obj is not None else None
                    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                        return v
        return 0

    @property
    def layer_ids(self):
        return [g.layer_id for g in self.gates]

    @property
    def num_steps(self):
        return len(self._steps)

    # ---------------------------------------------------------------- hooks
    def install(self):
        if self._installed:
            return self
        for g in self.gates:
            g.handle = self._register(g.module, self._make_hook(g))
        try:  # torch >= 2.0: the model's keyword arguments too (input_ids=...)
            self._root_handle = self.model.register_forward_pre_hook(self._root_pre_hook, with_kwargs=True)
        except TypeError:
            self._root_handle = self.model.register_forward_pre_hook(lambda m, a: self._root_pre_hook(m, a, {}))
        self._installed = True
        return self

    def remove(self):
        for g in self.gates:
            if g.handle is not None:
                g.handle.remove()
                g.handle = None
        if self._root_handle is not None:
            self._root_handle.remove()
            self._root_handle = None
        self._installed = False

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.remove()
        return False

    @staticmethod
    def _register(module, hook):
        try:  # torch >= 2.0 passes keyword arguments to hooks that ask for them
            return module.register_forward_hook(lambda m, a, k, o: hook(m, a, k, o), with_kwargs=True)
        except TypeError:
            return module.register_forward_hook(lambda m, a, o: hook(m, a, {}, o))

    def _root_pre_hook(self, module, args, kwargs):
        """The batch shape (B, S) from the model's first argument: integer ids [B, S] or embeddings [B, S, H]."""
        if self._in_step and self._root_shape is None:
            first = args[0] if args else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
            if isinstance(first, torch.Tensor) and (first.dim() == 3 or (first.dim() == 2 and not
                                                                        first.is_floating_point())):
                self._root_shape = tuple(first.shape[:2])

    def _make_hook(self, gate):
        def hook(module, args, kwargs, output):
            if not self._in_step:
                return
            x = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
            if x is None:
                raise CaptureError("module '%s': called without a hidden-states tensor" % gate.name)
            logits = None
            w = getattr(module, "weight", None)
            if self.logits_from in ("auto", "output"):
                out = output[0] if isinstance(output, (tuple, list)) and output else output
                tokens = x.numel() // max(x.shape[-1], 1)
                if (isinstance(out, torch.Tensor) and out.is_floating_point() and out.dim() in (2, 3)
                        and out.numel() == tokens * out.shape[-1]
                        and (not isinstance(w, torch.Tensor) or w.dim() != 2 or w.shape[0] == out.shape[-1])):
                    logits = out
                elif self.logits_from == "output":
                    raise CaptureError("module '%s' (%s): its output is not a logits tensor with one row per "
                                       "token (use logits_from weight / --logits-from weight)"
                                       % (gate.name, type(module).__name__))
            if logits is None:
                if not isinstance(w, torch.Tensor) or w.dim() != 2 or w.shape[1] != x.shape[-1]:
                    raise CaptureError("module '%s' (%s): its output is not a logits tensor and it has no "
                                       "weight [experts, %d] to compute them from"
                                       % (gate.name, type(module).__name__, x.shape[-1]))
                b = getattr(module, "bias", None)
                logits = F.linear(x.detach().float(), w.detach().float(),
                                  b.detach().float() if isinstance(b, torch.Tensor) else None)
            if x.dim() == 3:
                shape = tuple(x.shape[:2])
            elif x.dim() == 2:
                shape = None
            else:
                raise CaptureError("module '%s': input of shape %s; expected [batch, seq, hidden] or "
                                   "[tokens, hidden]" % (gate.name, list(x.shape)))
            rows = logits.detach().reshape(-1, logits.shape[-1]).to("cpu", torch.float32, copy=True)
            gate.calls.append((rows, shape))
        return hook

    # ---------------------------------------------------------------- steps
    @contextlib.contextmanager
    def step(self, input_ids=None, attention_mask=None, batch_shape=None, domain=None):
        """One step: the forward pass(es) inside run every gate once on one batch of B sequences of
        S positions. attention_mask [B, S] (nonzero = real token) drops padded positions; the
        position of a token is the number of real tokens before it in its row. input_ids [B, S]
        are stored as /tokens/token_id; domain (an int, or [B] or [B, S] ints) as /tokens/domain.
        batch_shape (B, S) is needed only when gates see flattened [B*S, H] input and neither
        input_ids, attention_mask nor the model's first argument (ids [B, S] or embeddings
        [B, S, H]) tell it."""
        if self._in_step:
            raise CaptureError("step(): steps cannot be nested")
        installed_here = not self._installed
        self.install()
        for g in self.gates:
            g.calls = []
        self._root_shape = None
        self._in_step = True
        try:
            yield self
            self._in_step = False
            self._finish_step(input_ids, attention_mask, batch_shape, domain)
        finally:
            self._in_step = False
            for g in self.gates:
                g.calls = []
            if installed_here:
                self.remove()

    def _finish_step(self, input_ids, attention_mask, batch_shape, domain):
        s = len(self._steps)
        for g in self.gates:
            if len(g.calls) != 1:
                raise CaptureError("step %d: gate '%s' ran %d times; each gate must run exactly once per "
                                   "step (one forward pass per step)" % (s, g.name, len(g.calls)))
        # Batch shape (B, S): explicit, from the inputs, from a 3-D gate input, from the model's argument.
        shape = tuple(int(v) for v in batch_shape) if batch_shape is not None else None
        if shape is not None and (len(shape) != 2 or min(shape) < 1):
            raise CaptureError("batch_shape %s: expected (batch, seq)" % (list(shape),))
        for what, t in (("input_ids", input_ids), ("attention_mask", attention_mask)):
            if t is not None:
                t_shape = tuple(torch.as_tensor(t).shape)
                if len(t_shape) != 2:
                    raise CaptureError("%s: expected shape [batch, seq], got %s" % (what, list(t_shape)))
                if shape is not None and t_shape != shape:
                    raise CaptureError("%s: shape %s does not match the batch %s" % (what, list(t_shape), list(shape)))
                shape = t_shape
        if shape is None:
            shape = next((c[0][1] for c in (g.calls for g in self.gates) if c[0][1] is not None), None)
        if shape is None:
            shape = self._root_shape
        if shape is None:
            raise CaptureError("step %d: the gates saw flattened [tokens, hidden] input and the batch shape is "
                               "unknown; pass input_ids=, attention_mask= or batch_shape=(B, S) to step()" % s)
        B, S = shape
        experts = None
        for g in self.gates:
            logits, gshape = g.calls[0]
            if gshape is not None and gshape != shape:
                raise CaptureError("step %d: gate '%s' saw a batch of %s, the step's is %s"
                                   % (s, g.name, list(gshape), list(shape)))
            if logits.shape[0] != B * S:
                raise CaptureError("step %d: gate '%s' routed %d tokens; the batch %s has %d"
                                   % (s, g.name, logits.shape[0], list(shape), B * S))
            if experts is None:
                experts = logits.shape[1]
            elif logits.shape[1] != experts:
                raise CaptureError("step %d: gate '%s' gives %d experts, gate '%s' gives %d"
                                   % (s, g.name, logits.shape[1], self.gates[0].name, experts))
        if self.num_experts is None:
            self.num_experts = experts
        elif experts != self.num_experts:
            raise CaptureError("num_experts %d: the gates give logits over %d experts" % (self.num_experts, experts))

        mask = (_as_mask(attention_mask, shape, "attention_mask") if attention_mask is not None
                else torch.ones(B, S, dtype=torch.bool))
        keep = mask.reshape(-1)
        positions = (torch.cumsum(mask.to(torch.int64), dim=1) - 1).reshape(-1)[keep]
        sequences = (self._next_sequence + torch.arange(B, dtype=torch.int64)).repeat_interleave(S)[keep]
        rec = {"sequence": sequences.numpy(), "position": positions.to(torch.int32).numpy()}
        if input_ids is not None:
            rec["token_id"] = torch.as_tensor(input_ids).detach().to("cpu", torch.int64).reshape(-1)[keep].numpy()
        if domain is not None:
            d = torch.as_tensor(domain).detach().to("cpu", torch.int64)
            if d.dim() == 0:
                d = d.expand(B, S)
            elif d.dim() == 1 and d.shape[0] == B:
                d = d[:, None].expand(B, S)
            elif tuple(d.shape) != shape:
                raise CaptureError("domain: expected an int, [batch] or [batch, seq], got shape %s" % list(d.shape))
            rec["domain"] = d.reshape(-1)[keep].to(torch.int32).numpy()
        layers = []
        for g in self.gates:
            z = g.calls[0][0][keep]
            if not bool(torch.isfinite(z).all()):
                raise CaptureError("step %d: gate '%s' produced non-finite logits" % (s, g.name))
            zc = z.numpy().astype(self.np_dtype)
            if not np.isfinite(zc).all():
                raise CaptureError("step %d: gate '%s': logits up to %g overflow fp16; use dtype fp32"
                                   % (s, g.name, float(z.abs().max())))
            layers.append(zc)
        rec["logits"] = layers
        self._steps.append(rec)
        self._next_sequence += B

    # ---------------------------------------------------------------- output
    def write(self, path, model="", source="", capture_method=None, force=False):
        """Write the recorded steps as a moebench trace at `path` (built as PATH.tmp, then renamed).
        Returns a dict summary."""
        if not self._steps:
            raise CaptureError("%s: nothing recorded (no step ran)" % path)
        T = sum(len(r["sequence"]) for r in self._steps)
        if T == 0:
            raise CaptureError("%s: every recorded position was masked out; no token to write" % path)
        if os.path.exists(path) and not force:
            raise CaptureError("%s: file exists; refusing to overwrite (force=True / --force)" % path)
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise CaptureError("%s: directory %s does not exist" % (path, directory))
        if capture_method is None:
            capture_method = self.describe_method()
        tmp = path + ".tmp"
        L, E, S = len(self.gates), int(self.num_experts), len(self._steps)
        offsets = np.zeros(S + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(r["sequence"]) for r in self._steps])
        try:
            with h5py.File(tmp, "w") as f:
                _attr_str(f, "format", "moebench-trace")
                _attr_int(f, "format_version", 1)
                _attr_str(f, "kind", "logits")
                _attr_int(f, "num_experts", E)
                _attr_int(f, "num_layers", L)
                _attr_int(f, "num_steps", S)
                _attr_int(f, "num_tokens", T)
                _attr_int(f, "top_k", self.top_k)
                _attr_int(f, "variable_k", 0)
                f.attrs.create("layer_ids", np.asarray(self.layer_ids, dtype=np.int64))
                _attr_int(f, "has_sequences", 1)
                _attr_str(f, "weights_are", "")
                _attr_str(f, "model", model or "")
                _attr_str(f, "source", source or "")
                _attr_str(f, "capture_method", capture_method)
                _attr_str(f, "created_by", "%s %s (torch %s, h5py %s)"
                          % (PROG, VERSION, torch.__version__, h5py.__version__))
                chunk = min(T, MAX_CHUNK_TOKENS)
                tokens = f.create_group("tokens")
                steps = np.repeat(np.arange(S, dtype=np.int32), np.diff(offsets))
                columns = [("step", steps, np.int32), ("sequence", None, np.int64), ("position", None, np.int32)]
                for optional in ("token_id", "domain"):
                    present = [optional in r for r in self._steps]
                    if all(present):
                        columns.append((optional, None, np.int64 if optional == "token_id" else np.int32))
                    elif any(present):
                        raise CaptureError("%s: %s given for some steps only; give it for every step or none"
                                           % (path, optional))
                for name, values, dt in columns:
                    if values is None:
                        values = np.concatenate([r[name] for r in self._steps]).astype(dt)
                    tokens.create_dataset(name, data=values, dtype=dt, chunks=(chunk,), shuffle=True,
                                          compression="gzip", compression_opts=4)
                f.create_group("steps").create_dataset("offset", data=offsets, dtype=np.int64)
                ds = f.create_dataset("logits", shape=(L, T, E), dtype=self.np_dtype, chunks=(1, chunk, E),
                                      shuffle=True, compression="gzip", compression_opts=4)
                for layer in range(L):
                    ds[layer] = np.concatenate([r["logits"][layer] for r in self._steps])
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        return {"path": path, "steps": S, "layers": L, "layer_ids": self.layer_ids, "tokens": T,
                "experts": E, "top_k": self.top_k, "dtype": np.dtype(self.np_dtype).name,
                "bytes": os.path.getsize(path)}

    def describe_method(self):
        how = {"auto": "the gate output where it is a logits tensor, else input @ weight.T in fp32",
               "output": "the gate output logits",
               "weight": "logits recomputed from the gate's input hidden states and weight in fp32"}
        what = "preset %s, " % self.preset if self.preset else ""
        return "PyTorch forward hooks on %d gate modules (%spattern %s): %s" % (
            len(self.gates), what, self.pattern, how[self.logits_from])


def _attr_str(f, name, value):
    data = value.encode("utf-8")
    f.attrs.create(name, np.array(data, dtype="S%d" % max(len(data), 1)),
                   dtype=h5py.string_dtype("utf-8", max(len(data), 1)))


def _attr_int(f, name, value):
    f.attrs.create(name, np.int64(value), dtype=np.int64)


# ---------------------------------------------------------------- CLI helpers

def _parse_value(text):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def load_model_module(spec, model_args):
    """FILE.py[:FUNCTION] -> what FUNCTION(**model_args) returns (default function: build)."""
    path, _, func = spec.rpartition(":")
    if not path or not func.isidentifier():
        path, func = spec, "build"
    if not os.path.isfile(path):
        raise CaptureError("--model-module %s: no such file %s" % (spec, path))
    name = "moebench_capture_model_%s" % re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    loader_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        loader_spec.loader.exec_module(module)
    except Exception as e:
        raise CaptureError("--model-module %s: importing %s failed: %s: %s" % (spec, path, type(e).__name__, e))
    finally:
        sys.path.pop(0)
    fn = getattr(module, func, None)
    if not callable(fn):
        raise CaptureError("--model-module %s: %s has no function '%s'" % (spec, path, func))
    try:
        inspect.signature(fn).bind(**model_args)
    except (TypeError, ValueError) as e:
        raise CaptureError("--model-module %s: %s(%s) does not fit its signature %s: %s"
                           % (spec, func, ", ".join("%s=%r" % kv for kv in model_args.items()),
                              inspect.signature(fn), e))
    got = fn(**model_args)
    if isinstance(got, dict):
        info = dict(got)
    elif isinstance(got, (tuple, list)) and len(got) == 2:
        info = {"model": got[0], "batches": got[1]}
    else:
        raise CaptureError("--model-module %s: %s returned %s; expected (model, batches) or a dict with keys "
                           "model, batches (optional: name, top_k, num_experts, preset, pattern)"
                           % (spec, func, type(got).__name__))
    for key in ("model", "batches"):
        if key not in info:
            raise CaptureError("--model-module %s: the dict %s returned has no '%s'" % (spec, func, key))
    info["_path"] = path
    return info


def _batch_call(batch, index, device):
    """(args, kwargs, step kwargs) for one batch: a tensor -> model(x); a dict -> model(**dict)."""
    if isinstance(batch, torch.Tensor):
        x = batch.to(device)
        step = {"input_ids": x} if not x.is_floating_point() and x.dim() == 2 else {}
        return (x,), {}, step
    if isinstance(batch, dict):
        kwargs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items() if k != "domain"}
        step = {}
        if isinstance(kwargs.get("input_ids"), torch.Tensor):
            step["input_ids"] = kwargs["input_ids"]
        if isinstance(kwargs.get("attention_mask"), torch.Tensor) and kwargs["attention_mask"].dim() == 2:
            step["attention_mask"] = kwargs["attention_mask"]
        if "domain" in batch:
            step["domain"] = batch["domain"]
        return (), kwargs, step
    raise CaptureError("batch %d: expected a tensor or a dict of model arguments, got %s"
                       % (index, type(batch).__name__))


def capture(model, batches, recorder, device="cpu", max_batches=None, log=None):
    """Run every batch through the model (eval mode, no grad), one step each."""
    model.eval()
    with torch.no_grad(), recorder:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            args, kwargs, step = _batch_call(batch, i, device)
            with recorder.step(**step):
                model(*args, **kwargs)
            if log:
                log("step %d: %d tokens" % (i, len(recorder._steps[-1]["sequence"])))
    return recorder


def hf_batches(tokenizer, text_file, seq_len, batch_size):
    """Each non-empty line of text_file is a document, cut into sequences of <= seq_len tokens;
    batches of batch_size sequences, right-padded, with an attention mask."""
    try:
        with open(text_file, encoding="utf-8") as fh:
            lines = [ln.strip() for ln in fh]
    except OSError as e:
        raise CaptureError("--text-file %s: %s" % (text_file, e.strerror or e))
    except UnicodeDecodeError as e:
        raise CaptureError("--text-file %s: not UTF-8 text (%s)" % (text_file, e.reason))
    pieces = []
    for line in lines:
        if not line:
            continue
        ids = list(tokenizer(line)["input_ids"])
        pieces.extend(ids[i:i + seq_len] for i in range(0, len(ids), seq_len))
    if not pieces:
        raise CaptureError("--text-file %s: no text (every line is empty)" % text_file)
    pad = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else \
        (getattr(tokenizer, "eos_token_id", None) or 0)
    batches = []
    for b in range(0, len(pieces), batch_size):
        group = pieces[b:b + batch_size]
        width = max(len(p) for p in group)
        ids = torch.full((len(group), width), int(pad), dtype=torch.int64)
        mask = torch.zeros((len(group), width), dtype=torch.int64)
        for r, p in enumerate(group):
            ids[r, :len(p)] = torch.tensor(p, dtype=torch.int64)
            mask[r, :len(p)] = 1
        batches.append({"input_ids": ids, "attention_mask": mask, "use_cache": False})
    return batches


def load_hf_model(args):
    try:
        import transformers
    except ImportError:
        raise CaptureError("--hf-model %s: needs the Python package transformers, which %s lacks (pip install "
                           "transformers into it, or use --model-module FILE.py:FUNCTION)"
                           % (args.hf_model, sys.executable))
    if not args.text_file:
        raise CaptureError("--hf-model %s: needs --text-file FILE (the text to run through the model)" % args.hf_model)
    dtypes = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(args.hf_model, trust_remote_code=args.trust_remote_code)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            args.hf_model, torch_dtype=dtypes[args.torch_dtype], trust_remote_code=args.trust_remote_code)
    except Exception as e:
        raise CaptureError("--hf-model %s: loading failed: %s: %s" % (args.hf_model, type(e).__name__,
                                                                      str(e).splitlines()[0] if str(e) else ""))
    config = getattr(model, "config", None)
    info = {"model": model.to(args.device), "name": getattr(config, "_name_or_path", "") or args.hf_model,
            "batches": hf_batches(tokenizer, args.text_file, args.seq_len, args.batch_size),
            "source": args.text_file}
    top_k = getattr(config, "num_experts_per_tok", None)
    if isinstance(top_k, int):
        info["top_k"] = top_k
    model_type = getattr(config, "model_type", None)
    if model_type in MODEL_TYPE_PRESETS:
        info["preset"] = MODEL_TYPE_PRESETS[model_type]
    return info


def _positive(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % text)
    if v < 1:
        raise argparse.ArgumentTypeError("%r must be >= 1" % text)
    return v


def _non_negative(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % text)
    if v < 0:
        raise argparse.ArgumentTypeError("%r must be >= 0" % text)
    return v


def build_parser():
    p = argparse.ArgumentParser(
        prog=PROG, description="Hook a PyTorch MoE model's gate modules and write their router logits as a "
                               "moebench trace (workloads/TRACE_FORMAT.md, kind logits).",
        epilog="Presets: " + "; ".join("%s = %s" % (k, v[2]) for k, v in PRESETS.items())
               + ". Aliases: " + ", ".join("%s -> %s" % kv for kv in PRESET_ALIASES.items()) + ".")
    src = p.add_argument_group("model and inputs (one of)")
    src.add_argument("--model-module", metavar="FILE.py[:FUNCTION]",
                     help="a Python file whose FUNCTION (default build) returns (model, batches) or a dict with "
                          "model, batches and optionally name, top_k, num_experts, preset, pattern; a batch is a "
                          "tensor (model(x)) or a dict of model arguments (model(**batch); its attention_mask "
                          "drops padded positions, a 'domain' entry is stored and not passed)")
    src.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                     help="keyword argument for FUNCTION (repeatable; ints, floats, true/false are converted)")
    src.add_argument("--hf-model", metavar="DIR",
                     help="a Hugging Face causal-LM directory or name, loaded with transformers (needs that package)")
    src.add_argument("--text-file", metavar="FILE", help="--hf-model: text, one document per line")
    src.add_argument("--seq-len", type=_positive, default=512, help="--hf-model: tokens per sequence (default 512)")
    src.add_argument("--batch-size", type=_positive, default=4, help="--hf-model: sequences per step (default 4)")
    src.add_argument("--torch-dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                     help="--hf-model: weights dtype (default auto)")
    src.add_argument("--trust-remote-code", action="store_true", help="--hf-model: allow the model's own code "
                                                                      "(e.g. DeepSeek checkpoints)")
    gate = p.add_argument_group("gates")
    gate.add_argument("--preset", help="gate layout: " + ", ".join(sorted(list(PRESETS) + list(PRESET_ALIASES))))
    gate.add_argument("--pattern", metavar="REGEX", help="regex searched in module names (wins over --preset); "
                                                         "layer id: group (?P<layer>..), else layers.N.")
    gate.add_argument("--logits-from", choices=LOGIT_SOURCES,
                      help="auto: the gate's output (or its first element) when it is a logits tensor, else "
                           "input @ weight.T in fp32; output: the gate's output or an error; weight: always "
                           "input @ weight.T in fp32 (default: the preset's way; auto for --pattern)")
    gate.add_argument("--num-experts", type=_positive, help="check that the gates give this many experts")
    gate.add_argument("--top-k", type=_non_negative, help="the model's k, stored as top_k (default: found on the "
                                                          "gates or their parents, else 0)")
    gate.add_argument("--list-gates", action="store_true", help="print the matched gate modules and layer ids, "
                                                                "capture nothing")
    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="FILE.h5", help="trace file to write")
    out.add_argument("--force", action="store_true", help="overwrite an existing --out")
    out.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16", help="stored logits (default fp16)")
    out.add_argument("--model", dest="model_name", metavar="NAME", help="model attribute (default: the module's "
                                                                        "name, or the HF name)")
    out.add_argument("--source", metavar="TEXT", help="source attribute (default: the inputs' description)")
    out.add_argument("--max-batches", type=_positive, help="stop after this many batches (steps)")
    out.add_argument("--device", default="cpu", help="torch device for the model and inputs (default cpu)")
    out.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    out.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        for k, v in PRESETS.items():
            print("%-9s %-8s %s\n          pattern %s" % (k, v[1], v[2], v[0]))
        for alias, target in PRESET_ALIASES.items():
            print("%-9s -> %s" % (alias, target))
        return 0
    if bool(args.model_module) == bool(args.hf_model):
        parser.error("give exactly one of --model-module FILE.py[:FUNCTION] and --hf-model DIR")
    if not args.out and not args.list_gates:
        parser.error("--out FILE.h5 is required")
    if args.out and os.path.exists(args.out) and not args.force:
        raise CaptureError("%s: file exists; refusing to overwrite (--force)" % args.out)
    if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise CaptureError("--out %s: directory %s does not exist" % (args.out, os.path.dirname(os.path.abspath(args.out))))
    log = (lambda msg: None) if args.quiet else (lambda msg: print("%s: %s" % (PROG, msg), file=sys.stderr))

    if args.model_module:
        model_args = {}
        for item in args.model_arg:
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise CaptureError("--model-arg %s: expected KEY=VALUE" % item)
            model_args[key] = _parse_value(value)
        info = load_model_module(args.model_module, model_args)
        default_name = os.path.splitext(os.path.basename(info["_path"]))[0]
        default_source = "%s%s" % (args.model_module, "".join(" --model-arg " + a for a in args.model_arg))
    else:
        info = load_hf_model(args)
        default_name, default_source = info["name"], info["source"]
    model = info["model"]
    if not isinstance(model, torch.nn.Module):
        raise CaptureError("model: %s gave a %s, not a torch.nn.Module" % (args.model_module or args.hf_model,
                                                                         type(model).__name__))
    model.to(args.device)
    pattern = args.pattern if args.pattern is not None else (info.get("pattern") if not args.preset else None)
    preset = args.preset or info.get("preset")
    if pattern is None and preset is None:
        parser.error("give --preset (%s) or --pattern REGEX" % ", ".join(sorted(PRESETS)))
    top_k = args.top_k if args.top_k is not None else info.get("top_k")
    num_experts = args.num_experts if args.num_experts is not None else info.get("num_experts")
    rec = TraceRecorder(model, preset=preset, pattern=pattern, num_experts=num_experts, top_k=top_k,
                        dtype=args.dtype, logits_from=args.logits_from)
    if args.list_gates:
        for g in rec.gates:
            print("layer %d  %s  (%s)" % (g.layer_id, g.name, type(g.module).__name__))
        print("%d gates, top_k %d, logits from %s" % (len(rec.gates), rec.top_k, rec.logits_from))
        return 0
    log("hooking %d gates (layers %s) of %s" % (len(rec.gates), ",".join(map(str, rec.layer_ids)),
                                                 type(model).__name__))
    capture(model, info["batches"], rec, device=args.device, max_batches=args.max_batches, log=log)
    summary = rec.write(args.out, model=args.model_name or info.get("name") or default_name,
                        source=args.source if args.source is not None else default_source, force=args.force)
    print("%s: wrote %s: %d steps, %d layers (ids %s), %d tokens, %d experts, top_k %d, %s logits, %d bytes"
          % (PROG, summary["path"], summary["steps"], summary["layers"], ",".join(map(str, summary["layer_ids"])),
             summary["tokens"], summary["experts"], summary["top_k"], summary["dtype"], summary["bytes"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CaptureError as e:
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
