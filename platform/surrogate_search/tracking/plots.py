"""PNG figures for MLflow artifacts (matplotlib's Agg backend: no display needed).

- :func:`fidelity_scatter`: true metric against surrogate value on held-out pairs.
- :func:`posttune_curves`: validation metric per evaluation step, one colour per method.
- :func:`comparison_bars`: test metric mean per method with the spread over seeds.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def fidelity_scatter(errors: Sequence[float], estimates: Sequence[float], *, metric: str, title: str = "",
                     spearman: float | None = None, higher_is_better: bool = False) -> Figure:
    """Each dot a held-out pair: x the true metric as an error (``1 - f1`` for a higher-is-better
    metric, edit distance as is), y the surrogate's value. A faithful surrogate climbs
    monotonically (ReLoss only needs the order; LS-ED the values too)."""
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    ax.scatter(errors, estimates, s=10, alpha=0.5)
    ax.set_xlabel(f"true 1 − {metric}" if higher_is_better else f"true {metric}")
    ax.set_ylabel("surrogate value")
    label = f"Spearman {spearman:.3f}" if spearman is not None else ""
    ax.set_title(" — ".join(t for t in (title, label) if t) or "surrogate fidelity")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def posttune_curves(curves: Mapping[str, Sequence[tuple[Sequence[float], Sequence[float]]]], *, metric: str,
                    higher_is_better: bool, title: str = "") -> Figure:
    """``curves[method]`` = one ``(steps, values)`` line per seed."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (method, lines) in enumerate(curves.items()):
        for j, (steps, values) in enumerate(lines):
            ax.plot(steps, values, color=colours[i % len(colours)], alpha=0.8, marker=".",
                    label=method if j == 0 else None)
    ax.set_xlabel("model updates")
    ax.set_ylabel(f"validation {metric} ({'higher' if higher_is_better else 'lower'} is better)")
    ax.set_title(title or "post-tuning curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def comparison_bars(values: Mapping[str, Sequence[float]], *, metric: str, higher_is_better: bool,
                    base: float | None = None, title: str = "") -> Figure:
    """Mean test metric per method, error bars one standard deviation over seeds, each seed a dot."""
    methods = list(values)
    means = [statistics.fmean(values[m]) for m in methods]
    stds = [statistics.stdev(values[m]) if len(values[m]) > 1 else 0.0 for m in methods]
    fig, ax = plt.subplots(figsize=(1.4 * len(methods) + 2.5, 4.5), dpi=100)
    ax.bar(methods, means, yerr=stds, capsize=6, color="#8fb3d9", edgecolor="#2b5d8a")
    for x, m in enumerate(methods):
        ax.scatter([x] * len(values[m]), values[m], color="black", s=12, zorder=3)
    if base is not None:
        ax.axhline(base, color="grey", linestyle="--", label="base (no tuning)")
        ax.legend()
    lows = [mu - s for mu, s in zip(means, stds)] + [v for m in methods for v in values[m]] + ([base] if base is not None else [])
    highs = [mu + s for mu, s in zip(means, stds)] + [v for m in methods for v in values[m]] + ([base] if base is not None else [])
    pad = 0.1 * ((max(highs) - min(lows)) or abs(max(highs)) or 1.0)
    ax.set_ylim(min(lows) - pad, max(highs) + pad)  # differences between methods are small: do not start at 0
    ax.set_ylabel(f"test {metric} ({'higher' if higher_is_better else 'lower'} is better)")
    ax.set_title(title or "comparison, mean ± std over seeds")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
