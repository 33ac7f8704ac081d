"""Readers of moebench's HDF5 files for the analysis scripts (needs h5py and numpy).

Results files follow harness/report/SCHEMA.md, trace files workloads/TRACE_FORMAT.md. Every problem
raises InputError with one line naming the file, the field and the value.
"""
import json
import os

import h5py
import numpy as np

RESULTS_FORMAT, RESULTS_VERSION = "moebench-results", 1
TRACE_FORMAT, TRACE_VERSION = "moebench-trace", 1


class InputError(Exception):
    pass


def _attr(f, path, name, kind):
    if name not in f.attrs:
        raise InputError("%s: missing root attribute '%s'" % (path, name))
    v = f.attrs[name]
    if kind is str:
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, np.ndarray) and v.shape == ():
            v = v[()]
            v = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        return str(v)
    try:
        return int(np.asarray(v).reshape(-1)[0]) if kind is int else np.asarray(v)
    except (TypeError, ValueError, IndexError):
        raise InputError("%s: root attribute '%s' is not a number (%r)" % (path, name, v))


def _open(path):
    if not os.path.exists(path):
        raise InputError("%s: no such file" % path)
    if not h5py.is_hdf5(path):
        raise InputError("%s: not an HDF5 file, so not a moebench file" % path)
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise InputError("%s: cannot open as HDF5 (%s)" % (path, e))


def file_format(path):
    """'results' or 'trace', from the root attribute `format`."""
    with _open(path) as f:
        fmt = _attr(f, path, "format", str) if "format" in f.attrs else None
    if fmt == RESULTS_FORMAT:
        return "results"
    if fmt == TRACE_FORMAT:
        return "trace"
    raise InputError("%s: root attribute 'format' is %r, not '%s' or '%s', so not a moebench file"
                     % (path, fmt, RESULTS_FORMAT, TRACE_FORMAT))


class Results:
    """A results file; datasets are read up to `steps_done` rows (a partial file's later rows may be unwritten)."""

    def __init__(self, path):
        self.path = path
        self._f = _open(path)
        f = self._f
        fmt = _attr(f, path, "format", str) if "format" in f.attrs else None
        if fmt != RESULTS_FORMAT:
            raise InputError("%s: root attribute 'format' is %r, not '%s', so not a moebench results file"
                             % (path, fmt, RESULTS_FORMAT))
        version = _attr(f, path, "format_version", int)
        if version != RESULTS_VERSION:
            raise InputError("%s: root attribute 'format_version' is %d; this reader knows version %d"
                             % (path, version, RESULTS_VERSION))
        self.status = _attr(f, path, "status", str)
        self.steps_done = _attr(f, path, "steps_done", int)
        self.steps_planned = _attr(f, path, "steps_planned", int)
        self.layers = _attr(f, path, "layers", int)
        self.experts = _attr(f, path, "experts", int)
        self.ep_size = _attr(f, path, "ep_size", int)
        self.world_size = _attr(f, path, "world_size", int)
        self.command_line = _attr(f, path, "command_line", str)
        self.moebench_version = _attr(f, path, "moebench_version", str)
        self.git_sha = _attr(f, path, "git_sha", str)
        self.hosts = _attr(f, path, "hosts", str)
        self.routers = [r for r in _attr(f, path, "routers", str).split(",") if r]
        for key in ("config", "topology"):
            text = _attr(f, path, key, str)
            try:
                setattr(self, key, json.loads(text))
            except ValueError as e:
                raise InputError("%s: root attribute '%s' is not valid JSON (%s)" % (path, key, e))
        if self.steps_done < 0 or self.steps_done > self.steps_planned:
            raise InputError("%s: root attribute 'steps_done' is %d, outside 0..steps_planned=%d"
                             % (path, self.steps_done, self.steps_planned))
        for r in self.routers:
            if "runs/" + r not in f:
                raise InputError("%s: group /runs/%s (listed in attribute 'routers') is missing" % (path, r))

    @property
    def partial(self):
        return self.status != "complete"

    @property
    def ranks_per_node(self):
        return int(self.topology.get("ranks_per_node", self.config.get("ranks_per_node", 1)) or 1)

    def has(self, router, name):
        return ("runs/%s/%s" % (router, name)) in self._f

    def data(self, router, name):
        """/runs/<router>/<name>, its first steps_done rows, as a numpy array."""
        key = "runs/%s/%s" % (router, name)
        if key not in self._f:
            raise InputError("%s: missing dataset /%s" % (self.path, key))
        ds = self._f[key]
        if ds.ndim < 2 or ds.shape[0] < self.steps_done or ds.shape[1] != self.layers:
            raise InputError("%s: dataset /%s has shape %s, expected [>=%d steps, %d layers, ...]"
                             % (self.path, key, ds.shape, self.steps_done, self.layers))
        return ds[: self.steps_done]

    def close(self):
        self._f.close()


