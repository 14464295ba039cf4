"""A fair comparison: every method post-tunes the same base checkpoint on the same data with the
same budget (model updates x batch size), over several seeds, and is judged on the held-out test
split. Learned surrogates that lose to proxy continuation are reported as losing."""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surrogate_search.checkpoint import BaseCheckpoint, CheckpointError, load_checkpoint
from surrogate_search.config import PostTuneConfig
from surrogate_search.posttune import PostTuneResult, posttune
from surrogate_search.pretrain import pretrain
from surrogate_search.surrogates import list_methods
from surrogate_search.tasks import Task, get_task

log = logging.getLogger(__name__)

DEFAULT_METHODS = ("proxy", "weighted_proxy", "anyloss", "deep_embedding", "relational")


def default_checkpoint_dir(task: Task) -> Path:
    suffix = "".join(f"_{v}" for k, v in sorted(task.options.items()) if k == "dataset")
    return Path("runs") / f"base_{task.name}{suffix}"


def ensure_base_checkpoint(task: Task, path: str | Path | None = None, *, cache_dir: str | None = None,
                           pretrain_if_missing: bool = True) -> BaseCheckpoint:
    """Load the base checkpoint at ``path`` (default ``runs/base_<task>``), pretraining it first if
    it does not exist yet. A checkpoint of another task is an error, never silently replaced."""
    path = Path(path) if path else default_checkpoint_dir(task)
    try:
        return load_checkpoint(path, expected_task=task.name)
    except CheckpointError:
        if not pretrain_if_missing or (path / "model.pt").exists() or path.is_file():
            raise
    log.info("no base checkpoint at %s: pretraining one with the %s proxy loss", path, task.name)
    pretrain(task, path, cache_dir=cache_dir)
    return load_checkpoint(path, expected_task=task.name)


@dataclass
class MethodSummary:
    method: str
    values: list[float]
    """Test metric per seed (of the best-validation model)."""
    val_values: list[float]
    seconds: list[float]

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
    config: dict[str, Any]
    summaries: list[MethodSummary]
    runs: list[PostTuneResult] = field(default_factory=list)

    def relative_change(self, summary: MethodSummary) -> float:
        """Percent change of the mean test metric against proxy continuation (the control)."""
        control = next((s for s in self.summaries if s.method == "proxy"), None)
        if control is None or control.mean == 0:
            return math.nan
        return 100.0 * (summary.mean - control.mean) / abs(control.mean)

    def rows(self) -> list[dict[str, Any]]:
        return [{"method": s.method, "mean": s.mean, "std": s.std, "seeds": len(s.values),
                 "vs_proxy_pct": self.relative_change(s), "val_mean": statistics.fmean(s.val_values),
                 "seconds_mean": statistics.fmean(s.seconds)} for s in self.summaries]

    def table(self) -> str:
        direction = "higher is better" if self.higher_is_better else "lower is better"
        c = self.config
        lines = [f"{self.task}: test {self.metric} ({direction}); {c['steps']} model updates x batch {c['batch_size']} "
                 f"per method from one base checkpoint; mean ± std over seeds",
                 f"{'method':16s} {'test ' + self.metric:>22s} {'vs proxy':>9s} {'seeds':>5s} {'s/run':>7s}",
                 f"{'base (no tuning)':16s} {self.base_test:>22.4f} {'':>9s} {'':>5s} {'':>7s}"]
        for row in self.rows():
            change = "—" if row["method"] == "proxy" or math.isnan(row["vs_proxy_pct"]) else f"{row['vs_proxy_pct']:+.1f}%"
            lines.append(f"{row['method']:16s} {row['mean']:>13.4f} ± {row['std']:<6.4f} {change:>9s} "
                         f"{row['seeds']:>5d} {row['seconds_mean']:>7.1f}")
        return "\n".join(lines)


def compare(checkpoint: BaseCheckpoint, base_config: dict[str, Any] | None = None, *,
            methods: Sequence[str] | None = None, seeds: Sequence[int] = (0, 1, 2), cache_dir: str | None = None,
            run: Callable[[PostTuneConfig, BaseCheckpoint], PostTuneResult] | None = None) -> Comparison:
    """Post-tune ``checkpoint`` with each method and seed; ``run`` lets a caller run each post-tuning
    elsewhere (a Ray Train trainer); by default it runs here, in-process."""
    task = checkpoint.build_task()
    applicable = list_methods(task)
    requested = list(methods or [])
    methods = [m for m in (methods or DEFAULT_METHODS) if m in applicable or _unknown(m)]
    if "proxy" not in methods:
        methods.insert(0, "proxy")  # the control every change is measured against
    skipped = [m for m in (requested or DEFAULT_METHODS) if m not in applicable and not _unknown(m)]
    if skipped:
        log.info("not applicable to %s (metric %s): %s", task.name, task.metric_name, ", ".join(skipped))
    splits = task.load_splits(cache_dir)
    base_test = task.evaluate(checkpoint.build_model(task), splits.test)[task.metric_name]
    merged = merge_config(task_posttune_defaults(task), base_config or {})
    runner = run or (lambda cfg, ckpt: posttune(cfg, ckpt, splits=splits))
    summaries, runs = [], []
    for method in methods:
        results = []
        for seed in seeds:
            cfg = PostTuneConfig.from_dict({**merged, "method": method, "seed": seed})
            log.info("== %s, seed %d", method, seed)
            results.append(runner(cfg, checkpoint))
        runs.extend(results)
        summaries.append(MethodSummary(method, [r.test[task.metric_name] for r in results],
                                       [r.val[task.metric_name] for r in results], [r.seconds for r in results]))
    config = PostTuneConfig.from_dict({**merged, "method": "proxy"}).to_dict()
    return Comparison(task.name, task.metric_name, task.metric.higher_is_better, base_test, config, summaries, runs)


def _unknown(method: str) -> bool:
    if method not in list_methods():
        raise ValueError(f"unknown method {method!r}; known methods: {', '.join(list_methods())}")
    return False


def task_posttune_defaults(task: Task) -> dict[str, Any]:
    """Post-tuning settings that suit a task out of the box (set-level metrics need a set encoder
    and sets large enough to hold positives)."""
    if task.set_level:
        return {"batch_size": 128, "surrogate": {"encoder": "deepsets", "batch_size": 32}}
    return {"batch_size": 32, "surrogate": {"encoder": "conv_lstm", "batch_size": 64}}


def merge_config(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested merge; dotted keys in ``override`` (``surrogate.width``) reach into sections."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in override.items():
        head, _, rest = key.partition(".")
        if rest:
            merged.setdefault(head, {})[rest] = value
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
