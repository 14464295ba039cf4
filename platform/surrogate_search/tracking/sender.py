"""A run's metrics sent from a thread of their own, so that training never waits on the tracking store.

:meth:`MetricSender.put` queues metrics and returns at once; a daemon thread sends them in batches,
at most one every ``send_every_s`` seconds (what arrives meanwhile joins the next batch: a run that
evaluates several times a second makes a few writes to the store, not one per evaluation), and at
once when :meth:`flush` or :meth:`close` asks.
When the store cannot take a batch (a server that is down or failing, see
:func:`~surrogate_search.tracking.store.is_outage`), the metrics stay queued, ``on_down`` is told
(the caller warns once), and the thread tries again every ``retry_after_s`` seconds, or at once
when :meth:`flush` asks. Before sending again after a failure it asks the run's history which of
them arrived anyway (a request may time out after the server took it), so that no row is recorded
twice (see :mod:`.replay`). A batch the store refuses outright (a bad value, not an outage) is
dropped with a warning: nothing is ever raised into training.

MLflow's own asynchronous logging (``log_batch(..., synchronous=False)``) logs an error per batch
it fails to send and drops the batch, after the full HTTP retries (minutes while a server is down):
it neither keeps what it could not send nor tells an outage from a bad request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from surrogate_search.tracking.replay import BATCH, RowKey, distinct, missing_metrics, row_key
from surrogate_search.tracking.store import is_outage, quick_requests

log = logging.getLogger(__name__)


class MetricSender:
    """Sends the metrics of run ``run_id`` through ``mlflow_client`` in the background."""

    def __init__(self, mlflow_client: MlflowClient, run_id: str, *, retry_after_s: float = 30.0,
                 send_every_s: float = 0.0, on_down: Callable[[BaseException], None] | None = None,
                 on_up: Callable[[], None] | None = None) -> None:
        self.client = mlflow_client
        self.run_id = run_id
        self.retry_after_s = retry_after_s
        self.send_every_s = send_every_s
        self.on_down = on_down
        self.on_up = on_up
        self._pending: list[Metric] = []
        self._sent: Counter[RowKey] = Counter()
        self._doubtful = False  # a request failed: some of the pending rows may be recorded already
        self._down = False
        self._attempts = 0  # failed attempts so far: a flush waits for the next one at most
        self._flush_asked = False
        self._retry_at = 0.0  # down: the next attempt; up: the earliest next send (send_every_s)
        self._closed = False
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Metrics queued and not yet recorded."""
        with self._lock:
            return len(self._pending)

    def put(self, metrics: list[Metric]) -> None:
        if not metrics:
            return
        with self._lock:
            if self._closed:  # the run has ended
                return
            self._pending.extend(metrics)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"mlflow-metrics-{self.run_id[:8]}",
                                                daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def flush(self, timeout: float = 30.0) -> int:
        """Try to send what is queued now, and wait until it is sent, the store failed to take it,
        or ``timeout`` seconds passed; returns how many metrics are still queued."""
        deadline = time.monotonic() + timeout
        with self._lock:
            attempts = self._attempts
            self._flush_asked = True
            self._lock.notify_all()
            while self._pending and self._attempts == attempts:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return len(self._pending)

    def close(self, timeout: float = 30.0) -> int:
        """:meth:`flush`, then stop: what is still queued is given up (returns how many). A run's
        sender is closed when the run ends, so that nothing is sent behind a later replay's back."""
        left = self.flush(timeout)
        with self._lock:
            self._pending.clear()
            self._closed = True
            self._lock.notify_all()
        return left

    def _run(self) -> None:
        while True:
            with self._lock:
                while not (self._pending and (self._flush_asked or time.monotonic() >= self._retry_at)):
                    if self._closed:
                        return
                    # Idle: wait for metrics. Otherwise for the next send (or retry, when down), or a flush.
                    self._lock.wait(max(0.0, self._retry_at - time.monotonic()) if self._pending else None)
                self._flush_asked = False
                batch = self._pending[:BATCH]
                doubtful = self._doubtful
            try:
                self._send(batch, doubtful)
            except Exception as exc:
                if is_outage(exc):
                    self._failed(exc)
                else:
                    log.warning("MLflow refused %d metric(s) of run %s, dropped (%s: %s)", len(batch), self.run_id,
                                type(exc).__name__, exc)
                    self._done(batch, recorded=False)
                continue
            with self._lock:
                was_down = self._down
                self._down = self._doubtful = False
                self._retry_at = time.monotonic() + self.send_every_s
            self._done(batch, recorded=True)
            if was_down and self.on_up is not None:
                self.on_up()

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            was_down, self._down, self._doubtful = self._down, True, True
            self._attempts += 1
            # The first retry comes soon (a blip), the next ones every retry_after_s.
            self._retry_at = time.monotonic() + (self.retry_after_s if was_down else min(1.0, self.retry_after_s))
            self._lock.notify_all()
        if not was_down and self.on_down is not None:
            self.on_down(error)

    def _send(self, batch: list[Metric], doubtful: bool) -> None:
        with quick_requests():
            todo = missing_metrics(self.client, self.run_id, batch, self._sent) if doubtful else batch
            if todo:
                self.client.log_batch(self.run_id, metrics=distinct(todo))

    def _done(self, batch: list[Metric], *, recorded: bool) -> None:
        with self._lock:
            del self._pending[:len(batch)]
            if recorded:
                self._sent.update(row_key(m) for m in batch)
            self._lock.notify_all()
