"""The search's memory: its Optuna study (open, resume) and the Optuna searcher that Tune drives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from surrogate_search.search.outcome import (DIVERGED_KEY, FINAL_KEY, MLFLOW_RUN_KEY, RUN_KEY, STUDY_DB, TRIAL_KEY,
                                             StorageError, train_run_name)
from surrogate_search.search.space import SearchSpec


def shown_url(url: str) -> str:
    """A storage URL fit for a log line or an error: its password, if any, hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL: nothing in it to hide
        return url


def study_url(search_dir: Path, study_storage: str | None = None) -> str:
    """Where the search's Optuna study lives: ``study_storage`` (a database URL Optuna's RDB storage
    takes, e.g. ``postgresql://user@db-host/optuna``, shared by a cluster's nodes) or, by default,
    the SQLite file in the search's folder."""
    return study_storage or f"sqlite:///{(Path(search_dir) / STUDY_DB).resolve()}"


def check_study_storage(name: str, study_storage: str, resume: bool) -> None:
    """Before any work, for a study in a database server: it can be reached, and it holds the study
    ``name`` exactly when ``resume`` asks for it. Raises :class:`StorageError` (or ``FileExistsError``
    for a study that is there already), naming the URL without its password."""
    import optuna

    try:
        names = optuna.get_all_study_names(storage=study_storage)
    except Exception as exc:  # sqlalchemy's errors: unknown driver, refused connection, bad credentials
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ImportError) and exc.__cause__ is not None:  # Optuna's note hides which driver
            reason = f"{exc.__cause__}; for PostgreSQL: pip install 'psycopg[binary]'"
        raise StorageError(f"--study-storage {shown_url(study_storage)}: cannot open it ({reason})") from None
    if resume and name not in names:
        raise StorageError(f"--resume: {shown_url(study_storage)} holds no study {name!r} (studies there: "
                           f"{sorted(names) or 'none'}); leave out --resume to start it")
    if not resume and name in names:
        raise FileExistsError(f"{shown_url(study_storage)} already holds a study {name!r}: pass --resume to "
                              f"continue it, or use another --study-storage database")


def open_study(spec: SearchSpec, search_dir: Path, study_storage: str | None = None) -> Any:
    """The search's Optuna study (created, or loaded to resume) and its RDB storage (see :func:`study_url`)."""
    import optuna

    storage = optuna.storages.RDBStorage(study_url(search_dir, study_storage))
    return optuna.create_study(storage=storage, study_name=spec.name, load_if_exists=True,
                               direction="maximize" if spec.mode == "max" else "minimize"), storage


def requeue_interrupted(study: Any) -> list[int]:
    """Trials left RUNNING by an interrupted search: mark them FAILED and queue their parameters
    again, under the same Ray Train run name, so they continue from their last checkpoint."""
    from optuna.trial import TrialState

    requeued = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"train_run": train_run_name(trial)})
        requeued.append(trial.number)
    return requeued


def searcher_class() -> type:
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class PrunedAwareOptunaSearch(OptunaSearch):
        """OptunaSearch that (1) names each trial's Ray Train run after its Optuna trial (kept when the
        trial is re-queued on resume) and tells the trial its Optuna number, (2) keeps the MLflow run id
        that a tracked trial reports as the Optuna user attribute ``mlflow_run_id``, and (3) tells
        Optuna PRUNED for trials stopped by the scheduler and for trials that diverged (keeping why as
        the user attribute ``diverged``): stock OptunaSearch tells COMPLETE with the last, early value,
        which misleads TPE, and a diverged trial told FAIL would be ignored by TPE, which would keep
        sampling where runs diverge."""

        def suggest(self, trial_id: str) -> dict | None:
            params = super().suggest(trial_id)
            if params is None:
                return None
            ot_trial = self._ot_trials[trial_id]
            run = train_run_name(ot_trial)
            ot_trial.set_user_attr("train_run", run)
            return {**params, RUN_KEY: run, TRIAL_KEY: ot_trial.number}

        def _remember_mlflow_run(self, trial_id: str, result: dict | None) -> None:
            # Only while the trial runs: Optuna refuses user attributes on a finished trial.
            run_id = (result or {}).get(MLFLOW_RUN_KEY)
            ot_trial = self._ot_trials.get(trial_id)
            if run_id and ot_trial is not None and trial_id not in self._completed_trials \
                    and ot_trial.user_attrs.get(MLFLOW_RUN_KEY) != run_id:
                ot_trial.set_user_attr(MLFLOW_RUN_KEY, str(run_id))

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            self._remember_mlflow_run(trial_id, result)
            super().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            self._remember_mlflow_run(trial_id, result)
            stopped_early = (not error and result is not None and trial_id in self._ot_trials
                             and trial_id not in self._completed_trials and not result.get(FINAL_KEY))
            if not stopped_early:
                return super().on_trial_complete(trial_id, result=result, error=error)
            ot_trial = self._ot_trials[trial_id]
            if result.get(DIVERGED_KEY):
                ot_trial.set_user_attr(DIVERGED_KEY, str(result[DIVERGED_KEY]))
            # The result that made the scheduler stop the trial never reaches on_trial_result;
            # report it, so that TPE ranks the pruned trial by how far it got and how well.
            if result.get(self.metric) is not None:
                ot_trial.report(result[self.metric], int(result.get("training_iteration", 0)))
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)

    return PrunedAwareOptunaSearch

