"""What a search leaves behind and the facts its parts share: the folder layout, the name of a
trial's run, the keys of its reports, and :class:`SearchOutcome` with ``best_config.yaml``.

One search lives in one folder, ``<storage>/<space name>/``, on a disk or in a bucket (see
:mod:`.storage`)::

    optuna.db          the Optuna study (TPE; every trial's parameters, intermediate values, state),
                       unless it lives in a database server (``--study-storage postgresql://...``,
                       which a bucket needs: ``optuna_storage`` then says where, password hidden)
    tune_<n>/          Ray Tune's experiment folder of the n-th (re)start of the search (and the
                       Tune checkpoints of inline trials)
    train/trial_0003/  the run of Optuna trial 3: metrics.jsonl, mlflow_run.json, and a Ray Train
                       run's checkpoints
    best_config.yaml   the best trial's post-tuning settings, for ``surrogate-search compare --from-search``
    mlflow_search_id   the key of the search's MLflow parent run (with tracking on)

Imports no Ray, Optuna or MLflow: the search's MLflow recording and the CLI read these facts too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from surrogate_search.search.space import SearchSpec
from surrogate_search.search.storage import Location, LocationError, check_bucket, first_line

STUDY_DB = "optuna.db"
STUDY_STORAGE_FILE = "optuna_storage"
"""In a search's folder when its study lives in a database: the ``--study-storage`` URL, password hidden."""
BEST_CONFIG = "best_config.yaml"
TRAIN_DIR = "train"
RUN_KEY = "__train_run"
"""Config key through which the searcher tells a trial the name of its Ray Train run."""
TRIAL_KEY = "__optuna_trial"
"""Config key through which the searcher tells a trial its Optuna trial number."""
MLFLOW_RUN_KEY = "mlflow_run_id"
"""Report key through which a tracked trial tells the searcher its MLflow run id, and the name of
the Optuna user attribute that keeps it (the trial's MLflow run carries the tag ``optuna_trial``)."""
FINAL_KEY = "final"
"""1.0 in the last row a post-tuning run reports; a trial whose last row lacks it was stopped early."""
DIVERGED_KEY = "diverged"
"""In the last row of a post-tuning run that diverged: why (the error's message, a string). The
trial's Optuna user attribute and its MLflow run's tag of the same name keep it; the trial is PRUNED."""


class StorageError(ValueError):
    """A search's folder cannot be used as asked: nothing there to resume, or it cannot be written."""


def storage_location(storage: str | Path | Location) -> Location:
    """Where ``--storage`` points: a folder (made absolute), a ``file://`` URI (its folder), or a
    bucket URI that Ray accepts (``s3://``, ``gs://``; kept unchanged for Ray). Touches nothing:
    resolving a bucket's filesystem may ask the network (S3 looks up the bucket's region), so
    :func:`check_bucket_search` does it, under a time limit."""
    return Location.of(storage)


def check_bucket_search(search_dir: Location, resume: bool, study_storage: str | None) -> None:
    """Fail before any work when the search in a bucket cannot run: without ``--study-storage``
    (Optuna's SQLite file cannot live in a bucket), a bucket that does not answer, does not exist or
    cannot be written, or a new search where one has run already. Writes nothing that stays."""
    if study_storage is None:
        raise StorageError(f"--storage {search_dir.parent}: a bucket cannot hold the Optuna study (a SQLite file); "
                           f"pass --study-storage with a database every node reaches, e.g. "
                           f"--study-storage postgresql://USER@db-host/optuna, or sqlite:///{Path.cwd()}/optuna.db "
                           f"on one machine")
    storage = search_dir.parent
    try:
        check_bucket(storage)
        ran_here = not resume and (storage / search_dir.name / TRAIN_DIR).exists()  # the filesystem just checked
    except LocationError as exc:
        raise StorageError(str(exc)) from None
    except OSError as exc:
        raise StorageError(f"--storage {search_dir.parent}: cannot use it ({first_line(exc)})") from None
    if ran_here:
        raise FileExistsError(f"{search_dir} already holds a search: pass --resume to continue it, "
                              f"or --storage to start a new one elsewhere")


