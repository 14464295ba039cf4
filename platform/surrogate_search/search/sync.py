"""A search's trials brought up to date in MLflow from what they left in the search folder.

Every tracked trial writes ``train/<trial>/mlflow_run.json`` (:class:`TrialRecord`: the server,
the parent run, the trial's run if it could be made, its parameters and tags) when it starts, and
every report to ``train/<trial>/metrics.jsonl``. A tracking server that was down for part of a
search missed some of it: reports, the closing of runs, whole trials that started meanwhile.
:func:`sync_search` makes MLflow hold what the folder holds: the run of each trial (created if
the trial started while the server was down), each report row exactly once (see
:mod:`surrogate_search.tracking.replay`; running it twice sends nothing the second time), and the
status of the run after the trial's Optuna state (COMPLETE: FINISHED, PRUNED: KILLED, FAIL: FAILED),
and the ``diverged`` tag (why) of a trial that diverged. The folder may be in a bucket (see
:mod:`.storage`); the study is the folder's ``optuna.db``, or the database it ran with
(``--study-storage``, or the URL kept in the folder when it holds no password).

It runs at the end of a tracked search, when one resumes, and as ``surrogate-search sync <search
folder>`` (when the search is not running: a trial still running sends its own reports).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from surrogate_search.search.outcome import DIVERGED_KEY, STUDY_DB, STUDY_STORAGE_FILE, TRAIN_DIR, train_run_name
from surrogate_search.search.storage import Location
from surrogate_search.search.train import read_metrics_log

log = logging.getLogger(__name__)

TRIAL_RECORD = "mlflow_run.json"
OPTUNA_TRIAL_TAG = "optuna_trial"
OPTUNA_STATE_TAG = "optuna_state"
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
"""The status of a trial's run once its Optuna trial is over (ASHA ends a PRUNED one)."""


def report_metrics(row: Mapping[str, Any], objective: str) -> tuple[int, dict[str, Any]]:
    """The step and the MLflow metrics of one report (a row of ``metrics.jsonl``): everything but
    ``step``, with ``objective`` repeating the search's metric. Non-numbers are left out when logged."""
    metrics = {k: v for k, v in row.items() if k != "step"}
    if objective in metrics:
        metrics["objective"] = metrics[objective]
    return int(row.get("step", 0)), metrics


@dataclass
class TrialRecord:
    """Where a trial is recorded: enough to find, or make, its run after the fact."""

    tracking_uri: str
    parent_run_id: str
    trial_key: str
    objective: str
    run_id: str | None = None
    """None when the server was down as the trial started."""
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def write(self, folder: str | Path | Location) -> None:
        (Location.of(folder) / TRIAL_RECORD).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def read(cls, folder: str | Path | Location) -> TrialRecord:
        return cls(**json.loads((Location.of(folder) / TRIAL_RECORD).read_text()))


def trial_records(search_dir: str | Path | Location) -> list[tuple[Location, TrialRecord]]:
    """Each tracked trial's folder and record, by trial folder name (one listing of ``train/``)."""
    train = Location.of(search_dir) / TRAIN_DIR
    return [(file.parent, TrialRecord.read(file.parent)) for file in train.glob(f"*/{TRIAL_RECORD}")]


@dataclass
class TrialSync:
    """What :func:`sync_search` did for one trial."""

    trial_key: str
    run_id: str
    created: bool = False
    """The run was made now: the trial started while the server was down."""
    rows_sent: int = 0
    """Metric values sent now (each missing from the run's history)."""
    status: str | None = None
    """The status set now, if it changed."""


def study_storage_of(search_dir: str | Path | Location, study_storage: str | None = None) -> str | None:
    """The study's URL: ``study_storage``, else the folder's ``optuna.db``, else the URL kept in the
    folder (when it holds no hidden password); None when there is none to be found."""
    if study_storage:
        return study_storage
    search_dir = Location.of(search_dir)
    if search_dir.is_local and (search_dir.local / STUDY_DB).exists():
        return f"sqlite:///{search_dir.local / STUDY_DB}"
    kept = search_dir / STUDY_STORAGE_FILE
    url = kept.read_text().strip() if kept.is_file() else ""
    return url if url and "***" not in url else None


