"""Parent and child runs that survive a resume.

A parent run (a search, or a comparison) is found again by its ``search_id`` tag, a child run by
its ``trial_key`` tag under that parent, so a resumed sweep writes into the runs it started instead
of duplicating them; children an interrupted sweep left ``RUNNING`` are closed as ``KILLED`` when
the sweep resumes (and reopened if their trial runs again).

Everything a worker needs is a tracking URI string and run ids, so a :class:`TrialLogger` pickles
and can be built or shipped to a Ray worker on another node.

Training never waits on or dies from a tracking server that goes away: a :class:`TrialLogger`
sends its metrics from a thread of its own (:mod:`.sender`), which keeps what the server could not
take and sends it, exactly once, when the server is back; its other calls to a remote server (tags,
artifacts, the run's status) are retried for a few seconds, then dropped with one warning, and
dropped at once while the server stays down. A search's trials are brought up to date afterwards
from their ``metrics.jsonl`` (``surrogate-search sync``, see :mod:`surrogate_search.search.sync`).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from surrogate_search.tracking.sender import MetricSender
from surrogate_search.tracking.store import (client, experiment_id, git_commit, is_outage, is_remote, quick_requests,
                                             resolve_tracking_uri)
from surrogate_search.utils import flatten

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "run_kind"
"""``search``, ``comparison``, ``trial`` or ``posttune``."""
SEARCH_TAG = "search_id"
TRIAL_TAG = "trial_key"
ERROR_TAG = "error"
GIT_TAG = "mlflow.source.git.commit"

_SECRET = re.compile(r"(password|passwd|secret|token|api[_-]?key|credential)", re.IGNORECASE)
_MAX_TAG = 5000  # MLflow's limit on a tag value is 8000 characters; keep the end of long errors


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def safe_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Parameters as MLflow stores them (flat, strings); keys that look like credentials are left out."""
    return {str(k): str(v) for k, v in flatten(params).items() if not _SECRET.search(str(k))}


def _find(mlflow_client: MlflowClient, experiment: str, filters: dict[str, str]) -> list[Any]:
    filter_string = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in filters.items())
    return mlflow_client.search_runs([experiment], filter_string=filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                                     order_by=["attributes.start_time ASC"])


def start_parent_run(experiment: str, key: str, *, kind: str, params: Mapping[str, Any] | None = None,
                     tags: Mapping[str, Any] | None = None, tracking_uri: str | None = None,
                     run_name: str | None = None) -> str:
    """Start (or, with a ``key`` seen before, resume) the parent run of a search or comparison and
    return its id. Resuming closes children the interrupted sweep left RUNNING as KILLED."""
    uri = resolve_tracking_uri(tracking_uri)
    mlflow_client = client(uri)
    exp = experiment_id(uri, experiment)
    found = _find(mlflow_client, exp, {KIND_TAG: kind, SEARCH_TAG: key})
    if found:
        run_id = found[-1].info.run_id
        mlflow_client.update_run(run_id, status="RUNNING")
        closed = close_stale_runs(run_id, tracking_uri=uri)
        log.info("resuming %s run %s (%s); closed %d interrupted child run(s)", kind, key, run_id, len(closed))
    else:
        all_tags = {KIND_TAG: kind, SEARCH_TAG: key, GIT_TAG: git_commit(), **{k: str(v) for k, v in (tags or {}).items()}}
        run_id = mlflow_client.create_run(exp, tags=all_tags, run_name=run_name or key).info.run_id
    if params:
        _log_params(mlflow_client, run_id, params)
    return run_id


def start_search_run(experiment: str, search_id: str, params: Mapping[str, Any] | None = None, *,
                     tags: Mapping[str, Any] | None = None, tracking_uri: str | None = None,
                     run_name: str | None = None) -> str:
    """The parent run of a Tune search: one per ``search_id``, reused when the search resumes."""
    return start_parent_run(experiment, search_id, kind="search", params=params, tags=tags, tracking_uri=tracking_uri,
                            run_name=run_name)


def finish_run(run_id: str, status: str = "FINISHED", *, tracking_uri: str | None = None) -> None:
    """Close a parent run; any child still RUNNING is closed as KILLED."""
    uri = resolve_tracking_uri(tracking_uri)
    close_stale_runs(run_id, tracking_uri=uri)
    client(uri).set_terminated(run_id, status=_status(status))


def close_stale_runs(parent_run_id: str, status: str = "KILLED", *, tracking_uri: str | None = None) -> list[str]:
    """Close the children of ``parent_run_id`` still marked RUNNING (left so by a crash or an
    interrupted sweep); returns their ids."""
    uri = resolve_tracking_uri(tracking_uri)
    mlflow_client = client(uri)
    parent = mlflow_client.get_run(parent_run_id)
    stale = [r for r in _find(mlflow_client, parent.info.experiment_id, {PARENT_TAG: parent_run_id})
             if r.info.status == "RUNNING"]
    for run in stale:
        mlflow_client.set_tag(run.info.run_id, "interrupted", "true")
        mlflow_client.set_terminated(run.info.run_id, status=_status(status))
    return [r.info.run_id for r in stale]


