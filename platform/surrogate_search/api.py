"""The Python API, with the CLI's defaults: every post-tuning, comparison and search is recorded in
MLflow (``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` here) unless
``track=False``, as the CLI records unless ``--no-track``. The CLI calls these functions.

    from surrogate_search import PostTuneConfig, compare, fetch_surrogate, get_task, posttune
    from surrogate_search.pretrain import ensure_base_checkpoint

    task = get_task("imbalanced_tabular", dataset="digits")
    checkpoint = ensure_base_checkpoint(task)                      # runs/base_imbalanced_tabular_digits
    result = posttune(PostTuneConfig.for_task(task, {"method": "anyloss", "steps": 100}), checkpoint)
    table = compare(checkpoint, {"steps": 100}, seeds=range(3)).table()   # registers the best surrogate

    saved = fetch_surrogate("models:/imbalanced_tabular_digits-deep_embedding-surrogate@champion")
    result = posttune(PostTuneConfig.for_task(task, {**saved.settings, "steps": 100}), checkpoint, surrogate=saved)

Each result names its MLflow record in ``result.mlflow`` (``experiment``, ``run_id``,
``tracking_uri``); it is empty when nothing was recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from surrogate_search.checkpoint import BaseCheckpoint
from surrogate_search.compare import Comparison
from surrogate_search.config import PostTuneConfig
from surrogate_search.posttune import PostTuneResult
from surrogate_search.search.outcome import SearchOutcome
from surrogate_search.search.space import SearchSpec
from surrogate_search.surrogates import SavedSurrogate


def _checked_uri(tracking_uri: str | None) -> str:
    from surrogate_search.tracking import check_tracking_store, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_store(uri)  # a server that is down fails here, before any training
    return uri


def posttune(config: PostTuneConfig, checkpoint: BaseCheckpoint, *, track: bool = True,
             tracking_uri: str | None = None, experiment: str | None = None,
             cache_dir: str | None = None, surrogate: SavedSurrogate | None = None) -> PostTuneResult:
    """Post-tune ``checkpoint`` with ``config`` in this process; recorded as a top-level MLflow run
    in the task's experiment (metrics per evaluation, config, curve, a learned surrogate as a model).
    ``surrogate``: start from a saved or registered surrogate instead of learning one
    (:func:`fetch_surrogate`)."""
    from surrogate_search.posttune import posttune as run

    config.validate()  # a config changed after it was built fails here, before a run exists in MLflow
    if not track:
        return run(config, checkpoint, cache_dir=cache_dir, surrogate=surrogate)
    from surrogate_search.tracking import start_run, task_experiment_name, tracked_posttune
    from surrogate_search.tracking.recorder import run_tags

    uri = _checked_uri(tracking_uri)
    task = checkpoint.build_task()
    experiment = experiment or task_experiment_name(task)
    logger = start_run(experiment, config.params(), {**run_tags(task, config), "checkpoint": str(checkpoint.path or "")},
                       tracking_uri=uri, run_name=f"{config.method} seed {config.seed}")
    with logger:
        result = tracked_posttune(config, checkpoint, logger, cache_dir=cache_dir, surrogate=surrogate).result
    result.mlflow = {"experiment": experiment, "run_id": logger.run_id, "tracking_uri": uri}
    return result


def compare(checkpoint: BaseCheckpoint, overrides: Mapping[str, Any] | None = None, *,
            methods: Sequence[str] | None = None, seeds: Sequence[int] = (0, 1, 2), cache_dir: str | None = None,
            track: bool = True, tracking_uri: str | None = None, experiment: str | None = None,
            comparison_id: str | None = None, registered_model_name: str | None = None) -> Comparison:
    """Every method (default: all that apply) from ``checkpoint`` with the same budget and seeds;
    recorded as a comparison run with a child run per method and seed (the same ``comparison_id``
    resumes into the same runs), its best learned surrogate registered in MLflow's model registry
    as ``registered_model_name`` (default ``<experiment>-<method>-surrogate``; ``champion`` alias
    when it beats the champion on val; ``result.registration``). See :func:`surrogate_search.compare.compare`."""
    from surrogate_search.compare import compare as run

    if not track:
        return run(checkpoint, overrides, methods=methods, seeds=seeds, cache_dir=cache_dir)
    from surrogate_search.tracking import tracked_compare

    tracked = tracked_compare(checkpoint, overrides, methods=methods, seeds=seeds, cache_dir=cache_dir,
                              experiment=experiment, tracking_uri=_checked_uri(tracking_uri),
                              comparison_id=comparison_id, registered_model_name=registered_model_name)
    tracked.comparison.mlflow = {"experiment": tracked.experiment, "run_id": tracked.parent_run_id,
                                 "tracking_uri": tracked.tracking_uri}
    tracked.comparison.registration = tracked.registration
    return tracked.comparison


def fetch_surrogate(source: str, *, tracking_uri: str | None = None) -> SavedSurrogate:
    """A learned surrogate to start a post-tuning from: ``models:/<name>@champion`` (or another
    alias), ``models:/<name>/<version>`` from the MLflow model registry at ``tracking_uri``, a
    learned run's ``runs:/<run id>/surrogate`` (its ``surrogate_uri`` tag), or a folder
    (``surrogate.pt`` + ``surrogate.json``, or a downloaded MLflow model). Weights only: nothing in
    it is run."""
    from surrogate_search.tracking.model_registry import fetch_surrogate as fetch

    return fetch(source, tracking_uri=_checked_uri(tracking_uri) if source.startswith(("models:/", "runs:/")) else None)


def run_search(spec: SearchSpec, *, track: bool = True, tracking_uri: str | None = None,
               experiment: str | None = None, **options: Any) -> SearchOutcome:
    """Ray Tune + Optuna over ``spec`` (see :func:`surrogate_search.search.tune.run_search` for
    ``storage``, ``resume``, ``address``, ...); recorded as a search run with a child run per trial."""
    from surrogate_search.search.tune import run_search as run

    uri = _checked_uri(tracking_uri) if track else None
    return run(spec, tracking_uri=uri, experiment=experiment, **options)
