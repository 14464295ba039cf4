"""A search recorded in MLflow: the key of its parent run (stable across resumes, new for a new search) and
the plots redrawn on that run as trials end."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from surrogate_search.search.tracking import SEARCH_ID_FILE, search_key


def test_resume_finds_the_same_parent_and_a_new_search_in_a_recreated_folder_does_not(tmp_path: Path) -> None:
    folder = tmp_path / "text_edit_distance"
    folder.mkdir()
    first = search_key(folder)
    assert search_key(folder) == first  # what --resume sees
    assert (folder / SEARCH_ID_FILE).read_text().strip() == first and str(folder.resolve()) in first

    shutil.rmtree(folder)  # the user deletes the search and starts over with other settings
    folder.mkdir()
    assert search_key(folder) != first


def test_search_plots_are_redrawn_as_trials_end_at_most_every_interval(tmp_path: Path) -> None:
    import optuna
    from mlflow.tracking import MlflowClient

    from surrogate_search.search.tracking import RefreshSearchPlots, SearchTracking
    from surrogate_search.tracking import start_search_run

    uri = os.environ["MLFLOW_TRACKING_URI"]  # the session's store (tests/conftest.py): created once
    parent = start_search_run("search-plots", str(tmp_path), tracking_uri=uri)
    tracking = SearchTracking(uri, parent, "search-plots", "val/f1", {})
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        value = trial.suggest_float("lr", 1e-5, 1.0, log=True) + trial.suggest_int("width", 8, 32)
        for step in range(3):
            trial.report(value * step, step)
        return value

    study.optimize(objective, n_trials=3)
    refresher = RefreshSearchPlots(tracking, "s", storage, min_interval_s=3600)
    refresher.on_trial_complete(0, [], None)  # the first trial to end draws at once
    drawn = {a.path for a in MlflowClient(uri).list_artifacts(parent, "search_plots")}
    assert {"search_plots/optimization_history.png", "search_plots/intermediate_values.png",
            "search_plots/parallel_coordinate.png", "search_plots/timeline.png"} <= drawn
    assert refresher.refresh() == []  # within the interval: nothing drawn, the search goes on
