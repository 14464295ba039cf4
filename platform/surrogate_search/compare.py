"""A fair comparison: every method post-tunes the same base checkpoint on the same data with the
same budget (model updates x batch size), over several seeds, and is judged on the held-out test
split. Learned surrogates that lose to proxy continuation are reported as losing.

On a classification task (a confusion-matrix metric such as F1) every method is reported twice: at
the task's fixed 0.5 decision threshold, and at the threshold chosen on val for each run (applied
unchanged to test). Proxy continuation at its val-tuned threshold is the baseline practitioners
try first; the second column's ``vs proxy`` compares with it."""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from surrogate_search.checkpoint import BaseCheckpoint
from surrogate_search.config import PostTuneConfig
from surrogate_search.posttune import PostTuneResult, TunedThreshold, posttune, tune_threshold
from surrogate_search.progress import Progress
from surrogate_search.surrogates import list_methods, loss_class
from surrogate_search.tasks import Task

if TYPE_CHECKING:
    from surrogate_search.tracking.model_registry import Registration

log = logging.getLogger(__name__)

CONTROL = "proxy"
"""Proxy continuation: the control every method is measured against, always in a comparison."""

THRESHOLD_NOTE = ("@val thr: each run's decision threshold, chosen to maximise val {metric} and applied unchanged to "
                  "test (never chosen on test)\n"
                  "baseline practitioners try first: {control} @val thr = {value} (the proxy loss continued, plus "
                  "a threshold tuned on val)")
"""The lines under a classification table (filled in by :meth:`Comparison.threshold_note` and the report)."""


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


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


