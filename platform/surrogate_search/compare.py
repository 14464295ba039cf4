"""A fair comparison: every method post-tunes the same base checkpoint on the same data with the
same budget (model updates x batch size), over several seeds, and is judged on the held-out test
split. Learned surrogates that lose to proxy continuation are reported as losing."""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from surrogate_search.checkpoint import BaseCheckpoint
from surrogate_search.config import PostTuneConfig
from surrogate_search.posttune import PostTuneResult, posttune
from surrogate_search.progress import Progress
from surrogate_search.surrogates import list_methods, loss_class
from surrogate_search.tasks import Task

log = logging.getLogger(__name__)

CONTROL = "proxy"
"""Proxy continuation: the control every method is measured against, always in a comparison."""


def comparison_methods(task: Task, methods: Sequence[str] | None = None) -> list[str]:
    """The methods a comparison runs on ``task``: the control first, then ``methods`` (default: every
    registered method that applies to the task, in registration order). An unknown name fails here,
    before anything runs; a known one that does not apply is skipped with a log line."""
    for method in methods or ():
        loss_class(method)  # an unknown method lists the known ones
    applicable = list_methods(task)
    requested = list(methods or list_methods())
    skipped = [m for m in requested if m not in applicable]
    if skipped:
        log.info("not applicable to %s (metric %s): %s", task.name, task.metric_name, ", ".join(skipped))
    return [CONTROL, *(m for m in requested if m in applicable and m != CONTROL)]


@dataclass
class MethodSummary:
    method: str
    values: list[float]
    """Test metric per seed (of the best-validation model)."""
    val_values: list[float]
    seconds: list[float]
    kept_base: int = 0
    """Seeds whose best validation model was the base itself (no update helped)."""

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


@dataclass
class Comparison:
    task: str
    metric: str
    higher_is_better: bool
    base_test: float
    config: PostTuneConfig
    """The settings every run shared (shown with the control's method)."""
    summaries: list[MethodSummary]
    runs: list[PostTuneResult] = field(default_factory=list)
    base_splits: dict[str, float] = field(default_factory=dict)
    """The base model's metric on ``train``, ``tune`` and ``val``, on as many samples of each as
    val has: where its errors are (few on the data it memorised)."""
    mlflow: dict[str, str] = field(default_factory=dict)
    """Where the comparison was recorded (``experiment``, ``run_id`` of its parent run,
    ``tracking_uri``); empty if it was not."""

    def relative_change(self, summary: MethodSummary) -> float:
        """Percent change of the mean test metric against proxy continuation (the control)."""
        control = next((s for s in self.summaries if s.method == CONTROL), None)
        if control is None or control.mean == 0:
            return math.nan
        return 100.0 * (summary.mean - control.mean) / abs(control.mean)

    def rows(self) -> list[dict[str, Any]]:
        return [{"method": s.method, "mean": s.mean, "std": s.std, "seeds": len(s.values),
                 "vs_proxy_pct": self.relative_change(s), "val_mean": statistics.fmean(s.val_values),
                 "seconds_mean": statistics.fmean(s.seconds), "kept_base": s.kept_base} for s in self.summaries]

    def table(self) -> str:
        direction = "higher is better" if self.higher_is_better else "lower is better"
        c = self.config
        lines = [f"{self.task}: test {self.metric} ({direction}); {c.steps} model updates x batch {c.batch_size} "
                 f"per method from one base checkpoint; mean ± std over seeds",
                 f"{'method':22s} {'test ' + self.metric:>22s} {'vs proxy':>9s} {'seeds':>5s} {'kept base':>9s} "
                 f"{'s/run':>7s}",
                 f"{'base (no tuning)':22s} {self.base_test:>22.4f}"]
        if self.base_splits:
            where = ", ".join(f"{name} {value:.4f}" for name, value in self.base_splits.items())
            lines.insert(1, f"base model {self.metric} on {len(self.base_splits)} splits of val's size: {where}; "
                            f"post-tuning updates on {c.data}")
        for row in self.rows():
            change = "—" if row["method"] == CONTROL or math.isnan(row["vs_proxy_pct"]) else f"{row['vs_proxy_pct']:+.1f}%"
            lines.append(f"{row['method']:22s} {row['mean']:>13.4f} ± {row['std']:<6.4f} {change:>9s} "
                         f"{row['seeds']:>5d} {row['kept_base']:>9d} {row['seconds_mean']:>7.1f}")
        return "\n".join(lines)


def compare(checkpoint: BaseCheckpoint, overrides: Mapping[str, Any] | None = None, *,
            methods: Sequence[str] | None = None, seeds: Sequence[int] = (0, 1, 2), cache_dir: str | None = None,
            run: Callable[[PostTuneConfig, BaseCheckpoint], PostTuneResult] | None = None) -> Comparison:
    """Post-tune ``checkpoint`` with each method and seed from one config (the task's defaults, then
    ``overrides``); ``run`` lets a caller run each post-tuning elsewhere (a Ray Train trainer, a
    tracked run); by default it runs here, in-process."""
    task = checkpoint.build_task()
    methods = comparison_methods(task, methods)
    base = PostTuneConfig.for_task(task, overrides).replace(method=CONTROL)
    splits = task.splits(cache_dir)
    base_model = checkpoint.build_model(task)
    base_test = task.evaluate(base_model, splits.test)[task.metric_name]
    # Where the base model's errors are: as many samples of each split as val has, so totals compare.
    base_splits = {name: task.evaluate(base_model, splits[name].subset(range(min(len(splits[name]), len(splits.val)))))
                   [task.metric_name] for name in ("train", "tune", "val")}
    runner = run or (lambda cfg, ckpt: posttune(cfg, ckpt, splits=splits))
    summaries, runs = [], []
    progress = Progress(f"compare {task.name}", len(methods) * len(seeds), unit="run")
    for method in methods:
        results = []
        for seed in seeds:
            log.info("== %s, seed %d", method, seed)
            results.append(runner(base.replace(method=method, seed=seed), checkpoint))
            progress.update(1, force=True, last=f"{method} seed {seed} test {task.metric_name} "
                                                f"{results[-1].test[task.metric_name]:.4f}")
        runs.extend(results)
        summaries.append(MethodSummary(method, [r.test[task.metric_name] for r in results],
                                       [r.val[task.metric_name] for r in results], [r.seconds for r in results],
                                       kept_base=sum(r.best_step == 0 for r in results)))
    progress.close()
    return Comparison(task.name, task.metric_name, task.metric.higher_is_better, base_test, base, summaries, runs,
                      base_splits=base_splits)
