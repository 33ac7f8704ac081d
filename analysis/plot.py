#!/usr/bin/env python3
"""Figures and a self-contained HTML report of a moebench results file.

    python3 analysis/plot.py results.h5 --out report/ [--dpi 100] [--moebench PATH]

Writes PNG figures (1000 x 600 px at the default --dpi 100) and report/index.html (figures
embedded, nothing fetched), from the results file alone (harness/report/SCHEMA.md). The claims
table is added when a moebench executable is found (--moebench, $MOEBENCH, PATH, or this
checkout's build/release/moebench). Exit codes: 0, 2 bad input, 3 partial file (reported).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyenv  # noqa: E402

if __name__ == "__main__":
    pyenv.require(("h5py", "numpy", "matplotlib"))

import argparse  # noqa: E402
import base64  # noqa: E402
import datetime  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from h5files import InputError, Results  # noqa: E402

FIG_W_IN, FIG_H_IN = 10.0, 6.0  # every figure: 10 x 6 inches (1000 x 600 px at 100 dpi)
CLASS_COLOURS = {"local": "#7f7f7f", "intra": "#1f77b4", "inter": "#d62728"}

plt.rcParams.update({"font.size": 12, "axes.titlesize": 14, "axes.labelsize": 12, "legend.fontsize": 10,
                     "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.grid": True, "grid.alpha": 0.3})


def safe_name(router):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", router)


# ------------------------------------------------------------------------------------------ numbers

def summary(res, router):
    """Per-router summary over the completed steps, with the definitions of `moebench report`."""
    d = lambda name: np.asarray(res.data(router, name), dtype=np.float64)  # noqa: E731
    n = d("tokens").size
    if n == 0:
        return None
    demand = d("demand_assignments").sum()
    out = {
        "records": n,
        "mean_active_experts": d("mean_active_experts").mean(),
        "mean_expert_imbalance": d("expert_imbalance").mean(),
        "mean_expert_cv": d("expert_cv").mean(),
        "mean_rank_imbalance": d("rank_imbalance").mean(),
        "max_capacity_factor_required": d("capacity_factor_required").max(),
        "max_tokens_per_expert": d("max_tokens_per_expert").max(),
        "drop_rate": d("dropped").sum() / demand if demand else 0.0,
        "mean_dispatch_bytes_local": d("bytes_local").mean(),
        "mean_dispatch_bytes_intra": d("bytes_intra").mean(),
        "mean_dispatch_bytes_inter": d("bytes_inter").mean(),
        "mean_model_a2a_s": (d("model_dispatch_s") + d("model_combine_s")).mean(),
        "mean_busbw_GBps": d("busbw_GBps").mean(),
    }
    meas = d("dispatch_s") + d("combine_s")
    ok = ~np.isnan(meas)
    out["mean_measured_a2a_s"] = meas[ok].mean() if ok.any() else float("nan")
    return out


def variable_k(res, router):
    """True when tokens were routed to different numbers of experts (before capacity)."""
    k = int(res.config.get("top_k", 0))
    demand = np.asarray(res.data(router, "demand_assignments"), dtype=np.int64)
    tokens = np.asarray(res.data(router, "tokens"), dtype=np.int64)
    return bool(np.any(demand != tokens * k))


# ------------------------------------------------------------------------------------------ figures

def new_figure(dpi, **kw):
    return plt.subplots(figsize=(FIG_W_IN, FIG_H_IN), dpi=dpi, **kw)


def save(fig, out_dir, name, dpi):
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=dpi)  # no bbox_inches="tight": every figure keeps its stated pixel size
    plt.close(fig)
    return path


def fig_heatmap(res, router, out_dir, dpi):
    m = np.asarray(res.data(router, "dispatch_tokens"), dtype=np.float64)  # [S, L, R, R]
    mean = m.reshape(-1, m.shape[-2], m.shape[-1]).mean(axis=0)
    R = mean.shape[0]
    fig, ax = new_figure(dpi)
    pos = mean[mean > 0]
    if pos.size:
        img = ax.imshow(np.ma.masked_less_equal(mean, 0), cmap="viridis", interpolation="nearest", aspect="equal",
                        norm=LogNorm(vmin=pos.min(), vmax=max(pos.max(), pos.min() * 1.0001)))
        cb = fig.colorbar(img, ax=ax)
        cb.set_label("token copies per layer (mean over steps and layers, log scale)")
    ax.set_facecolor("white")
    rpn = res.ranks_per_node
    if 1 < rpn < R:
        for b in range(rpn, R, rpn):
            ax.axhline(b - 0.5, color="white", lw=1.5)
            ax.axvline(b - 0.5, color="white", lw=1.5)
            ax.axhline(b - 0.5, color="black", lw=0.6, ls="--")
            ax.axvline(b - 0.5, color="black", lw=0.6, ls="--")
    ax.grid(False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("destination rank")
    ax.set_ylabel("source rank")
    ax.set_title("Dispatch token matrix, %s (%d ranks, %d per node; empty = 0)" % (router, R, rpn))
    return save(fig, out_dir, "dispatch_heatmap_%s.png" % safe_name(router), dpi)


def fig_expert_load(res, router, out_dir, dpi):
    demand = np.asarray(res.data(router, "expert_demand"), dtype=np.float64).reshape(-1, res.experts)
    load = np.asarray(res.data(router, "expert_load"), dtype=np.float64).reshape(-1, res.experts)
    cap = np.asarray(res.data(router, "capacity"), dtype=np.float64).reshape(-1)
    order = np.argsort(-demand, axis=1, kind="stable")  # busiest first, within each step and layer
    demand_sorted = np.take_along_axis(demand, order, axis=1).mean(axis=0)
    load_sorted = np.take_along_axis(load, order, axis=1).mean(axis=0)
    x = np.arange(res.experts)
    fig, ax = new_figure(dpi)
    ax.bar(x, demand_sorted, width=0.9, color="#ffbb78", label="demand (before capacity)")
    ax.bar(x, load_sorted, width=0.6, color="#1f77b4", label="load (after capacity)")
    uniform = demand.sum(axis=1).mean() / res.experts
    ax.axhline(uniform, color="black", ls=":", lw=1.2, label="uniform share (%.0f)" % uniform)
    if np.all(cap > 0):
        ax.axhline(cap.mean(), color="#d62728", lw=2, label="capacity C (%.0f%s)"
                   % (cap.mean(), ", per process" if res.config.get("capacity_scope") == "local" else ""))
        title_cap = "capacity factor %s" % res.config.get("capacity_factor")
    else:
        title_cap = "no capacity limit"
    ax.set_xlabel("experts, sorted by demand within each step and layer (busiest first)")
    ax.set_ylabel("tokens per expert (mean over steps and layers)")
    ax.set_title("Per-expert load, %s (%s)" % (router, title_cap))
    ax.set_xlim(-0.8, res.experts - 0.2)
    ax.legend(loc="upper right")
    return save(fig, out_dir, "expert_load_%s.png" % safe_name(router), dpi)


def fig_cdf(res, out_dir, dpi):
    fig, ax = new_figure(dpi)
    for i, r in enumerate(res.routers):
        v = np.sort(np.asarray(res.data(r, "expert_load"), dtype=np.float64).reshape(-1))
        if v.size:
            ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=r, lw=1.6, ls=["-", "--", "-.", ":"][i % 4])
    ax.set_xlabel("tokens per expert in one step and layer (after capacity)")
    ax.set_ylabel("fraction of (expert, step, layer)")
    ax.set_ylim(0, 1.02)
    ax.set_title("CDF of tokens per expert")
    ax.legend(loc="lower right", ncol=2)
    return save(fig, out_dir, "tokens_per_expert_cdf.png", dpi)


def fig_bytes(res, out_dir, dpi):
    fig, ax = new_figure(dpi)
    x = np.arange(len(res.routers))
    bottom = np.zeros(len(res.routers))
    for cls in ("local", "intra", "inter"):
        v = np.array([np.asarray(res.data(r, "bytes_" + cls), dtype=np.float64).mean() / 1e6 for r in res.routers])
        ax.bar(x, v, bottom=bottom, color=CLASS_COLOURS[cls], width=0.6,
               label={"local": "local (same rank)", "intra": "intra-node", "inter": "inter-node"}[cls])
        bottom += v
    ax.set_xticks(x)
    ax.set_xticklabels(res.routers, rotation=20, ha="right")
    ax.set_ylabel("dispatch MB per layer (1e6 B, mean over steps)")
    ax.set_title("Dispatch bytes by link class (dedup %s)" % res.config.get("dedup", "?"))
    ax.legend(loc="upper right")
    fig.subplots_adjust(bottom=0.2)
    return save(fig, out_dir, "bytes_by_class.png", dpi)


def fig_imbalance(res, out_dir, dpi):
    fig, (a1, a2) = new_figure(dpi, ncols=2)
    steps = np.arange(res.steps_done)
    replaced = False
    for i, r in enumerate(res.routers):
        style = dict(marker="osD^v<>px"[i % 9], ms=4, ls=["-", "--", "-.", ":"][i % 4], label=r, color="C%d" % (i % 10))
        a1.plot(steps, np.asarray(res.data(r, "expert_imbalance")).mean(axis=1), **style)
        rank = np.asarray(res.data(r, "rank_imbalance")).mean(axis=1)
        line, = a2.plot(steps, rank, **style)
        if res.has(r, "replaced_copies"):  # steps where a re-placement took effect (files since placements)
            moved = np.asarray(res.data(r, "replaced_copies")).sum(axis=1) > 0
            if moved.any():
                replaced = True
                a2.plot(steps[moved], rank[moved], ls="none", marker="*", ms=12, mfc="none", mec=line.get_color())
    a1.set_title("Experts")
    if replaced:
        star, = a2.plot([], [], ls="none", marker="*", ms=12, mfc="none", mec="black")
        a2.legend([star], ["re-placement took effect"], loc="upper right", fontsize=8)
    a2.set_title("Ranks (tokens received)")
    for a in (a1, a2):
        a.set_xlabel("step")
        a.set_ylabel("max / mean (mean over layers)")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(*a1.get_legend_handles_labels(), loc="lower center", ncol=min(5, len(res.routers)), fontsize=9)
    fig.suptitle("Imbalance over steps")
    fig.subplots_adjust(wspace=0.3, bottom=0.22)
    return save(fig, out_dir, "imbalance_over_steps.png", dpi)


def fig_measured(res, out_dir, dpi):
    fig, ax = new_figure(dpi)
    lo, hi = np.inf, 0.0
    for r in res.routers:
        for kind, marker in (("dispatch", "o"), ("combine", "x")):
            meas = np.asarray(res.data(r, kind + "_s"), dtype=np.float64).reshape(-1) * 1e3
            model = np.asarray(res.data(r, "model_%s_s" % kind), dtype=np.float64).reshape(-1) * 1e3
            ok = ~np.isnan(meas) & (meas > 0) & (model > 0)
            if ok.any():
                ax.scatter(model[ok], meas[ok], marker=marker, s=22, label="%s %s" % (r, kind))
                lo, hi = min(lo, model[ok].min(), meas[ok].min()), max(hi, model[ok].max(), meas[ok].max())
    if hi > 0:
        ax.plot([lo / 1.5, hi * 1.5], [lo / 1.5, hi * 1.5], color="black", lw=1, ls="--", label="measured = modelled")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("modelled time per exchange (ms)")
    ax.set_ylabel("measured time per exchange, slowest rank (ms)")
    ax.set_title("Measured vs modelled all-to-all (%s backend)" % res.config.get("backend", "?"))
    ax.legend(loc="upper left", ncol=2, fontsize=8)
    return save(fig, out_dir, "measured_vs_modelled.png", dpi)


def fig_active_experts(res, router, out_dir, dpi):
    hist = np.asarray(res.data(router, "active_experts_hist"), dtype=np.float64).reshape(-1, res.experts + 1).sum(axis=0)
    total = hist.sum()
    last = int(np.nonzero(hist)[0].max()) if total > 0 else 0
    n = np.arange(last + 1)
    fig, ax = new_figure(dpi)
    ax.bar(n, hist[: last + 1] / max(total, 1), width=0.8, color="#2ca02c")
    k = int(res.config.get("top_k", 0))
    if k:
        ax.axvline(k, color="black", ls="--", lw=1.2, label="configured top-k = %d" % k)
        ax.legend(loc="upper right")
    ax.set_xlabel("experts a token is sent to (after capacity)")
    ax.set_ylabel("fraction of tokens")
    ax.set_title("Active experts per token, %s (mean %.2f)" % (router, (n * hist[: last + 1]).sum() / max(total, 1)))
    return save(fig, out_dir, "active_experts_%s.png" % safe_name(router), dpi)


def make_figures(res, out_dir, dpi):
    """[(path, caption)] of every figure the file supports."""
    figs = []
    if res.steps_done == 0:
        return figs
    for r in res.routers:
        if res.has(r, "dispatch_tokens"):
            figs.append((fig_heatmap(res, r, out_dir, dpi),
                         "Dispatch token copies between ranks (%s); dashed lines are node boundaries." % r))
    for r in res.routers:
        figs.append((fig_expert_load(res, r, out_dir, dpi),
                     "Per-expert load (%s): demand and kept load, sorted, against the capacity." % r))
    figs.append((fig_cdf(res, out_dir, dpi), "Distribution of tokens per expert, per router."))
    figs.append((fig_bytes(res, out_dir, dpi), "Dispatch bytes per layer by link class, per router."))
    figs.append((fig_imbalance(res, out_dir, dpi), "Expert and rank imbalance over steps (bias learning shows here)."))
    measured = any(np.any(~np.isnan(np.asarray(res.data(r, "dispatch_s"), dtype=np.float64))) for r in res.routers)
    if measured:
        figs.append((fig_measured(res, out_dir, dpi), "Measured vs modelled all-to-all time; the dashed line is identity."))
    for r in res.routers:
        if variable_k(res, r):
            figs.append((fig_active_experts(res, r, out_dir, dpi), "Experts per token (%s, a variable-k router)." % r))
    return figs


# ------------------------------------------------------------------------------------------ HTML

def find_moebench(explicit):
    here = os.path.dirname(os.path.abspath(__file__))
    for c in (explicit, os.environ.get("MOEBENCH"), shutil.which("moebench"),
              os.path.join(here, "..", "build", "release", "moebench")):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def claims_rows(moebench, path):
    """[(claim, measured, note)] from `moebench report FILE --claims`, or (None, why)."""
    if not moebench:
        return None, "not included: no moebench executable found (pass --moebench PATH)"
    try:
        p = subprocess.run([moebench, "report", path, "--claims"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "not included: %s failed (%s)" % (moebench, e)
    if p.returncode not in (0, 3):
        return None, "not included: %s report --claims failed: %s" % (moebench, p.stderr.strip()[:300])
    rows, cur = [], None
    for line in p.stdout.splitlines():
        if line.startswith("* "):
            cur = [line[2:].strip(), "", ""]
            rows.append(cur)
        elif cur and line.startswith("    measured: "):
            cur[1] = line[len("    measured: "):].strip()
        elif cur and line.startswith("    note: "):
            cur[2] = line[len("    note: "):].strip()
    return rows, None


def fmt(v, scale=1.0, digits=3):
    """digits: decimals, or None for 4 significant digits (times span many decades)."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    return "%.4g" % (v * scale) if digits is None else "%.*f" % (digits, v * scale)


