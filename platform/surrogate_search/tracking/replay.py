"""Metric rows into a run exactly once, however often they are sent.

MLflow keeps every ``log_batch`` it takes, so a row sent twice (a request that timed out after
the server took it, a replay after an outage) is two points of the run's history. Here a row is
its ``(key, step, value)``: :func:`missing_metrics` compares what should be in a run with what its
history holds, as multisets (a run may rightly hold the same row twice: the last evaluation and
the final row of a post-tuning share their step, and often their value), and
:func:`replay_metrics` sends only the difference, so calling it again sends nothing.

Example (what ``surrogate-search sync`` does for each trial of a search)::

    sent = replay_metrics(client(uri), run_id, [Metric("val/f1", 0.91, 0, 4), ...])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

BATCH = 1000
"""MLflow takes at most 1000 metrics per ``log_batch``."""

RowKey = tuple[str, int, float]


def row_key(metric: Metric) -> RowKey:
    """What identifies a metric row (its timestamp does not: a replay is sent later). Values are
    compared to 12 significant digits, which any store keeps of a double."""
    return metric.key, int(metric.step), float(f"{float(metric.value):.12g}")


def recorded_rows(mlflow_client: MlflowClient, run_id: str, keys: Iterable[str]) -> Counter[RowKey]:
    """How many times the run's history holds each row of the metrics ``keys``."""
    counts: Counter[RowKey] = Counter()
    for key in sorted(set(keys)):
        counts.update(row_key(m) for m in mlflow_client.get_metric_history(run_id, key))
    return counts


def missing_metrics(mlflow_client: MlflowClient, run_id: str, metrics: Sequence[Metric],
                    already_sent: Counter[RowKey] | None = None) -> list[Metric]:
    """The part of ``metrics`` the run does not hold yet. ``already_sent``: rows of the run known
    to be recorded apart from ``metrics`` (what was sent before them); their copies in the history
    are not counted as copies of ``metrics``."""
    recorded = recorded_rows(mlflow_client, run_id, (m.key for m in metrics))
    recorded.subtract(already_sent or Counter())
    missing = []
    for metric in metrics:
        key = row_key(metric)
        if recorded[key] > 0:
            recorded[key] -= 1
        else:
            missing.append(metric)
    return missing


def distinct(metrics: Sequence[Metric]) -> list[Metric]:
    """``metrics`` with the timestamps of repeated rows moved on by a millisecond each: a SQL store
    keeps one row per (key, timestamp, step, value), so two equal rows sent together would be one."""
    seen: set[tuple[str, int, int, float]] = set()
    out = []
    for metric in metrics:
        timestamp = int(metric.timestamp)
        while (metric.key, timestamp, int(metric.step), float(metric.value)) in seen:
            timestamp += 1
        seen.add((metric.key, timestamp, int(metric.step), float(metric.value)))
        out.append(metric if timestamp == metric.timestamp else Metric(metric.key, metric.value, timestamp, metric.step))
    return out


def replay_metrics(mlflow_client: MlflowClient, run_id: str, metrics: Sequence[Metric]) -> int:
    """Make the run's history hold every row of ``metrics`` (all the rows of these keys the run
    should hold) as many times as ``metrics`` does: send what is missing, and return how many."""
    missing = distinct(missing_metrics(mlflow_client, run_id, metrics))
    for start in range(0, len(missing), BATCH):
        mlflow_client.log_batch(run_id, metrics=missing[start:start + BATCH])
    return len(missing)
