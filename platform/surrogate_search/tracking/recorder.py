"""Post-tuning runs and comparisons, recorded in MLflow.

:func:`tracked_posttune` runs one post-tuning into a :class:`TrialLogger`'s run: the flattened
config as parameters, every evaluation as metrics, test metrics, the resolved config, and for a
learned surrogate its fidelity scatter, its weights and ``surrogate.json`` (to start another
post-tuning from).
:func:`tracked_compare` makes a comparison a parent run with one such child per method and seed,
plus the table, the curves and the bar chart on the parent, and registers its best learned surrogate
(logged as an MLflow PyTorch model in its run).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from surrogate_search.checkpoint import BaseCheckpoint
from surrogate_search.compare import Comparison, check_seeds, compare
from surrogate_search.config import PostTuneConfig
from surrogate_search.posttune import PostTuneResult, WorkerContext, posttune, selection_key
from surrogate_search.sampling import GlobalSampler, LocalSampler, Pairs
from surrogate_search.surrogates import LearnedSurrogateLoss, SavedSurrogate, create_loss, loss_class, save_surrogate, spearman
from surrogate_search.surrogates.saved import ABOUT_FILE, STATE_FILE
from surrogate_search.tasks import Splits, Task
from surrogate_search.tracking import plots
from surrogate_search.tracking.model_registry import Registration, default_model_name, register_surrogate
from surrogate_search.tracking.runs import TrialLogger, finish_run, start_parent_run, trial_logger
from surrogate_search.tracking.store import client, environment, resolve_tracking_uri, use_tracking_uri
from surrogate_search.utils import flatten, is_better

log = logging.getLogger(__name__)

MODEL_NAME = "surrogate"


def task_experiment_name(task: Task) -> str:
    """One experiment per task (and dataset): ``imbalanced_tabular_breast_cancer``, ``synthetic_text``."""
    suffix = "".join(f"_{v}" for k, v in sorted(task.options.items()) if k == "dataset")
    return f"{task.name}{suffix}"


def run_tags(task: Task, config: PostTuneConfig) -> dict[str, str]:
    return {"task": task.name, "metric": task.metric_name, **method_tags(config)}


def method_tags(config: PostTuneConfig) -> dict[str, str]:
    learned = loss_class(config.method).learned
    return {"learned": str(learned).lower(), "method": config.method, "seed": str(config.seed),
            "surrogate": f"{config.method}/{config.surrogate.encoder}" if learned else "none",
            "sampling": config.sampling.strategy if learned else "none"}


@dataclass
class Recorded:
    """What a tracked post-tuning leaves behind besides its metrics."""

    result: PostTuneResult
    run_id: str
    surrogate_state: dict[str, torch.Tensor] | None = None
    """The learned loss's state at the best validation step (None for fixed losses)."""
    extra: dict[str, Any] = field(default_factory=dict)


