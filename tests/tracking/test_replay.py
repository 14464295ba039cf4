"""Metric rows replayed into a run exactly once, and sent in the background without losing or
doubling a row when a request fails after the store took it."""

from __future__ import annotations

import itertools
import os

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from surrogate_search.tracking import start_run
from surrogate_search.tracking.replay import replay_metrics
from surrogate_search.tracking.sender import MetricSender


_CLOCK = itertools.count(1_700_000_000_000)  # each row logged a millisecond after the one before


def rows(pairs: list[tuple[int, float]], key: str = "val/f1") -> list[Metric]:
    return [Metric(key, value, next(_CLOCK), step) for step, value in pairs]


def history(client: MlflowClient, run_id: str, key: str = "val/f1") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_replay_sends_only_what_is_missing_and_keeps_rows_that_rightly_repeat() -> None:
    run = start_run("replay", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    client = run.client
    # The last evaluation and the final row share step 4 and, here, their value: two rows.
    # Replayed rows are all stamped with the time of the replay.
    expected = [Metric("val/f1", value, 1_600_000_000_000, step) for step, value in [(2, 0.5), (4, 0.75), (4, 0.75)]]
    client.log_batch(run.run_id, metrics=expected[:1])  # what reached the store before an outage
    assert replay_metrics(client, run.run_id, expected) == 2
    assert replay_metrics(client, run.run_id, expected) == 0  # idempotent
    assert history(client, run.run_id) == [(2, 0.5), (4, 0.75), (4, 0.75)]


class TakesThenTimesOut:
    """A client whose first ``log_batch`` is recorded but answered as a timeout (the server took
    the request, the answer was lost)."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self.failed = False

    def log_batch(self, run_id: str, metrics: list[Metric]) -> None:
        self.client.log_batch(run_id, metrics=metrics)
        if not self.failed:
            self.failed = True
            raise MlflowException("timed out", error_code="TEMPORARILY_UNAVAILABLE")

    def __getattr__(self, name: str):
        return getattr(self.client, name)


def test_sender_resends_after_a_failure_without_doubling_what_arrived() -> None:
    run = start_run("replay", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    downs: list[BaseException] = []
    ups: list[bool] = []
    sender = MetricSender(TakesThenTimesOut(run.client), run.run_id, retry_after_s=0.05,  # type: ignore[arg-type]
                          on_down=downs.append, on_up=lambda: ups.append(True))
    sender.put(rows([(1, 0.25), (2, 0.5)]))
    sender.flush(timeout=30)  # the first attempt "fails"
    sender.put(rows([(2, 0.5), (3, 0.5)]))  # step 2 rightly twice: the sender sent one copy, not two
    assert sender.flush(timeout=30) == 0
    assert len(downs) == 1 and ups == [True]
    assert history(run.client, run.run_id) == [(1, 0.25), (2, 0.5), (2, 0.5), (3, 0.5)]


class CountsWrites:
    """A client that counts its ``log_batch`` calls (each one write to the store)."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self.writes = 0

    def log_batch(self, run_id: str, metrics: list[Metric]) -> None:
        self.writes += 1
        self.client.log_batch(run_id, metrics=metrics)

    def __getattr__(self, name: str):
        return getattr(self.client, name)


def test_evaluations_that_come_quickly_share_a_write_and_a_flush_sends_at_once() -> None:
    run = start_run("coalesce", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    counting = CountsWrites(run.client)
    sender = MetricSender(counting, run.run_id, send_every_s=60.0)  # type: ignore[arg-type]
    for step in range(20):  # twenty evaluations in well under a minute
        sender.put(rows([(step, step / 20)]))
    assert sender.flush(timeout=30) == 0  # sent within 30 s although the next send was a minute away
    assert counting.writes <= 2  # the first evaluation at once, the other nineteen together
    assert history(run.client, run.run_id) == [(step, step / 20) for step in range(20)]
    assert sender.close() == 0