def check_search_dir(search_dir: Path, resume: bool, study_in_folder: bool = True) -> None:
    """Fail before any work, creating nothing, when the search in ``search_dir`` cannot run: ``resume``
    with no search there, a search there already without ``resume`` (``FileExistsError``), or a
    folder that cannot be created or written. With the study in a database server instead
    (``study_in_folder=False``), whether there is a search to resume is the database's to say."""
    storage = search_dir.parent
    if not study_in_folder:
        pass
    elif resume and not (search_dir / STUDY_DB).exists():
        found = sorted(p.parent.name for p in storage.glob(f"*/{STUDY_DB}")) if storage.is_dir() else []
        raise StorageError(f"--resume: there is no search to resume at {search_dir} (no {STUDY_DB}); searches in "
                           f"{storage}: {found or 'none'}. Pass the --storage it ran with, or leave out --resume "
                           f"to start it")
    if not resume and (search_dir / STUDY_DB).exists():
        raise FileExistsError(f"{search_dir} already holds a search: pass --resume to continue it, "
                              f"or --storage to start a new one elsewhere")
    existing = next(p for p in (search_dir, *search_dir.parents) if p.exists())
    if not existing.is_dir():
        raise StorageError(f"cannot create the search folder {search_dir}: {existing} is a file, not a folder; "
                           f"pass another --storage")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(f"cannot write the search folder {search_dir}: {existing} is not writable; "
                           f"pass another --storage")


def train_run_name(trial: Any) -> str:
    """The Ray Train run (and MLflow child run) of an Optuna trial: ``trial_0003``, or the name a
    re-queued trial inherited from the interrupted one."""
    return trial.user_attrs.get("train_run") or f"trial_{trial.number:04d}"


@dataclass
class SearchOutcome:
    """What a finished search found."""

    search_dir: Location
    metric: str
    mode: str
    best_value: float | None
    best_params: dict[str, Any]
    best_config: dict[str, Any]
    """Full post-tuning settings of the best trial (what ``best_config.yaml`` holds)."""
    best_run: str | None
    states: dict[str, int] = field(default_factory=dict)
    """Optuna trial states over the whole study: ``{"COMPLETE": 3, "PRUNED": 1}``."""
    requeued: list[int] = field(default_factory=list)
    """Optuna trial numbers found RUNNING on resume, marked FAILED and re-queued."""
    mlflow: dict[str, str] = field(default_factory=dict)
    """Where the search was recorded (``experiment``, ``run_id`` of its parent run, ``tracking_uri``)."""
    diverged: dict[int, str] = field(default_factory=dict)
    """Optuna trial number -> why it diverged, for the trials that diverged (recorded PRUNED)."""

    def summary(self) -> str:
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.states.items()))
        if self.diverged:
            states += f" ({len(self.diverged)} of them diverged: trial {', '.join(map(str, sorted(self.diverged)))})"
        if self.best_value is None:
            return f"search {self.search_dir}: no trial finished ({states})"
        params = "\n".join(f"  {k}: {v!r}" for k, v in sorted(self.best_params.items()))
        return (f"search {self.search_dir}: {states}\n"
                f"best trial {self.best_run}: {self.metric} = {self.best_value:.4f} ({self.mode})\n{params}\n"
                f"best configuration: {self.search_dir / BEST_CONFIG}")


def summarize(spec: SearchSpec, study: Any, search_dir: Location) -> SearchOutcome:
    """Best trial of the study; writes ``best_config.yaml`` when there is one."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    diverged = {t.number: str(t.user_attrs[DIVERGED_KEY]) for t in trials if DIVERGED_KEY in t.user_attrs}
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return SearchOutcome(search_dir, spec.metric, spec.mode, None, {}, {}, None, states, diverged=diverged)
    best = (max if spec.mode == "max" else min)(complete, key=lambda t: t.value)
    config = spec.trial_config(best.params).to_dict()
    run = best.user_attrs.get("train_run")
    document = {"search": spec.name, "space": str(spec.path), "task": {"name": spec.task, "options": spec.task_options,
                                                                        "seed": spec.task_seed},
                "checkpoint": spec.checkpoint, "objective": {"metric": spec.metric, "mode": spec.mode,
                                                             "value": float(best.value)},
                "trial": best.number, "train_run": run, "params": dict(best.params), "posttune": config}
    (search_dir / BEST_CONFIG).write_text(
        f"# Best trial of {spec.path}. Compare it with the baselines:\n"
        f"#   surrogate-search compare --from-search {search_dir / BEST_CONFIG}\n"
        + yaml.safe_dump(document, sort_keys=False))
    return SearchOutcome(search_dir, spec.metric, spec.mode, float(best.value), dict(best.params), config, run, states,
                         diverged=diverged)


def load_best_config(path: str | Path | Location) -> dict[str, Any]:
    """Read a search's ``best_config.yaml`` (or the search folder holding it), on a disk or in a bucket."""
    path = storage_location(path)
    if path.is_dir():
        path = path / BEST_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no {BEST_CONFIG} at {path}: has the search finished a trial?")
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict) or "posttune" not in document or "task" not in document:
        raise ValueError(f"{path}: not a search's {BEST_CONFIG} (expected 'task' and 'posttune' sections)")
    return document