class Trace:
    """A routing trace; expert sets are read one layer and one token range at a time."""

    def __init__(self, path):
        self.path = path
        self._f = _open(path)
        f = self._f
        fmt = _attr(f, path, "format", str) if "format" in f.attrs else None
        if fmt != TRACE_FORMAT:
            raise InputError("%s: root attribute 'format' is %r, not '%s', so not a moebench trace file"
                             % (path, fmt, TRACE_FORMAT))
        version = _attr(f, path, "format_version", int)
        if version != TRACE_VERSION:
            raise InputError("%s: root attribute 'format_version' is %d; this reader knows version %d"
                             % (path, version, TRACE_VERSION))
        self.kind = _attr(f, path, "kind", str)
        if self.kind not in ("logits", "assignments"):
            raise InputError("%s: root attribute 'kind' is %r, not 'logits' or 'assignments'" % (path, self.kind))
        self.experts = _attr(f, path, "num_experts", int)
        self.layers = _attr(f, path, "num_layers", int)
        self.steps = _attr(f, path, "num_steps", int)
        self.tokens = _attr(f, path, "num_tokens", int)
        self.top_k = _attr(f, path, "top_k", int)
        self.has_sequences = _attr(f, path, "has_sequences", int) if "has_sequences" in f.attrs else 0
        self.offset = self._dataset("steps/offset", (self.steps + 1,))[:].astype(np.int64)
        if self.offset[0] != 0 or self.offset[-1] != self.tokens or np.any(np.diff(self.offset) < 0):
            raise InputError("%s: dataset /steps/offset is not 0..num_tokens=%d non-decreasing (first %d, last %d)"
                             % (path, self.tokens, self.offset[0], self.offset[-1]))
        self.sequence = self._dataset("tokens/sequence", (self.tokens,))[:] if self.has_sequences else None
        main = "logits" if self.kind == "logits" else "expert_ids"
        ds = self._f.get(main)
        if ds is None:
            raise InputError("%s: missing dataset /%s (kind %s)" % (path, main, self.kind))
        if ds.ndim != 3 or ds.shape[0] != self.layers or ds.shape[1] != self.tokens:
            raise InputError("%s: dataset /%s has shape %s, expected [%d layers, %d tokens, ...]"
                             % (path, main, ds.shape, self.layers, self.tokens))
        if self.kind == "logits" and ds.shape[2] != self.experts:
            raise InputError("%s: dataset /logits has %d experts on its last axis, num_experts is %d"
                             % (path, ds.shape[2], self.experts))
        self._main = ds

    def _dataset(self, name, shape):
        ds = self._f.get(name)
        if ds is None:
            raise InputError("%s: missing dataset /%s" % (self.path, name))
        if tuple(ds.shape) != shape:
            raise InputError("%s: dataset /%s has shape %s, expected %s" % (self.path, name, tuple(ds.shape), shape))
        return ds

    def expert_sets(self, layer, first, last, top_k):
        """[last-first, k] chosen experts of tokens first..last-1 in `layer`, -1 where a token has fewer.
        Logit traces: each token's top-k by logit (ties to the lower expert id)."""
        block = self._main[layer, first:last]
        if self.kind == "assignments":
            ids = np.asarray(block, dtype=np.int64)
            bad = (ids < -1) | (ids >= self.experts)
            if bad.any():
                raise InputError("%s: dataset /expert_ids holds %d, outside -1..%d (layer %d)"
                                 % (self.path, int(ids[bad][0]), self.experts - 1, layer))
            return ids
        z = np.asarray(block, dtype=np.float64)
        order = np.argsort(-z, axis=1, kind="stable")
        return order[:, :top_k].astype(np.int64)

    def close(self):
        self._f.close()
