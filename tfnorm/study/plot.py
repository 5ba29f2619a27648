"""``study.png``: test accuracy and training loss per epoch, mean over seeds with a band."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from tfnorm.study.train import RunResult


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
    import matplotlib
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
            ax.plot(epochs, mean, style, color=color, label=f"{label} (n={y.shape[0]})",
                    marker="o", markersize=3)
            if y.shape[0] > 1:
                sd = np.nanstd(y, axis=0, ddof=1)
                ax.fill_between(epochs, mean - sd, mean + sd, color=color, alpha=0.15,
                                linewidth=0)
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
