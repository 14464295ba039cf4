"""Pictures of how a search went, drawn from its Optuna study with ``optuna.visualization.matplotlib``.

- ``optimization_history``: every finished trial's objective, and the best so far;
- ``intermediate_values``: each trial's objective at every evaluation (the ASHA curves; a pruned
  trial's curve stops where the scheduler stopped it);
- ``param_importances``: how much each searched setting explains of the objective (fANOVA);
- ``parallel_coordinate``: every trial through the axes of the space, coloured by its objective;
- ``timeline``: when each trial ran and how it ended (complete, pruned, failed).

A plot that the study cannot support yet (importances before two trials have finished, a space of
one setting) is left out of :func:`search_figures`, and drawn at a later refresh::

    figures = search_figures(study)        # {"optimization_history": Figure, ...}
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

from surrogate_search.tracking.plots import close

log = logging.getLogger(__name__)

PLOT_FOLDER = "search_plots"
"""Where the figures go on the search's MLflow parent run: ``search_plots/<name>.png``."""


def plot_functions() -> dict[str, Callable[..., Any]]:
    """The plots this Optuna provides, by name (``plot_timeline`` appeared in Optuna 3.2)."""
    from optuna.visualization import matplotlib as ovm

    names = ("optimization_history", "intermediate_values", "param_importances", "parallel_coordinate", "timeline")
    return {name: getattr(ovm, f"plot_{name}") for name in names if hasattr(ovm, f"plot_{name}")}


def search_figures(study: Any) -> dict[str, Any]:
    """A matplotlib Figure per plot the study can support now; close them with :func:`close_figures`."""

    figures: dict[str, Any] = {}
    for name, plot in plot_functions().items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-API and few-trials warnings: the picture says it
            try:
                axes = plot(study)
            except Exception as exc:  # too few trials for this plot yet: it is drawn at a later refresh
                log.debug("search plot %s not drawn yet: %s", name, exc)
                continue
        # Some plots return an array of axes (one per objective); all of them share one figure.
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        figure = first.figure
        if not figure.axes or not any(ax.has_data() for ax in figure.axes):
            close(figure)  # an empty frame (e.g. no intermediate values yet) says nothing
            continue
        figure.set_size_inches(max(figure.get_figwidth(), 8.0), max(figure.get_figheight(), 5.0))
        figure.tight_layout()
        figures[name] = figure
    return figures


def close_figures(figures: dict[str, Any]) -> None:
    for figure in figures.values():
        close(figure)