def _status(status: str) -> str:
    name = status.upper()
    if name not in ("FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED"):
        raise ValueError(f"run status must be FINISHED, FAILED or KILLED, got {status!r}")
    RunStatus.from_string(name)
    return name


def _log_params(mlflow_client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    existing = mlflow_client.get_run(run_id).data.params
    new = {k: v for k, v in safe_params(params).items() if k not in existing}
    changed = {k: (existing[k], v) for k, v in safe_params(params).items() if k in existing and existing[k] != v}
    if changed:
        raise ValueError(f"run {run_id} was started with other parameters: "
                         + ", ".join(f"{k}={old!r} (now {v!r})" for k, (old, v) in sorted(changed.items())))
    items = [Param(k, v) for k, v in new.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        mlflow_client.log_batch(run_id, params=items[i:i + 100])


T = TypeVar("T")


def attempt(call: Callable[[], T], pauses: Sequence[float]) -> T:
    """``call()`` against a remote tracking server with short timeouts, tried again after each of
    ``pauses`` seconds while the server is unreachable; the last outage error is raised. Any other
    error is raised at once."""
    for pause in pauses:
        try:
            with quick_requests():
                return call()
        except Exception as exc:
            if not is_outage(exc):
                raise
            time.sleep(pause)
    with quick_requests():
        return call()


class TrialLogger:
    """Records one trial (or one method x seed of a comparison) as a child run.

    Picklable (a URI and run ids); use it as a context manager so that an exception marks the run
    FAILED with its error, or call :meth:`finish` yourself.

    Metrics are queued and sent in the background (:meth:`log` returns at once); what a server
    that is down could not take stays queued and is sent when it answers again; :meth:`finish`
    waits ``flush_timeout_s`` seconds at most for the queue, then gives up what a server still
    down could not take, with a warning (a search's trials keep it in ``metrics.jsonl``, which
    ``surrogate-search sync`` records). Against a remote tracking server, any other call that
    finds the server down or failing is retried after each of ``retry_delays`` seconds, then
    dropped with one warning per outage; while the server stays down such calls are dropped
    without waiting. A run whose closing was dropped stays RUNNING in
    MLflow until ``surrogate-search sync`` (or a resumed search) closes it."""

    retry_delays: ClassVar[tuple[float, ...]] = (0.5, 2.0)
    """Pauses between the attempts of one call while the server does not answer (3 attempts)."""
    retry_after_s: ClassVar[float] = 30.0
    """While the server is down, one call is tried (once) at most this often; the rest are dropped
    (queued metrics are tried again this often)."""
    flush_timeout_s: ClassVar[float] = 30.0
    """How long :meth:`finish` waits for queued metrics to be sent."""
    send_every_s: ClassVar[float] = 2.0
    """Queued metrics are sent at most this often (each send one write to the store, ~15 ms of a
    SQLite store's time here); :meth:`flush` and :meth:`finish` send at once."""

    def __init__(self, tracking_uri: str, run_id: str, parent_run_id: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self._client: MlflowClient | None = None
        self._down_since: float | None = None
        self._last_attempt = 0.0
        self._outage = threading.Lock()  # the metrics' thread reports outages too
        self._sender: MetricSender | None = None
        self.dropped = 0
        """Logging calls (other than metrics, which wait in a queue) dropped because the tracking
        server was down."""

    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id, "parent_run_id": self.parent_run_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = client(self.tracking_uri)
        return self._client

    def _send(self, what: str, call: Callable[[], object]) -> None:
        """Run one logging call; a remote server that is down delays it by seconds, never fails it."""
        if not is_remote(self.tracking_uri):  # a local store that fails is a real error: raise it
            call()
            return
        if self._down_since is not None and time.monotonic() - self._last_attempt < self.retry_after_s:
            self.dropped += 1
            return
        # While the server is known to be down, one attempt; otherwise a few, a little apart.
        try:
            attempt(call, self.retry_delays if self._down_since is None else ())
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.dropped += 1
            self._server_down(f"{what} of run {self.run_id}", exc)
            return
        self._server_up()

    def _server_down(self, what: str, error: BaseException | None) -> None:
        with self._outage:
            self._last_attempt = time.monotonic()
            if self._down_since is not None:
                return
            self._down_since = self._last_attempt
        log.warning("MLflow tracking server %s did not take %s (%s): metrics are kept and sent when it answers "
                    "again, other records of the run are dropped while it stays down; training goes on.",
                    self.tracking_uri, what, error)

    def _server_up(self) -> None:
        with self._outage:
            if self._down_since is None:
                return
            self._down_since = None
        log.warning("MLflow tracking server %s answers again: run %s is recorded again (%d logging call(s) "
                    "dropped while it was down)", self.tracking_uri, self.run_id, self.dropped)

    def _metric_sender(self) -> MetricSender:
        if self._sender is None:
            self._sender = MetricSender(self.client, self.run_id, retry_after_s=self.retry_after_s,
                                        send_every_s=self.send_every_s,
                                        on_down=lambda exc: self._server_down(f"the metrics of run {self.run_id}", exc),
                                        on_up=self._server_up)
        return self._sender

    @property
    def unsent(self) -> int:
        """Metrics logged and not yet recorded (queued while the server is down, or in flight)."""
        return self._sender.pending if self._sender is not None else 0

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Metrics at one evaluation step, sent in the background; NaN and non-numbers are left out."""
        self._metric_sender().put(metric_items(metrics, step))

    def flush(self, timeout: float | None = None) -> int:
        """Send the queued metrics now and wait until they are recorded, the server failed to take
        them, or ``timeout`` (default ``flush_timeout_s``) seconds passed; returns how many are
        still queued (kept, and tried again while this process lives)."""
        if self._sender is None:
            return 0
        return self._sender.flush(self.flush_timeout_s if timeout is None else timeout)

    def close_metrics(self) -> int:
        """Send the queued metrics (one attempt while the server is down, ``flush_timeout_s``
        seconds at most), then stop sending: this logger's metrics end here. Returns how many
        were given up, with a warning; a search's trials keep theirs in ``metrics.jsonl``, from
        which ``surrogate-search sync`` records them."""
        if self._sender is None:
            return 0
        given_up = self._sender.close(self.flush_timeout_s)
        self._sender = None
        if given_up:
            log.warning("run %s: %d metric value(s) not recorded (the tracking server %s is down); "
                        "`surrogate-search sync <search folder>` records a search's trials from their metrics.jsonl",
                        self.run_id, given_up, self.tracking_uri)
        return given_up

    def log_params(self, params: Mapping[str, Any]) -> None:
        # Not ridden out: parameters are logged when a run starts, and a run must not start without them.
        _log_params(self.client, self.run_id, params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._send("tags", lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]))

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self._send(artifact_file, lambda: self.client.log_dict(self.run_id, obj, artifact_file))

    def log_text(self, text: str, artifact_file: str) -> None:
        self._send(artifact_file, lambda: self.client.log_text(self.run_id, text, artifact_file))

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self._send(artifact_file, lambda: self.client.log_figure(self.run_id, figure, artifact_file))

    def log_artifacts(self, local_dir: str, artifact_path: str) -> None:
        """Every file of ``local_dir`` under ``artifact_path`` (sent now: the folder may be temporary)."""
        self._send(artifact_path, lambda: self.client.log_artifacts(self.run_id, local_dir, artifact_path))

    def report_hook(self, objective: str | None = None,
                    then: Callable[[dict[str, float], Callable[[], dict[str, Any]]], None] | None = None
                    ) -> Callable[[dict[str, float], Callable[[], dict[str, Any]]], None]:
        """A ``WorkerContext.report`` that logs each evaluation (``objective`` copies that metric
        under the name ``objective``) and then calls ``then`` (e.g. Ray Train's reporting)."""

        def report(metrics: dict[str, float], state_fn: Callable[[], dict[str, Any]]) -> None:
            row = {k: v for k, v in metrics.items() if k != "step"}
            if objective is not None and objective in metrics:
                row["objective"] = metrics[objective]
            self.log(row, step=int(metrics.get("step", 0)))
            if then is not None:
                then(metrics, state_fn)

        return report

    def finish(self, status: str = "FINISHED", error: BaseException | str | None = None) -> None:
        """Close the run; a failed run keeps its error as the ``error`` tag and ``error.txt``."""
        status = _status(status)
        self.close_metrics()
        if error is not None:
            text = error if isinstance(error, str) else "".join(traceback.format_exception(type(error), error, error.__traceback__))
            summary = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            self._send("the error tag", lambda: self.client.set_tag(self.run_id, ERROR_TAG, summary[-_MAX_TAG:]))
            self.log_text(text, "error.txt")
        self._send(f"the {status} status", lambda: self.client.set_terminated(self.run_id, status=status))

    def __enter__(self) -> TrialLogger:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.finish("FINISHED")
        elif isinstance(exc, KeyboardInterrupt):
            self.finish("KILLED", exc)
        elif isinstance(exc, SystemExit):  # ended from outside: Ray Tune stops a trial with sys.exit(0)
            self.finish("KILLED")
        else:
            self.finish("FAILED", exc)


class NullLogger(TrialLogger):
    """What ranks other than 0 get: every call does nothing, so a trial is one run, not N."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("", "", None)

    def log(self, metrics: Mapping[str, float], step: int) -> None: ...
    def flush(self, timeout: float | None = None) -> int: return 0
    def close_metrics(self) -> int: return 0
    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_dict(self, obj: Any, artifact_file: str) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_figure(self, figure: Any, artifact_file: str) -> None: ...
    def log_artifacts(self, local_dir: str, artifact_path: str) -> None: ...
    def finish(self, status: str = "FINISHED", error: BaseException | str | None = None) -> None: ...


def trial_logger(parent_run_id: str, trial_key: str, params: Mapping[str, Any] | None = None,
                 tags: Mapping[str, Any] | None = None, *, tracking_uri: str | None = None, rank: int = 0,
                 run_name: str | None = None) -> TrialLogger:
    """The child run of ``parent_run_id`` for ``trial_key``: created on first call, reopened
    (status RUNNING again) when the same key comes back after a resume. Ranks other than 0 get a
    :class:`NullLogger`, and so does a trial that starts while a remote tracking server is down
    (with a warning: ``surrogate-search sync`` records it later). Pass ``tracking_uri`` as
    resolved on the driver (Tune moves workers' working directories)."""
    if rank != 0:
        return NullLogger()
    uri = resolve_tracking_uri(tracking_uri)
    if not is_remote(uri):
        return _open_trial(uri, parent_run_id, trial_key, params, tags, run_name)
    try:
        return attempt(lambda: _open_trial(uri, parent_run_id, trial_key, params, tags, run_name),
                       TrialLogger.retry_delays)
    except Exception as exc:
        if not is_outage(exc):
            raise
        error = exc
    log.warning("MLflow tracking server %s is down (%s): trial %s runs unrecorded; `surrogate-search sync` records "
                "it later", uri, error, trial_key)
    return NullLogger()


def _open_trial(uri: str, parent_run_id: str, trial_key: str, params: Mapping[str, Any] | None,
                tags: Mapping[str, Any] | None, run_name: str | None) -> TrialLogger:
    run_id, _ = open_child_run(uri, parent_run_id, trial_key, tags, run_name=run_name, reopen=True)
    trial = TrialLogger(uri, run_id, parent_run_id)
    if params:
        trial.log_params(params)
    return trial


def open_child_run(uri: str, parent_run_id: str, trial_key: str, tags: Mapping[str, Any] | None = None, *,
                   run_name: str | None = None, reopen: bool = True) -> tuple[str, bool]:
    """The id of the child run of ``parent_run_id`` for ``trial_key``, and whether it was created
    now (there was none); ``reopen``: a run found is RUNNING again, tagged ``resumed``, without
    an earlier error."""
    mlflow_client = client(uri)
    parent = mlflow_client.get_run(parent_run_id)
    found = _find(mlflow_client, parent.info.experiment_id, {PARENT_TAG: parent_run_id, TRIAL_TAG: trial_key})
    if found:
        run_id = found[0].info.run_id
        if reopen:
            mlflow_client.update_run(run_id, status="RUNNING")
            mlflow_client.set_tag(run_id, "resumed", "true")
            if ERROR_TAG in found[0].data.tags:  # the error of an earlier attempt no longer describes the run
                mlflow_client.delete_tag(run_id, ERROR_TAG)
        return run_id, False
    all_tags = {PARENT_TAG: parent_run_id, KIND_TAG: "trial", TRIAL_TAG: trial_key, GIT_TAG: git_commit(),
                SEARCH_TAG: parent.data.tags.get(SEARCH_TAG, ""),
                **{k: str(v) for k, v in (tags or {}).items()}}
    return mlflow_client.create_run(parent.info.experiment_id, tags=all_tags,
                                    run_name=run_name or trial_key).info.run_id, True


def start_run(experiment: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None, *,
              kind: str = "posttune", tracking_uri: str | None = None, run_name: str | None = None) -> TrialLogger:
    """A top-level run (one post-tuning started on its own) as a :class:`TrialLogger`."""
    uri = resolve_tracking_uri(tracking_uri)
    mlflow_client = client(uri)
    all_tags = {KIND_TAG: kind, GIT_TAG: git_commit(), **{k: str(v) for k, v in (tags or {}).items()}}
    run_id = mlflow_client.create_run(experiment_id(uri, experiment), tags=all_tags, run_name=run_name).info.run_id
    run = TrialLogger(uri, run_id)
    if params:
        run.log_params(params)
    return run


def metric_items(metrics: Mapping[str, Any], step: int) -> list[Metric]:
    """``metrics`` at ``step`` as MLflow metrics: numbers only (not booleans), finite only."""
    timestamp = int(time.time() * 1000)
    return [Metric(k, float(v), timestamp, int(step)) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