def tracked_posttune(config: PostTuneConfig, checkpoint: BaseCheckpoint, logger: TrialLogger, *,
                     splits: Splits | None = None, cache_dir: str | None = None,
                     context: WorkerContext | None = None,
                     surrogate: SavedSurrogate | None = None) -> Recorded:
    """Post-tune with every evaluation logged to ``logger``'s run; a learned surrogate's weights at
    the selected step are logged too (:func:`log_surrogate_files`). Does not close the run: wrap it
    in ``with logger:`` (FINISHED, or FAILED with the error). ``surrogate``: a saved surrogate to
    start from (tagged ``surrogate_source``; see :func:`surrogate_search.posttune.posttune`)."""
    task = checkpoint.build_task()
    metric = task.metric_name
    higher = task.metric.higher_is_better
    ctx = copy.copy(context) if context is not None else WorkerContext()
    best: dict[str, Any] = {"value": None, "state": None}
    learned = loss_class(config.method).learned

    selected_by = selection_key(task, config)  # what posttune's best-validation selection compares

    def keep_best(metrics: dict[str, float], state_fn: Any) -> None:
        value = metrics.get(selected_by)
        if value is not None and is_better(value, best["value"], higher):
            best["value"] = value
            if learned:
                best["state"] = {k: v.detach().cpu().clone() for k, v in state_fn()["loss_fn"].items()}
        if context is not None and context.report is not None:
            context.report(metrics, state_fn)

    ctx.report = logger.report_hook(objective=f"val/{metric}", then=keep_best)
    logger.log_dict(config.to_dict(), "config.yaml")
    if surrogate is not None:
        logger.set_tags({"surrogate_source": surrogate.source, "surrogate_source_version": surrogate.resolved or "-"})
    result = posttune(config, checkpoint, splits=splits, cache_dir=cache_dir, context=ctx, surrogate=surrogate)
    final = {**{f"test/{k}": v for k, v in result.test.items()}, **{f"test_final/{k}": v for k, v in result.test_final.items()},
             **{f"best_val/{k}": v for k, v in result.val.items()}, **{f"base_val/{k}": v for k, v in result.base_val.items()},
             "best_step": float(result.best_step), "wall_seconds": result.seconds}
    if result.leave_base_share is not None:  # leave_base_confidence weighed the selected model against the base
        final["leave_base_share"] = result.leave_base_share
    pretraining = result.surrogate_pretraining
    if pretraining:  # the surrogate came pretrained on the base model (made here, or loaded)
        final.update({f"surrogate_pretraining/{k}": float(v) for k, v in pretraining.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)})
        logger.set_tags({"surrogate_pretrained": pretraining["path"],
                         "surrogate_pretraining_reused": str(pretraining["reused"]).lower()})
    final.update(threshold_metrics(result, metric))
    logger.log(final, step=result.steps)
    # No curve figure per run: MLflow charts the run's val/<metric> history itself (a comparison's
    # parent run holds every method's curves in one figure).
    logger.set_tags({"test_metric": f"test/{metric}", "higher_is_better": str(higher)})
    recorded = Recorded(result, logger.run_id, best["state"])
    if best["state"] is not None:
        log_surrogate_files(logger, task, config, best["state"], splits=splits, checkpoint=checkpoint, cache_dir=cache_dir)
    return recorded


def threshold_metrics(result: PostTuneResult, metric: str) -> dict[str, float]:
    """A classification run's decision threshold chosen on val (``val_threshold``) and its metric
    there on val and test (``test/f1_at_val_threshold``); empty for other tasks."""
    if result.tuned is None:
        return {}
    return {"val_threshold": result.tuned.threshold, f"best_val/{metric}_at_val_threshold": result.tuned.val,
            f"test/{metric}_at_val_threshold": result.tuned.test}


def _curve(result: PostTuneResult, metric: str) -> tuple[list[float], list[float]]:
    rows = [h for h in result.history if f"val/{metric}" in h]
    return [h["step"] for h in rows], [h[f"val/{metric}"] for h in rows]


def build_surrogate(task: Task, config: PostTuneConfig, state: Mapping[str, torch.Tensor]) -> LearnedSurrogateLoss:
    loss = create_loss(task, config)
    if not isinstance(loss, LearnedSurrogateLoss):
        raise ValueError(f"method {config.method!r} has no learned surrogate to save")
    loss.load_state_dict(dict(state))
    return loss.eval()