def check_seeds(seeds: Iterable[int]) -> list[int]:
    """The seeds of a comparison, as a list: at least one, each an integer, none twice. Fails before
    anything runs (``statistics`` would fail only after every method had run, on an empty column)."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("compare: seeds must name at least one seed, got none (on the command line, --seeds N "
                         "runs seeds 0 to N-1 and must be >= 1)")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int)]
    if bad:
        raise ValueError(f"compare: seeds must be integers, got {bad[0]!r}")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ValueError(f"compare: seeds must be distinct, got {twice[0]} twice in {seeds}")
    return seeds


@dataclass
class MethodSummary:
    method: str
    values: list[float]
    """Test metric per seed (of the best-validation model)."""
    val_values: list[float]
    seconds: list[float]
    kept_base: int = 0
    """Seeds whose best validation model was the base itself (no update helped)."""
    at_val_threshold: list[float] = field(default_factory=list)
    """Test metric per seed at the decision threshold chosen on val (classification tasks; else empty)."""
    thresholds: list[float] = field(default_factory=list)
    """The decision threshold chosen on val, per seed."""
    final_values: list[float] = field(default_factory=list)
    """Test metric per seed of the model after the last update, whatever validation chose: what the
    loss did to the model, shown beside the selected figure (on a converged base the selection
    may keep the base on every seed and hide it)."""

    @property
    def mean(self) -> float:
        return mean_std(self.values)[0]

    @property
    def std(self) -> float:
        return mean_std(self.values)[1]


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
    base_tuned: TunedThreshold | None = None
    """The base model's decision threshold chosen on val and its test metric there (classification
    tasks; None otherwise, and then the table has no threshold column)."""
    registration: Registration | None = None
    """The best learned surrogate's version in MLflow's model registry and whether it became the
    champion; None when the comparison was not recorded or no method learned a surrogate."""

    def relative_change(self, summary: MethodSummary, *, at_val_threshold: bool = False) -> float:
        """Percent change of the mean test metric against proxy continuation (the control), both at
        the fixed threshold or both at their val-tuned thresholds."""
        control = next((s for s in self.summaries if s.method == CONTROL), None)
        if control is None:
            return math.nan
        ours, theirs = ((summary.at_val_threshold, control.at_val_threshold) if at_val_threshold
                        else (summary.values, control.values))
        reference = mean_std(theirs)[0] if theirs else 0.0
        if not ours or reference == 0:
            return math.nan
        return 100.0 * (mean_std(ours)[0] - reference) / abs(reference)

    def rows(self) -> list[dict[str, Any]]:
        """One mapping per method; on a classification task also the test metric at the val-tuned
        threshold (``at_val_threshold_mean``/``_std``/``_vs_proxy_pct``) and ``val_threshold_mean``."""
        rows = []
        for s in self.summaries:
            row = {"method": s.method, "mean": s.mean, "std": s.std, "seeds": len(s.values),
                   "vs_proxy_pct": self.relative_change(s), "val_mean": statistics.fmean(s.val_values),
                   "seconds_mean": statistics.fmean(s.seconds), "kept_base": s.kept_base,
                   "last_update_mean": statistics.fmean(s.final_values) if s.final_values else math.nan}
            if s.at_val_threshold:
                mean, std = mean_std(s.at_val_threshold)
                row.update(at_val_threshold_mean=mean, at_val_threshold_std=std,
                           at_val_threshold_vs_proxy_pct=self.relative_change(s, at_val_threshold=True),
                           val_threshold_mean=statistics.fmean(s.thresholds))
            rows.append(row)
        return rows

    def threshold_note(self) -> str:
        """The lines under a classification table that name the proxy + tuned-threshold baseline."""
        control = next((r for r in self.rows() if r["method"] == CONTROL and "at_val_threshold_mean" in r), None)
        value = f"{control['at_val_threshold_mean']:.4f} ± {control['at_val_threshold_std']:.4f}" if control else "—"
        return THRESHOLD_NOTE.format(metric=self.metric, control=CONTROL, value=value)

    def table(self) -> str:
        direction = "higher is better" if self.higher_is_better else "lower is better"
        c = self.config
        tuned = self.base_tuned
        first = f"test {self.metric}" + (" @0.5" if tuned else "")
        thresholds = (f" {'test ' + self.metric + ' @val thr':>22s} {'vs proxy':>9s} {'val thr':>7s}" if tuned else "")
        base = f" {'':9s} {tuned.test:>22.4f} {'':9s} {tuned.threshold:>7.3f}" if tuned else ""
        lines = [f"{self.task}: test {self.metric} ({direction}); {c.steps} model updates x batch {c.batch_size} "
                 f"per method from one base checkpoint; mean ± std over seeds",
                 f"{'method':22s} {first:>22s} {'vs proxy':>9s}{thresholds} {'seeds':>5s} {'kept base':>9s} "
                 f"{'s/run':>7s} {'last update':>11s}",
                 f"{'base (no tuning)':22s} {self.base_test:>22.4f}{base}"]
        if self.base_splits:
            where = ", ".join(f"{name} {value:.4f}" for name, value in self.base_splits.items())
            lines.insert(1, f"base model {self.metric} on {len(self.base_splits)} splits of val's size: {where}; "
                            f"post-tuning updates on {c.data}")
        for row in self.rows():
            at = ""
            if "at_val_threshold_mean" in row:
                at = (f" {row['at_val_threshold_mean']:>13.4f} ± {row['at_val_threshold_std']:<6.4f} "
                      f"{change_text(row['method'], row['at_val_threshold_vs_proxy_pct']):>9s} "
                      f"{row['val_threshold_mean']:>7.3f}")
            lines.append(f"{row['method']:22s} {row['mean']:>13.4f} ± {row['std']:<6.4f} "
                         f"{change_text(row['method'], row['vs_proxy_pct']):>9s}{at} "
                         f"{row['seeds']:>5d} {row['kept_base']:>9d} {row['seconds_mean']:>7.1f} "
                         f"{row['last_update_mean']:>11.4f}")
        lines.append(f"last update: mean test {self.metric} of the model after its last update, before the "
                     f"best-validation selection")
        if tuned:
            lines.append(self.threshold_note())
        return "\n".join(lines)


def change_text(method: str, pct: float) -> str:
    """A table cell for the relative change against the control: ``+3.1%``, ``-0.05%`` (two
    decimals under 1%: IoU or recall near 0.9 moves by hundredths of a percent), or ``—`` for the control."""
    if method == CONTROL or math.isnan(pct):
        return "—"
    return f"{pct:+.2f}%" if abs(pct) < 1 else f"{pct:+.1f}%"


def compare(checkpoint: BaseCheckpoint, overrides: Mapping[str, Any] | None = None, *,
            methods: Sequence[str] | None = None, seeds: Sequence[int] = (0, 1, 2), cache_dir: str | None = None,
            run: Callable[[PostTuneConfig, BaseCheckpoint], PostTuneResult] | None = None) -> Comparison:
    """Post-tune ``checkpoint`` with each method and seed from one config (the task's defaults, then
    ``overrides``); ``run`` lets a caller run each post-tuning elsewhere (a Ray Train trainer, a
    tracked run); by default it runs here, in-process."""
    seeds = check_seeds(seeds)
    task = checkpoint.build_task()
    methods = comparison_methods(task, methods)
    base = PostTuneConfig.for_task(task, overrides).replace(method=CONTROL)
    splits = task.splits(cache_dir)
    base_model = checkpoint.build_model(task)
    base_test = task.evaluate(base_model, splits.test)[task.metric_name]
    base_tuned = tune_threshold(task, base_model, splits)
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
        tuned = [r.tuned for r in results if r.tuned is not None]
        summaries.append(MethodSummary(method, [r.test[task.metric_name] for r in results],
                                       [r.val[task.metric_name] for r in results], [r.seconds for r in results],
                                       kept_base=sum(r.kept_base for r in results),
                                       at_val_threshold=[t.test for t in tuned],
                                       thresholds=[t.threshold for t in tuned],
                                       final_values=[r.test_final[task.metric_name] for r in results]))
    progress.close()
    return Comparison(task.name, task.metric_name, task.metric.higher_is_better, base_test, base, summaries, runs,
                      base_splits=base_splits, base_tuned=base_tuned)
