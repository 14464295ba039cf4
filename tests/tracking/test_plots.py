"""The PNG figures logged with each run say what they plot."""

from __future__ import annotations

import pytest
from matplotlib.collections import PathCollection
from matplotlib.container import BarContainer

from surrogate_search.tracking import plots


def test_fidelity_scatter_names_the_error_on_its_axis() -> None:
    fig = plots.fidelity_scatter([0.0, 0.5, 1.0], [0.0, 0.2, 0.4], metric="f1", spearman=1.0, higher_is_better=True)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "true 1 − f1" and ax.get_ylabel() == "surrogate value"
    assert "Spearman 1.000" in ax.get_title()
    assert ax.collections[0].get_offsets().tolist() == [[0.0, 0.0], [0.5, 0.2], [1.0, 0.4]]
    plots.close(fig)
    fig = plots.fidelity_scatter([0, 3], [0.1, 2.0], metric="edit_distance")
    assert fig.axes[0].get_xlabel() == "true edit_distance"
    plots.close(fig)


def test_comparison_bars_show_the_mean_per_method_and_every_seed() -> None:
    values = {"proxy": [0.90, 0.92], "relational": [0.93, 0.95, 0.97]}
    fig = plots.comparison_bars(values, metric="f1", higher_is_better=True, base=0.89)
    ax = fig.axes[0]
    bars = next(c for c in ax.containers if isinstance(c, BarContainer))
    assert [b.get_height() for b in bars] == pytest.approx([0.91, 0.95])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["proxy", "relational"]
    assert sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)) == 5  # one dot per seed
    assert ax.get_ylabel() == "test f1 (higher is better)"
    plots.close(fig)
