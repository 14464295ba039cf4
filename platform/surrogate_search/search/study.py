"""The search's memory: its Optuna study (open, resume) and the Optuna searcher that Tune drives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from surrogate_search.search.outcome import DIVERGED_KEY, FINAL_KEY, MLFLOW_RUN_KEY, RUN_KEY, STUDY_DB, TRIAL_KEY, train_run_name
from surrogate_search.search.space import SearchSpec


def open_study(spec: SearchSpec, search_dir: Path) -> Any:
    """The search's Optuna study (created, or loaded to resume) and its RDB storage."""
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{(search_dir / STUDY_DB).resolve()}")
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