SUMMARY_COLUMNS = [
    ("act/tok", "mean_active_experts", 1, 3), ("imbal", "mean_expert_imbalance", 1, 3), ("cv", "mean_expert_cv", 1, 3),
    ("rank imbal", "mean_rank_imbalance", 1, 3), ("cf req", "max_capacity_factor_required", 1, 3),
    ("max tok/expert", "max_tokens_per_expert", 1, 0), ("drop %", "drop_rate", 100, 2),
    ("local MB", "mean_dispatch_bytes_local", 1e-6, 3), ("intra MB", "mean_dispatch_bytes_intra", 1e-6, 3),
    ("inter MB", "mean_dispatch_bytes_inter", 1e-6, 3), ("a2a ms (model)", "mean_model_a2a_s", 1e3, None),
    ("busbw GB/s", "mean_busbw_GBps", 1, 1), ("a2a ms (measured)", "mean_measured_a2a_s", 1e3, None),
]


def write_html(res, figs, out_dir, moebench):
    e = html.escape
    parts = ["<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
             "<title>moebench report: %s</title>" % e(os.path.basename(res.path)),
             "<style>body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
             "th,td{border:1px solid #bbb;padding:3px 7px}th{background:#eee}td.n{text-align:right}"
             ".warn{background:#fff3cd;border:1px solid #e0b000;padding:.6em}"
             "figure{margin:1.5em 0}img{max-width:100%;border:1px solid #ddd}"
             "code,pre{background:#f6f6f6}</style></head><body>",
             "<h1>moebench report</h1>",
             "<p><code>%s</code> &middot; moebench %s (git %s) &middot; generated %s</p>"
             % (e(res.path), e(res.moebench_version), e(res.git_sha),
                e(datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))]
    if res.partial:
        parts.append("<p class='warn' id='partial'><b>Partial file</b> (status %s): %d of %d steps completed; "
                     "everything below covers the completed steps only.</p>" % (e(res.status), res.steps_done,
                                                                                res.steps_planned))
    # Summary first, so that it is on screen when the report opens.
    parts.append("<h2>Summary</h2><table id='summary'><tr><th>router</th>%s</tr>"
                 % "".join("<th>%s</th>" % e(h) for h, *_ in SUMMARY_COLUMNS))
    for r in res.routers:
        s = summary(res, r)
        if s is None:
            continue
        parts.append("<tr><td>%s</td>%s</tr>" % (e(r), "".join(
            "<td class='n'>%s</td>" % fmt(s[key], scale, digits) for _, key, scale, digits in SUMMARY_COLUMNS)))
    parts.append("</table><p style='font-size:12px'>Means over %d steps x %d layers; cf req and max tok/expert are "
                 "maxima; MB are dispatch bytes per layer by link class (1e6 B); a2a is dispatch + combine per layer."
                 "</p>" % (res.steps_done, res.layers))
    parts.append("<h2>Configuration</h2><table id='config'>")
    rows = [("command", res.command_line), ("status", "%s, %d of %d steps" % (res.status, res.steps_done, res.steps_planned)),
            ("EP ranks", "%d on %d processes (%s)" % (res.ep_size, res.world_size, res.hosts)),
            ("experts, layers", "%d, %d" % (res.experts, res.layers)),
            ("topology (resolved)", json.dumps(res.topology))]
    rows += [(k, json.dumps(v) if isinstance(v, (dict, list)) else str(v)) for k, v in res.config.items()]
    parts += ["<tr><th>%s</th><td><code>%s</code></td></tr>" % (e(k), e(v)) for k, v in rows]
    parts.append("</table>")
    claims, why = claims_rows(moebench, res.path)
    parts.append("<h2>Claims</h2>")
    if claims:
        parts.append("<table id='claims'><tr><th>claim</th><th>measured here</th><th>note</th></tr>")
        parts += ["<tr><td>%s</td><td>%s</td><td>%s</td></tr>" % (e(c), e(m), e(n)) for c, m, n in claims]
        parts.append("</table>")
    else:
        parts.append("<p>%s</p>" % e(why or "no claims in this file"))
    parts.append("<h2>Figures</h2>")
    if not figs:
        parts.append("<p>No figures: the file has no completed step.</p>")
    for path, caption in figs:
        with open(path, "rb") as fh:
            data = base64.b64encode(fh.read()).decode("ascii")
        parts.append("<figure><img alt='%s' src='data:image/png;base64,%s'><figcaption>%s</figcaption></figure>"
                     % (e(os.path.basename(path)), data, e(caption)))
    # Marks the body once every embedded image has decoded (the screenshot test reads it).
    parts.append("<script>window.addEventListener('load',function(){var b=0,i=document.images;"
                 "for(var j=0;j<i.length;j++){if(!i[j].complete||i[j].naturalWidth===0)b++;}"
                 "document.body.setAttribute('data-images',i.length);"
                 "document.body.setAttribute('data-broken-images',b);});</script>")
    parts.append("</body></html>\n")
    out = os.path.join(out_dir, "index.html")
    with open(out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(parts))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="PNG figures and a self-contained HTML report of a moebench results file.")
    ap.add_argument("results", help="moebench results file (HDF5)")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--dpi", type=int, default=100, help="pixels per inch; figures are 10 x 6 inches (default 100)")
    ap.add_argument("--moebench", help="moebench executable for the claims table")
    a = ap.parse_args(argv)
    prog = os.path.basename(sys.argv[0])
    if a.dpi < 20 or a.dpi > 600:
        sys.stderr.write("%s: error: --dpi %d is outside 20..600\n" % (prog, a.dpi))
        return 2
    try:
        res = Results(a.results)
        os.makedirs(a.out, exist_ok=True)
        figs = make_figures(res, a.out, a.dpi)
        index = write_html(res, figs, a.out, find_moebench(a.moebench))
    except InputError as err:
        sys.stderr.write("%s: error: %s\n" % (prog, err))
        return 2
    print("wrote %d figures and %s" % (len(figs), index))
    if res.partial:
        sys.stderr.write("%s: warning: %s is partial: %d of %d steps completed (reported)\n"
                         % (prog, a.results, res.steps_done, res.steps_planned))
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