def fidelity_pairs(task: Task, splits: Splits, config: PostTuneConfig, model: nn.Module, n_items: int = 256) -> Pairs:
    """Held-out pairs from the validation split: model-free ones over the metric's range and the
    model's own (perturbed) predictions."""
    half = max(n_items // 2, 1)
    generator = torch.Generator().manual_seed(4242)
    global_pairs = GlobalSampler(task, splits.val, config.sampling, config.batch_size, generator).sample(half, nn.Identity())
    local_pairs = LocalSampler(task, splits.val, config.sampling, config.batch_size, generator).sample(half, model)
    return Pairs.cat([global_pairs, local_pairs])


def log_surrogate_files(logger: TrialLogger, task: Task, config: PostTuneConfig, state: Mapping[str, torch.Tensor], *,
                        checkpoint: BaseCheckpoint, splits: Splits | None = None, cache_dir: str | None = None) -> str:
    """Log the surrogate's fidelity scatter and, under ``surrogate/``, its weights (a state dict) and
    ``surrogate.json``: what another post-tuning starts from (``posttune --surrogate runs:/<run id>/surrogate``).
    Returns that URI, also the run's ``surrogate_uri`` tag. Every learned run logs this much; the
    MLflow model (:func:`log_surrogate`) is made only for the surrogate a comparison registers."""
    loss = build_surrogate(task, config, state)
    _, rho = _log_fidelity(logger, task, config, loss, checkpoint, splits or task.splits(cache_dir))
    with tempfile.TemporaryDirectory() as tmp:
        logger.log_artifacts(str(save_surrogate(loss, tmp)), MODEL_NAME)
    uri = f"runs:/{logger.run_id}/{MODEL_NAME}"
    logger.set_tags({"surrogate_uri": uri, "fidelity_spearman": f"{rho:.4f}"})
    return uri


def log_surrogate(logger: TrialLogger, task: Task, config: PostTuneConfig, state: Mapping[str, torch.Tensor], *,
                  checkpoint: BaseCheckpoint, splits: Splits | None = None, cache_dir: str | None = None) -> str:
    """Log the surrogate as an MLflow PyTorch model and its fidelity scatter; returns the model URI.

    The model is saved in MLflow's ``pt2`` format (``torch.export``: a traced graph, no pickle, no
    need for this package to load it), with a dynamic batch dimension::

        surrogate = mlflow.pytorch.load_model(model_uri)
        estimates = surrogate(predictions, targets)   # the estimated metric, one value per item

    Its ``extra_files/`` hold the weights as a state dict and ``surrogate.json`` (what it was learned
    for), which a post-tuning starts from (:func:`surrogate_search.tracking.model_registry.fetch_surrogate`).
    The export costs about 0.25 s (1 s in a process's first, which imports ``torch.export``), so
    only the surrogate a comparison registers is logged this way."""
    import mlflow.pytorch
    from mlflow.models import infer_signature

    loss = build_surrogate(task, config, state)
    splits = splits or task.splits(cache_dir)
    pairs, rho = _log_fidelity(logger, task, config, loss, checkpoint, splits)
    # Batch > 1 in the example, so that torch.export keeps the batch dimension dynamic.
    example = (pairs.predictions[:4].float().cpu(), pairs.targets[:4].float().cpu())
    signature = infer_signature({"predictions": example[0].numpy(), "targets": example[1].numpy()})
    # Explicit requirements: inferring them would import the model in a subprocess (seconds each).
    with (use_tracking_uri(logger.tracking_uri), tempfile.TemporaryDirectory() as tmp,
          environment(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")):  # a bar per extra file, on every run
        saved = save_surrogate(loss, tmp)
        info = mlflow.pytorch.log_model(loss.surrogate.cpu().eval(), name=MODEL_NAME, run_id=logger.run_id,
                                        serialization_format="pt2", input_example=example, signature=signature,
                                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                                        extra_files=[str(saved / STATE_FILE), str(saved / ABOUT_FILE)],
                                        metadata={"task": task.name, "metric": task.metric_name,
                                                  "method": config.method,
                                                  "inputs": "surrogate(predictions, targets) -> estimated metric per item"})
    logger.set_tags({"surrogate_model_uri": info.model_uri, "fidelity_spearman": f"{rho:.4f}"})
    return info.model_uri


def _log_fidelity(logger: TrialLogger, task: Task, config: PostTuneConfig, loss: LearnedSurrogateLoss,
                  checkpoint: BaseCheckpoint, splits: Splits) -> tuple[Pairs, float]:
    """Plot the surrogate's estimates against the true metric on held-out pairs; returns the pairs
    and the estimates' Spearman with the metric."""
    with torch.no_grad():
        pairs = fidelity_pairs(task, splits, config, checkpoint.build_model(task).eval())
        estimates = loss.score(pairs.predictions, pairs.targets).float()
    errors = pairs.errors.float()
    rho = spearman(estimates, errors)
    fig = plots.fidelity_scatter(errors.tolist(), estimates.tolist(), metric=task.metric_name, spearman=rho,
                                 title=f"{config.method}, seed {config.seed}",
                                 higher_is_better=task.metric.higher_is_better)
    logger.log_figure(fig, "plots/fidelity_scatter.png")
    plots.close(fig)
    return pairs, rho


@dataclass
class TrackedComparison:
    comparison: Comparison
    parent_run_id: str
    experiment: str
    child_run_ids: dict[tuple[str, int], str]
    tracking_uri: str
    registration: Registration | None = None
    """The best learned surrogate's registered version (None: no learned method ran)."""


def tracked_compare(checkpoint: BaseCheckpoint, overrides: Mapping[str, Any] | None = None, *,
                    methods: Sequence[str] | None = None, seeds: Sequence[int] = (0, 1, 2),
                    cache_dir: str | None = None, experiment: str | None = None, tracking_uri: str | None = None,
                    comparison_id: str | None = None, registered_model_name: str | None = None) -> TrackedComparison:
    """:func:`surrogate_search.compare.compare`, recorded: a parent run (``run_kind=comparison``)
    with one child per method and seed. The same ``comparison_id`` resumes into the same runs. The
    best learned surrogate (by validation metric) is registered as a version of
    ``registered_model_name`` (default ``<experiment>-<method>-surrogate``), see
    :func:`surrogate_search.tracking.model_registry.register_surrogate`."""
    uri = resolve_tracking_uri(tracking_uri)
    task = checkpoint.build_task()
    # A typo in a method or a setting, or no seed, fails here, before a comparison run exists in MLflow.
    for method in methods or ():
        loss_class(method)
    PostTuneConfig.for_task(task, overrides)
    seeds = check_seeds(seeds)
    experiment = experiment or task_experiment_name(task)
    comparison_id = comparison_id or f"compare-{uuid.uuid4().hex[:8]}"
    parent = start_parent_run(experiment, comparison_id, kind="comparison", tracking_uri=uri,
                              tags={"task": task.name, "metric": task.metric_name,
                                    "higher_is_better": str(task.metric.higher_is_better),
                                    "checkpoint": str(checkpoint.path or "")},
                              params={"methods": ",".join(methods or ["default"]), "seeds": ",".join(map(str, seeds)),
                                      **{f"base.{k}": v for k, v in flatten(overrides or {}).items()}})
    splits = task.splits(cache_dir)
    recorded: dict[tuple[str, int], Recorded] = {}

    def run(config: PostTuneConfig, ckpt: BaseCheckpoint) -> PostTuneResult:
        tags = {**run_tags(task, config), "run_kind": "comparison_run"}
        logger = trial_logger(parent, f"{config.method}-seed{config.seed}", params=config.params(), tags=tags,
                              tracking_uri=uri, run_name=f"{config.method} seed {config.seed}")
        with logger:
            recorded[(config.method, config.seed)] = tracked_posttune(config, ckpt, logger, splits=splits)
        return recorded[(config.method, config.seed)].result

    try:
        result = compare(checkpoint, overrides, methods=methods, seeds=seeds, cache_dir=cache_dir, run=run)
        best = _record_comparison(uri, parent, task, checkpoint, splits, result, recorded)
        registration = _register(uri, parent, best, registered_model_name or default_model_name(
            experiment, best[0].method), result) if best else None
    except Exception:
        finish_run(parent, "FAILED", tracking_uri=uri)
        raise
    except BaseException:  # Ctrl-C
        finish_run(parent, "KILLED", tracking_uri=uri)
        raise
    finish_run(parent, "FINISHED", tracking_uri=uri)
    return TrackedComparison(result, parent, experiment, {k: r.run_id for k, r in recorded.items()}, uri, registration)


def judged_value(result: PostTuneResult, metric: str, by_threshold: bool) -> tuple[str, float]:
    """What a run's surrogate is judged by, among a comparison's runs and in the model registry: the
    figure its run selected by (``selection_key``). With ``by_threshold`` (F1 tasks under
    ``selection: auto``) that is the selected model's val metric at the threshold chosen on val,
    ``f1_at_val_threshold`` (as its run logs it); else the metric at the task's own decision rule."""
    if by_threshold and result.tuned is not None:
        return f"{metric}_at_val_threshold", result.tuned.val
    return metric, result.val[metric]


def _register(uri: str, parent: str, best: tuple[PostTuneConfig, Recorded, str, tuple[str, float]], name: str,
              result: Comparison) -> Registration:
    config, recorded, model_uri, (judged_by, value) = best
    registration = register_surrogate(model_uri, name, metric=judged_by, value=value,
                                      higher_is_better=result.higher_is_better, tracking_uri=uri,
                                      run_id=recorded.run_id, kept_base=recorded.result.kept_base,
                                      tags={"task": result.task, "method": config.method, "seed": config.seed,
                                            "comparison_run_id": parent})
    TrialLogger(uri, parent).set_tags({"registered_surrogate": registration.model_uri,
                                       "registered_surrogate_champion": str(registration.champion).lower()})
    return registration


def _record_comparison(uri: str, parent: str, task: Task, checkpoint: BaseCheckpoint, splits: Splits,
                       result: Comparison, recorded: dict[tuple[str, int], Recorded]
                       ) -> tuple[PostTuneConfig, Recorded, str, tuple[str, float]] | None:
    """Log the comparison's table, plots and best learned surrogate (a model) on the parent run;
    returns that surrogate's config, run, model URI and what it was judged by (None when no method learned one)."""
    logger = TrialLogger(uri, parent)
    metric, higher = result.metric, result.higher_is_better
    summary: dict[str, float] = {"base_test": result.base_test, **{f"base_{k}": v for k, v in result.base_splits.items()}}
    if result.base_tuned is not None:
        summary.update(base_test_at_val_threshold=result.base_tuned.test, base_val_threshold=result.base_tuned.threshold)
    for row in result.rows():
        summary.update({f"{row['method']}/test_mean": row["mean"], f"{row['method']}/test_std": row["std"],
                        f"{row['method']}/vs_proxy_pct": row["vs_proxy_pct"]})
        if "at_val_threshold_mean" in row:
            summary.update({f"{row['method']}/test_at_val_threshold_mean": row["at_val_threshold_mean"],
                            f"{row['method']}/test_at_val_threshold_std": row["at_val_threshold_std"],
                            f"{row['method']}/at_val_threshold_vs_proxy_pct": row["at_val_threshold_vs_proxy_pct"]})
    logger.log(summary, step=0)
    logger.log_dict(result.config.to_dict(), "config.yaml")
    logger.log_text(result.table() + "\n", "comparison.txt")
    base_tuned = {"base_test_at_val_threshold": result.base_tuned.test,
                  "base_val_threshold": result.base_tuned.threshold} if result.base_tuned else {}
    logger.log_dict({"task": result.task, "metric": metric, "higher_is_better": higher, "base_test": result.base_test,
                     **base_tuned, "rows": result.rows()}, "comparison.json")
    curves: dict[str, list[tuple[list[float], list[float]]]] = {}
    for (method, _seed), rec in recorded.items():
        curves.setdefault(method, []).append(_curve(rec.result, metric))
    fig = plots.posttune_curves(curves, metric=metric, higher_is_better=higher, title=f"{result.task}: post-tuning curves")
    logger.log_figure(fig, "plots/posttune_curves.png")
    plots.close(fig)
    fig = plots.comparison_bars({s.method: s.values for s in result.summaries}, metric=metric, higher_is_better=higher,
                                base=result.base_test, title=f"{result.task}: test {metric}, mean ± std over seeds")
    logger.log_figure(fig, "plots/comparison_bars.png")
    plots.close(fig)

    chosen = None
    learned = [(key, rec) for key, rec in recorded.items() if rec.surrogate_state is not None]
    if learned:
        sign = 1.0 if higher else -1.0
        by_threshold = selection_key(task, result.config).endswith("_best_threshold")
        (method, seed), best = max(learned, key=lambda item: sign * judged_value(item[1].result, metric, by_threshold)[1])
        config = result.config.replace(method=method, seed=seed)
        model_uri = log_surrogate(TrialLogger(uri, best.run_id, parent), task, config, best.surrogate_state or {},
                                  checkpoint=checkpoint, splits=splits)
        logger.set_tags({"best_surrogate_run_id": best.run_id, "best_surrogate_model_uri": model_uri,
                         "best_surrogate": f"{method} seed {seed}"})
        chosen = (config, best, model_uri, judged_value(best.result, metric, by_threshold))
    client(uri).set_tag(parent, "mlflow.note.content", "```\n" + result.table() + "\n```")
    return chosen
