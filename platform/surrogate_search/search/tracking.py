"""A Ray Tune search recorded in MLflow: one parent run per search folder, one child run per trial.

Ray's own ``MLflowLoggerCallback`` makes flat runs, forgets them on restart and resolves a relative
store inside each trial's directory. Here instead:

* the parent run is keyed by an id kept in the search's folder, so ``--resume`` reopens it (and
  closes children the interrupted search left RUNNING as KILLED);
* a child run is keyed by its Ray Train run name (``trial_0003``), which a re-queued trial keeps,
  so a restarted trial continues its run instead of starting a second one;
* the tracking URI is resolved to an absolute one on the driver before Tune moves directories;
* metrics come from Ray Train's controller (:class:`ReportToMlflow`), which sees rank 0's reports
  only, so a trial with N workers is one run;
* one leads to the other: each trial's run carries the tag ``optuna_trial`` (its Optuna trial
  number), each Optuna trial the user attribute ``mlflow_run_id``;
* the parent run holds pictures of the search (``search_plots/*.png``, see :mod:`.plots`), redrawn
  by :class:`RefreshSearchPlots` as trials end and by :meth:`SearchTracking.finish` at the end;
* a tracking server that goes away costs no trial: metrics are sent in the background and kept
  while it is down, and what it missed is recorded from the search folder when the search ends or
  resumes (see :mod:`.sync`); a server still down then is named in a warning, not raised.

Example (what :func:`surrogate_search.search.tune.run_search` does with ``tracking_uri=...``)::

    tracking = SearchTracking.start(spec, task, search_dir, uri)
    with tracking.trial("trial_0003", config, folder=train_dir / "trial_0003") as (run, callback):
        run_posttune(config, checkpoint, ..., callbacks=[callback])
    tracking.finish(study, outcome)
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.train import UserCallback
from ray.tune import Callback

from surrogate_search.config import PostTuneConfig
from surrogate_search.search.outcome import BEST_CONFIG, DIVERGED_KEY, SearchOutcome, load_best_config
from surrogate_search.search.plots import PLOT_FOLDER, close_figures, search_figures
from surrogate_search.search.storage import Location
from surrogate_search.search.sync import (OPTUNA_TRIAL_TAG, TrialRecord, TrialSync, load_search_study, report_metrics,
                                          sync_search, trial_records)
from surrogate_search.tracking.recorder import method_tags, task_experiment_name
from surrogate_search.tracking.runs import TrialLogger, finish_run, safe_params, start_search_run, trial_logger
from surrogate_search.tracking.store import is_outage


log = logging.getLogger(__name__)

SEARCH_ID_FILE = "mlflow_search_id"


def search_key(search_dir: str | Path | Location) -> str:
    """The key of a search's parent run, kept in the search folder: a resume finds the same run,
    and a new search in a folder that was deleted meanwhile starts a new one."""
    file = Location.of(search_dir) / SEARCH_ID_FILE
    if file.is_file():
        return file.read_text().strip()
    key = f"{Location.of(search_dir)}#{uuid.uuid4().hex[:8]}"  # a bucket URI's password hidden
    file.write_text(key + "\n")
    return key


class ReportToMlflow(UserCallback):
    """Runs in the Ray Train controller: every report of rank 0 becomes one step of the trial's run
    (``objective`` repeats the search's metric). A run that diverged gets the tag ``diverged`` (why).
    Sending is in the background; the final report waits for it (seconds at most), since the
    controller ends with the run."""

    def __init__(self, run: TrialLogger, objective: str) -> None:
        self.run = run
        self.objective = objective

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        step, row = report_metrics(metrics[0], self.objective)
        if row.get(DIVERGED_KEY):
            self.run.set_tags({DIVERGED_KEY: row.pop(DIVERGED_KEY)})
        self.run.log(row, step=step)
        if row.get("final"):  # the run's last report: its controller ends next
            self.run.close_metrics()


@dataclass
class SearchTracking:
    """Where a search records itself; picklable (strings only), so Tune ships it to every trial."""

    tracking_uri: str
    parent_run_id: str
    experiment: str
    objective: str
    task_tags: dict[str, str]
    """``task`` and ``metric``, which every trial's run carries."""

    @classmethod
    def start(cls, spec: Any, task: Any, search_dir: Location, tracking_uri: str, experiment: str | None = None,
              study_storage: str | None = None) -> SearchTracking:
        experiment = experiment or task_experiment_name(task)
        params = {"space": str(spec.path), "objective": spec.metric, "mode": spec.mode}
        # The budget may grow when a search is resumed: tags, which may change, not params, which may not.
        budget = {"budget.trials": spec.budget.trials, "budget.workers_per_trial": spec.budget.workers_per_trial,
                  "budget.scheduler": spec.budget.scheduler.type}
        task_tags = {"task": task.name, "metric": task.metric_name}
        parent = start_search_run(experiment, search_key(search_dir), params, tracking_uri=tracking_uri,
                                  tags={**task_tags, "space": spec.name},
                                  run_name=f"search {spec.name}")
        TrialLogger(tracking_uri, parent).set_tags(budget)
        tracking = cls(tracking_uri, parent, experiment, spec.metric, task_tags)
        tracking.sync(search_dir, study_storage)  # a resumed search: what an outage kept from its run
        return tracking

    @contextlib.contextmanager
    def trial(self, run_name: str, config: PostTuneConfig, optuna_trial: int | None = None,
              folder: Location | None = None) -> Iterator[tuple[TrialLogger, ReportToMlflow]]:
        """The child run of one trial, FINISHED when the block returns, FAILED with the error when
        it raises; plus the Ray Train callback that fills it. ``optuna_trial`` becomes its tag
        ``optuna_trial`` (a re-queued trial's run then names the trial that runs it now).
        ``folder`` (the trial's run folder) gets the :class:`~.sync.TrialRecord` from which
        :meth:`sync` records the trial after an outage."""
        tags = {**self.task_tags, **method_tags(config)}
        with trial_logger(self.parent_run_id, run_name, config.params(), tags, tracking_uri=self.tracking_uri,
                          run_name=run_name) as run:
            if folder is not None:
                TrialRecord(self.tracking_uri, self.parent_run_id, run_name, self.objective, run.run_id or None,
                            safe_params(config.params()), tags).write(folder)
            if optuna_trial is not None:
                run.set_tags({OPTUNA_TRIAL_TAG: optuna_trial})
            yield run, ReportToMlflow(run, self.objective)

    def log_plots(self, study: Any) -> list[str]:
        """Draw the search's plots from ``study`` onto the parent run (``search_plots/<name>.png``,
        replacing the previous drawing); returns their artifact paths."""
        figures = search_figures(study)
        parent = TrialLogger(self.tracking_uri, self.parent_run_id)
        try:
            for name, figure in figures.items():
                parent.log_figure(figure, f"{PLOT_FOLDER}/{name}.png")
        finally:
            close_figures(figures)
        return [f"{PLOT_FOLDER}/{name}.png" for name in figures]

    def plot_refresher(self, study_name: str, storage_url: str, min_interval_s: float = 30.0) -> RefreshSearchPlots:
        """The Tune callback that redraws the plots as trials end (see :class:`RefreshSearchPlots`)."""
        return RefreshSearchPlots(self, study_name, storage_url, min_interval_s)

    def sync(self, search_dir: Location, study_storage: str | None = None) -> bool:
        """Record what the trials in ``search_dir`` left that MLflow lacks (see :mod:`.sync`);
        False, with a warning, when the server is down."""
        try:
            sync_search(search_dir, tracking_uri=self.tracking_uri, study_storage=study_storage)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._warn_down(exc, search_dir)
            return False
        return True

    def finish(self, study: Any, outcome: SearchOutcome, study_storage: str | None = None) -> None:
        """Record what the trials' runs missed, close each after its Optuna state (a PRUNED trial's
        run is KILLED: ASHA ended it), put the best trial and ``best_config.yaml`` on the parent,
        and close it. With the server down, a warning says how to finish this later."""
        if not self.sync(outcome.search_dir, study_storage):
            return
        try:
            self.finish_parent(study, outcome.search_dir, outcome.best_run, outcome.best_value)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._warn_down(exc, outcome.search_dir)

    def finish_parent(self, study: Any, search_dir: Location, best_run: str | None, best_value: float | None) -> None:
        """Put the best trial (its run's id, ``best_objective``, ``best_config.yaml``) and the plots
        on the search's parent run, and close it FINISHED."""
        records = {r.trial_key: r for _, r in trial_records(search_dir)}
        best = records.get(best_run) if best_run else None
        if best is not None and best.run_id:
            parent = TrialLogger(self.tracking_uri, self.parent_run_id)
            parent.log({"best_objective": best_value}, step=0)
            parent.close_metrics()
            parent.set_tags({"best_trial_run_id": best.run_id, "best_trial": best_run})
            with tempfile.TemporaryDirectory() as folder:  # the file may be in a bucket: MLflow logs local files
                copy = Path(folder) / BEST_CONFIG
                copy.write_text((search_dir / BEST_CONFIG).read_text(), encoding="utf-8")
                parent.client.log_artifact(self.parent_run_id, str(copy))
        drawn = self.log_plots(study)
        log.info("search plots on MLflow run %s: %s", self.parent_run_id, ", ".join(drawn) or "none yet")
        finish_run(self.parent_run_id, tracking_uri=self.tracking_uri)

    def _warn_down(self, error: BaseException, search_dir: Location) -> None:
        log.warning("MLflow tracking server %s is down (%s): the search's runs miss what its trials reported during "
                    "the outage. Once the server is back, `surrogate-search sync %s` records it; the search's "
                    "command with --resume also closes the search's run", self.tracking_uri, error, search_dir)


def sync_and_close(search_dir: str | Path | Location, *, tracking_uri: str | None = None,
                   study_storage: str | None = None) -> tuple[list[TrialSync], str | None]:
    """What ``surrogate-search sync`` does: :func:`.sync.sync_search`, then, when the search is over
    (no trial of its study RUNNING) and its parent run still RUNNING (the server was down as the
    search ended), what the search's end would have done to that run: best trial, plots, FINISHED.
    Returns the trials synced and the parent run's new status: None when it was left as it was
    (closed already; or a search running or interrupted, which ``--resume`` continues; or no study
    found, see :func:`.sync.study_storage_of`)."""
    from surrogate_search.tracking.store import client

    search_dir = Location.of(search_dir)
    done = sync_search(search_dir, tracking_uri=tracking_uri, study_storage=study_storage)
    records = [record for _, record in trial_records(search_dir)]
    study = load_search_study(search_dir, study_storage) if records else None
    if study is None or any(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False)):
        return done, None
    uri, parent_run_id = tracking_uri or records[0].tracking_uri, records[0].parent_run_id
    mlflow_client = client(uri)
    parent = mlflow_client.get_run(parent_run_id)
    if parent.info.status != "RUNNING":
        return done, None
    best_run = best_value = None
    if (search_dir / BEST_CONFIG).is_file():
        best = load_best_config(search_dir)
        best_run, best_value = best.get("train_run"), best["objective"]["value"]
    experiment = mlflow_client.get_experiment(parent.info.experiment_id).name
    SearchTracking(uri, parent_run_id, experiment, records[0].objective, {}).finish_parent(study, search_dir, best_run,
                                                                                           best_value)
    log.info("MLflow search run %s closed: FINISHED", parent_run_id)
    return done, "FINISHED"


class RefreshSearchPlots(Callback):
    """A Ray Tune callback, run on the driver: when a trial ends (complete, stopped by ASHA or
    failed), redraw the search's plots on its MLflow parent run, at most every ``min_interval_s``
    seconds (drawing them costs the driver about a second). Picklable (strings), as Tune needs.
    A drawing that fails is logged and never stops the search."""

    def __init__(self, tracking: SearchTracking, study_name: str, storage_url: str, min_interval_s: float = 30.0) -> None:
        self.tracking = tracking
        self.study_name = study_name
        self.storage_url = storage_url
        self.min_interval_s = min_interval_s
        self._last = -math.inf

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.refresh()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.refresh()

    def refresh(self) -> list[str]:
        if time.monotonic() - self._last < self.min_interval_s:
            return []
        import optuna

        try:
            return self.tracking.log_plots(optuna.load_study(study_name=self.study_name, storage=self.storage_url))
        except Exception as exc:  # a picture is never worth a search
            log.warning("search plots not redrawn on MLflow run %s: %s", self.tracking.parent_run_id, exc)
            return []
        finally:
            self._last = time.monotonic()
