"""``study.png``: test accuracy and training loss per epoch, mean over seeds with a band."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from tfnorm._extras import require
from tfnorm.study.train import RunResult


def _matplotlib():
    """matplotlib, or the one-line error naming the extra; the two public plot functions
    call it first, so the helpers below import matplotlib plainly."""
    return require("matplotlib", "tfnorm study's figures")


def curves(runs: Sequence[RunResult], key: str) -> Dict[str, np.ndarray]:
    """``{config label: array (seeds, epochs)}`` of ``key`` per epoch."""
    out: Dict[str, List[List[float]]] = {}
    for r in runs:
        out.setdefault(r.config.label, []).append([e[key] for e in r.epochs])
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def plot_study(runs: Sequence[RunResult], path: str, title: Optional[str] = None) -> str:
    """Writes a two-panel figure (test accuracy, training loss) to ``path``.

    Each configuration is a line (mean over seeds) with a band of ± one sample
    standard deviation (no band with a single seed). Rendered with the Agg canvas
    directly: no pyplot, no global backend switch, no display needed.
    """
    matplotlib = _matplotlib()
    from matplotlib import ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    panels = (("test_accuracy", "test accuracy"), ("loss", "training loss"))
    labels = list(curves(runs, "loss"))
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    for ax, (key, name) in zip(axes, panels):
        data = curves(runs, key)
        for i, label in enumerate(labels):
            y = data[label]
            epochs = np.arange(1, y.shape[1] + 1)
            mean = np.nanmean(y, axis=0)
            color = cmap(i % cmap.N)
            style = "--" if label == "none" else "-"
            ax.plot(
                epochs,
                mean,
                style,
                color=color,
                label=f"{label} (n={y.shape[0]})",
                marker="o",
                markersize=3,
            )
            if y.shape[0] > 1:
                sd = np.nanstd(y, axis=0, ddof=1)
                ax.fill_between(epochs, mean - sd, mean + sd, color=color, alpha=0.15, linewidth=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if key == "loss":
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    axes[0].set_title("test accuracy (mean ± sd over seeds)")
    axes[1].set_title("training loss (mean ± sd over seeds, log scale)")
    handles, names = axes[0].get_legend_handles_labels()
    ncol = min(len(names), 5)
    rows = -(-len(names) // ncol)
    bottom = min(0.4, 0.06 + 0.05 * rows)
    fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize="small", frameon=False)
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout(rect=(0, bottom, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path


# -- the experiments' figures ------------------------------------------------------------
PLACEMENT_STYLE = {  # the same colour for a configuration in every figure
    "batch@every": ("#d62728", "-", "o"),
    "batch@first": ("#1f77b4", "-", "s"),
    "batch@input": ("#2ca02c", "-", "^"),
    "batch@input-global": ("#9467bd", "-", "D"),
    "none": ("#7f7f7f", "--", "x"),
    "layer@every": ("#ff7f0e", ":", "v"),
    "group@every": ("#8c564b", ":", "<"),
    "online@every": ("#e377c2", ":", ">"),
}


def _style(label: str, i: int = 0):
    import matplotlib

    base = label.split("[")[0]
    if base in PLACEMENT_STYLE:
        return PLACEMENT_STYLE[base]
    return (matplotlib.colormaps["tab10"](i % 10), "-", "o")


def _display(label: str) -> str:
    from tfnorm.study.experiments import PLACEMENT_NAMES

    base, _, rest = label.partition("[")
    name = PLACEMENT_NAMES.get(base, base)
    return name + (f" [{rest}" if rest else "")


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


def _figure(ncols: int, nrows: int = 1, width: float = 5.6, height: float = 4.4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    return fig, axes


def _save(fig, path: str, title: str) -> str:
    fig.suptitle(title, fontsize="large", fontweight="bold")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path


def _train(records, **match):
    return [
        r for r in records if r["kind"] == "train" and all(r.get(k) == v for k, v in match.items())
    ]


def _acc_values(rs, epoch=None):
    vals = []
    for r in rs:
        e = r["epochs"][-1] if epoch is None else r["epochs"][epoch - 1]
        vals.append(np.nan if e["test_accuracy"] is None else 100 * e["test_accuracy"])
    return np.asarray(vals, dtype=np.float64)


def _line_vs(ax, records, xkey, labels, epoch=None, logx=True, **match):
    from matplotlib import ticker

    for i, label in enumerate(labels):
        xs = sorted({r[xkey] for r in _train(records, config=label, **match)})
        if not xs:
            continue
        m, sd = [], []
        for x in xs:
            v = _acc_values(_train(records, config=label, **{xkey: x}, **match), epoch)
            m.append(np.nanmean(v))
            sd.append(np.nanstd(v, ddof=1) if len(v) > 1 else 0.0)
        color, ls, marker = _style(label, i)
        ax.errorbar(
            xs, m, yerr=sd, color=color, ls=ls, marker=marker, capsize=3, label=_display(label)
        )
    if logx:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.set_ylim(0, 100)
    ax.set_ylabel("test accuracy % (mean ± sd over seeds)")
    ax.grid(True, alpha=0.3)


def _grad_panel(ax, records, depth, batch_size):
    from tfnorm.study.diagnostics import THEORY_GROWTH

    labels = list(
        dict.fromkeys(r["config"] for r in records if r["kind"] == "probe" and r["depth"] == depth)
    )
    for i, label in enumerate(labels):
        norms = np.asarray(
            [
                r["grad_norms"][str(batch_size)]
                for r in records
                if r["kind"] == "probe"
                and r["config"] == label
                and r["depth"] == depth
                and str(batch_size) in r["grad_norms"]
            ]
        )
        if not len(norms):
            continue
        logn = np.log10(norms)
        layers = np.arange(1, logn.shape[1] + 1)
        color, ls, marker = _style(label, i)
        ax.plot(
            layers,
            logn.mean(0),
            color=color,
            ls=ls,
            marker=marker,
            markersize=3,
            label=_display(label),
        )
        if len(logn) > 1:
            ax.fill_between(layers, logn.min(0), logn.max(0), color=color, alpha=0.15, linewidth=0)
    # the theoretical slope, anchored at the last layer of BN after every layer
    every = [
        r["grad_norms"][str(batch_size)]
        for r in records
        if r["kind"] == "probe" and r["config"] == "batch@every" and r["depth"] == depth
    ]
    if every:
        end = float(np.mean(np.log10(np.asarray(every))[:, -2]))
        layers = np.arange(1, depth + 1)
        ax.plot(
            layers,
            end + (depth - 1 - layers) * np.log10(THEORY_GROWTH),
            color="black",
            lw=1,
            ls="-.",
            label=f"theory: x{THEORY_GROWTH:.4f} per layer",
        )
    ax.set_xlabel("layer (1 = next to the input)")
    ax.set_ylabel("log10 |dLoss/dkernel| at initialization")
    ax.set_title(f"gradients at init, depth {depth}, batch {batch_size}")
    ax.grid(True, alpha=0.3)


def _sensitivity_panel(ax, records, labels, depth):
    """Batch dependence per layer (mean over seeds) of the probes at ``depth``."""
    for i, label in enumerate(labels):
        sens = np.asarray(
            [
                r["sensitivity"]
                for r in records
                if r["kind"] == "probe"
                and r["config"] == label
                and r["depth"] == depth
                and r.get("sensitivity")
            ]
        )
        if len(sens):
            color, ls, marker = _style(label, i)
            ax.plot(
                np.arange(1, sens.shape[1] + 1),
                sens.mean(0),
                color=color,
                ls=ls,
                marker=marker,
                markersize=3,
                label=_display(label),
            )
    ax.set_xlabel("layer")
    ax.set_ylabel("change of a sample's features\nwhen only its batch companions change")
    ax.grid(True, alpha=0.3)


def _bars(ax, groups, series, values, ylabel="test accuracy %"):
    """Grouped bars with sd error bars and every seed as a dot.
    ``values[(group, series)] = list of floats``."""
    n = len(series)
    w = 0.8 / max(n, 1)
    rng = np.random.default_rng(0)
    for j, s in enumerate(series):
        color = _style(s, j)[0] if isinstance(s, str) and s in PLACEMENT_STYLE else None
        for i, g in enumerate(groups):
            v = np.asarray(values.get((g, s), []), dtype=np.float64)
            if not len(v):
                continue
            x = i + (j - (n - 1) / 2) * w
            sd = np.nanstd(v, ddof=1) if len(v) > 1 else 0.0
            ax.bar(
                x,
                np.nanmean(v),
                w * 0.9,
                yerr=sd,
                capsize=3,
                alpha=0.75,
                color=color if color is not None else f"C{j}",
                label=(_display(s) if isinstance(s, str) else s) if i == 0 else None,
            )
            ax.plot(x + rng.uniform(-w / 4, w / 4, len(v)), v, "k.", markersize=3)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([str(g) for g in groups])
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)


def plot_experiment(name: str, section, records, path: str) -> str:
    """The figure of one experiment, from its records (see :mod:`tfnorm.study.experiments`)."""
    _matplotlib()
    from matplotlib import ticker

    from tfnorm.study.experiments import EXPERIMENTS

    title = EXPERIMENTS[name].question
    if name == "headline":
        fig, ax = _figure(2, 2)
        probe_depth = max(r["depth"] for r in records if r["kind"] == "probe")
        bs = records[0]["batch_size"]
        _grad_panel(ax[0], records, probe_depth, bs)
        ax[0].legend(fontsize="small")
        depths = sorted({r["depth"] for r in _train(records)})
        labels = ["batch@every", "batch@first", "batch@input", "none"]
        vals = {
            (d, l): _acc_values(_train(records, config=l, depth=d)).tolist()
            for d in depths
            for l in labels
        }
        _bars(
            ax[1],
            [f"depth {d}" for d in depths],
            labels,
            {(f"depth {d}", l): v for (d, l), v in vals.items()},
        )
        ax[1].set_title(f"test accuracy after {_epochs(records[-1]['epochs'][-1]['epoch'])}")
        ax[1].set_ylim(0, 119)
        ax[1].set_yticks(range(0, 101, 20))
        ax[1].legend(fontsize="small", loc="upper center", ncol=2)
        deep = depths[-1]
        for i, label in enumerate(labels):
            rs = _train(records, config=label, depth=deep)
            if not rs:
                continue
            acc = np.asarray(
                [[100 * (e["test_accuracy"] or np.nan) for e in r["epochs"]] for r in rs]
            )
            ep = np.arange(1, acc.shape[1] + 1)
            color, ls, marker = _style(label, i)
            ax[2].errorbar(
                ep,
                acc.mean(0),
                yerr=acc.std(0, ddof=1) if len(acc) > 1 else None,
                color=color,
                ls=ls,
                marker=marker,
                capsize=3,
                label=_display(label),
            )
        ax[2].set_xlabel("epoch")
        ax[2].set_ylabel("test accuracy %")
        ax[2].set_ylim(0, 100)
        ax[2].set_title(f"depth {deep}: training length")
        ax[2].grid(True, alpha=0.3)
        ax[2].xaxis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1))
        _sensitivity_panel(ax[3], records, labels, probe_depth)
        ax[3].set_title(f"batch dependence at init (depth {probe_depth}, batch {bs})")
        return _save(fig, path, title)
    if name == "depth":
        fig, ax = _figure(2)
        labels = list(dict.fromkeys(r["config"] for r in _train(records)))
        _line_vs(ax[0], records, "depth", labels)
        ax[0].set_xlabel("hidden layers (depth)")
        n_ep = records[0]["epochs"][-1]["epoch"]
        ax[0].set_title(f"after {_epochs(n_ep)}")
        ax[0].legend(fontsize="small", loc="lower left")
        _line_vs(ax[1], records, "depth", labels, epoch=1)
        ax[1].set_xlabel("hidden layers (depth)")
        ax[1].set_title("after 1 epoch")
        return _save(fig, path, title)
    if name == "gradients":
        fig, ax = _figure(3)
        deep = max(r["depth"] for r in records)
        sizes = sorted({int(b) for r in records for b in r["growth"]})
        _grad_panel(ax[0], records, deep, sizes[-1])
        ax[0].legend(fontsize="small")
        from tfnorm.study.diagnostics import THEORY_GROWTH

        labels = list(dict.fromkeys(r["config"] for r in records))
        for i, label in enumerate(labels):
            m, sd = [], []
            for b in sizes:
                g = [
                    r["growth"][str(b)]
                    for r in records
                    if r["config"] == label and r["depth"] == deep and str(b) in r["growth"]
                ]
                m.append(np.mean(g))
                sd.append(np.std(g, ddof=1) if len(g) > 1 else 0)
            color, ls, marker = _style(label, i)
            ax[1].errorbar(
                sizes,
                m,
                yerr=sd,
                color=color,
                ls=ls,
                marker=marker,
                capsize=3,
                label=_display(label),
            )
        ax[1].axhline(
            THEORY_GROWTH,
            color="black",
            ls="-.",
            lw=1,
            label=f"mean-field theory {THEORY_GROWTH:.4f}",
        )
        ax[1].axhline(1.0, color="gray", lw=0.8)
        ax[1].set_xscale("log", base=2)
        ax[1].xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax[1].set_xlabel("batch size")
        ax[1].set_ylabel("gradient growth per layer towards the input")
        ax[1].set_title(f"growth rate vs batch size (depth {deep})")
        ax[1].grid(True, alpha=0.3)
        ax[1].legend(fontsize="small")
        _sensitivity_panel(ax[2], records, labels, deep)
        ax[2].set_title(f"batch dependence (depth {deep}, batch {records[0]['batch_size']})")
        return _save(fig, path, "Why: " + title.split(": ", 1)[-1])
    if name == "batch-size":
        fig, ax = _figure(1, width=7)
        labels = list(dict.fromkeys(r["config"] for r in _train(records)))
        _line_vs(ax[0], records, "batch_size", labels)
        ax[0].set_xlabel("batch size")
        ax[0].set_title(
            f"depth {records[0]['depth']}, {records[0]['train_samples']} training digits, "
            f"{records[0]['epochs'][-1]['epoch']} epochs",
            fontsize="medium",
        )
        ax[0].legend(fontsize="small", loc="lower right")
        return _save(fig, path, title)
    if name == "statistics":
        from tfnorm.study.experiments import EVAL_MODES

        fig, ax = _figure(1, width=9)
        labels = list(dict.fromkeys(r["config"] for r in _train(records)))
        vals = {
            (l, m): [100 * r["evaluations"][m] for r in _train(records, config=l)]
            for l in labels
            for m in EVAL_MODES
        }
        _bars(ax[0], labels, list(EVAL_MODES), vals)
        ax[0].set_ylim(0, 100)
        ax[0].legend(fontsize="small", title="evaluated with")
        ax[0].set_title(
            f"the same trained networks (depth {records[0]['depth']}), three kinds of "
            "statistics at test time",
            fontsize="medium",
        )
        return _save(fig, path, title)
    if name == "residual":
        fig, ax = _figure(1, width=8)
        labels = list(dict.fromkeys(r["config"] for r in _train(records)))
        groups = ["plain", "with skip connections"]
        vals = {
            (g, l): _acc_values(_train(records, config=l, residual=(g != "plain"))).tolist()
            for g in groups
            for l in labels
        }
        _bars(ax[0], groups, labels, vals)
        ax[0].set_ylim(0, 100)
        ax[0].legend(fontsize="small")
        ax[0].set_title(f"depth {records[0]['depth']}", fontsize="medium")
        return _save(fig, path, title)
    if name == "har":
        depths = sorted({r["depth"] for r in _train(records)})
        fig, ax = _figure(len(depths) + 1, width=5.2)
        labels = list(dict.fromkeys(r["config"] for r in _train(records)))
        vals = {
            (f"depth {d}", l): _acc_values(_train(records, config=l, depth=d)).tolist()
            for d in depths
            for l in labels
        }
        _bars(ax[0], [f"depth {d}" for d in depths], labels, vals)
        ax[0].set_ylim(0, 119)
        ax[0].set_yticks(range(0, 101, 20))
        ax[0].legend(fontsize="x-small", loc="upper center", ncol=2)
        r0 = records[0]
        n_ep = r0["epochs"][-1]["epoch"]
        ax[0].set_title(
            f"after {_epochs(n_ep)}; {r0['train_samples']} / {r0['test_samples']} "
            "recordings, dots = seeds",
            fontsize="medium",
        )
        for k, d in enumerate(depths):
            a = ax[k + 1]
            for i, label in enumerate(labels):
                rs = _train(records, config=label, depth=d)
                acc = np.asarray(
                    [[100 * (e["test_accuracy"] or np.nan) for e in r["epochs"]] for r in rs]
                )
                ep = np.arange(1, acc.shape[1] + 1)
                color, ls, marker = _style(label, i)
                m = acc.mean(0)
                a.plot(ep, m, color=color, ls=ls, label=_display(label))
                if len(acc) > 1:
                    sd = acc.std(0, ddof=1)
                    a.fill_between(ep, m - sd, m + sd, color=color, alpha=0.12, linewidth=0)
            a.set_ylim(0, 105)
            a.set_xlabel("epoch")
            a.set_ylabel("test accuracy %")
            a.set_title(f"1-D CNN depth {d}: training length", fontsize="medium")
            a.grid(True, alpha=0.3)
        return _save(fig, path, title)
    raise ValueError(f"no figure for experiment {name!r}")