def load_search_study(search_dir: str | Path | Location, study_storage: str | None = None) -> Any:
    """The search's Optuna study (named after its folder), or None when it cannot be found."""
    import optuna

    storage = study_storage_of(search_dir, study_storage)
    if storage is None:
        return None
    names = optuna.study.get_all_study_names(storage)
    if not names:
        return None
    name = Location.of(search_dir).name
    return optuna.load_study(study_name=name if name in names else names[0], storage=storage)


def trial_states(search_dir: str | Path | Location, study_storage: str | None = None) -> dict[str, tuple[str, int]]:
    """The Optuna state and number of the latest trial of each run name (a re-queued trial keeps
    the run name of the interrupted one)."""
    study = load_search_study(search_dir, study_storage)
    if study is None:
        return {}
    states: dict[str, tuple[str, int]] = {}
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        states[train_run_name(trial)] = (trial.state.name, trial.number)
    return states


def sync_search(search_dir: str | Path | Location, *, tracking_uri: str | None = None,
                study_storage: str | None = None) -> list[TrialSync]:
    """Bring every tracked trial of the search in ``search_dir`` (a folder or a bucket URI) up to
    date in MLflow (see the module's docstring); ``tracking_uri`` overrides the server the trials
    were recorded on (the same store, moved); ``study_storage``: the study's database, when it is
    not the folder's. Raises the tracking store's error if it cannot be reached."""
    states = trial_states(search_dir, study_storage)
    done = []
    for folder, record in trial_records(search_dir):
        if tracking_uri:
            record.tracking_uri = tracking_uri
        done.append(sync_trial(record, folder, states.get(record.trial_key)))
    return done


def sync_trial(record: TrialRecord, folder: str | Path | Location, state: tuple[str, int] | None = None) -> TrialSync:
    """Bring one trial's run up to date: made if missing, every row of ``folder``'s
    ``metrics.jsonl`` exactly once, its status after ``state`` (Optuna's state name and number)."""
    from surrogate_search.tracking.replay import replay_metrics
    from surrogate_search.tracking.runs import TrialLogger, metric_items, open_child_run
    from surrogate_search.tracking.store import client

    mlflow_client = client(record.tracking_uri)
    run_id = record.run_id
    created = False
    if run_id is None:  # or found by its trial key, if a later start of the trial (a resume) made it
        run_id, created = open_child_run(record.tracking_uri, record.parent_run_id, record.trial_key, record.tags,
                                         reopen=False)
        if record.params:
            TrialLogger(record.tracking_uri, run_id).log_params(record.params)
        record.run_id = run_id
        record.write(folder)
    metrics = []
    diverged = None
    for row in read_metrics_log(folder):
        step, values = report_metrics(row, record.objective)
        metrics += metric_items(values, step)
        diverged = row.get(DIVERGED_KEY) or diverged
    sent = replay_metrics(mlflow_client, run_id, metrics)
    result = TrialSync(record.trial_key, run_id, created=created, rows_sent=sent)
    run = mlflow_client.get_run(run_id) if diverged or state is not None else None
    if diverged and run.data.tags.get(DIVERGED_KEY) != str(diverged):  # its report never reached the server
        mlflow_client.set_tag(run_id, DIVERGED_KEY, str(diverged))
    if state is not None:
        name, number = state
        if run.data.tags.get(OPTUNA_STATE_TAG) != name or run.data.tags.get(OPTUNA_TRIAL_TAG) != str(number):
            mlflow_client.set_tag(run_id, OPTUNA_STATE_TAG, name)
            mlflow_client.set_tag(run_id, OPTUNA_TRIAL_TAG, str(number))
        status = RUN_STATUS.get(name)
        # A COMPLETE trial is FINISHED whatever an outage left (RUNNING, or KILLED when its search
        # resumed). A PRUNED one is KILLED whether its run was left RUNNING or marked FAILED by the
        # teardown of the scheduler's stop (which races with the trial's last report); a failed one
        # only closes a run left RUNNING.
        if status is not None and run.info.status != status and (name in ("COMPLETE", "PRUNED")
                                                                 or run.info.status == "RUNNING"):
            if "interrupted" in run.data.tags:
                mlflow_client.delete_tag(run_id, "interrupted")
            mlflow_client.set_terminated(run_id, status=status)
            result.status = status
    if result.created or result.rows_sent or result.status:
        log.info("MLflow run %s of trial %s synced: %s%d metric value(s) sent%s", run_id, record.trial_key,
                 "made now, " if created else "", sent, f", status {result.status}" if result.status else "")
    return result

