"""What the platform relies on in Ray, Optuna and MLflow beyond their public API, and the pins that
keep it true (constraints.txt). Each test fails when a release moves one of these, before a search
goes wrong in a way that is hard to trace."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"


def pins() -> dict[str, str]:
    found = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s#]+)", line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


@pytest.mark.parametrize("package", ["ray", "optuna", "mlflow"])
def test_the_libraries_whose_internals_the_platform_uses_are_pinned_to_what_is_installed(package):
    pinned = pins()
    assert package in pinned, f"{package} has no exact pin in constraints.txt"
    assert version(package) == pinned[package], (
        f"{package} {version(package)} is installed but constraints.txt pins {pinned[package]}: "
        "run the suite on the new release, then move the pin")


def test_optuna_search_keeps_the_trial_map_study_and_completed_set_that_pruned_reporting_uses():
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(space={"x": tune.uniform(0.0, 1.0)}, metric="loss", mode="min",
                            sampler=optuna.samplers.RandomSampler(seed=0))
    params = searcher.suggest("trial_a")
    assert set(params) == {"x"}
    assert isinstance(searcher._ot_study, optuna.Study)
    assert isinstance(searcher._ot_trials["trial_a"], optuna.Trial)
    searcher.on_trial_complete("trial_a", {"loss": 0.5})
    assert "trial_a" in searcher._completed_trials
    assert searcher._ot_study.trials[0].state == optuna.trial.TrialState.COMPLETE


def test_mlflow_keeps_the_process_wide_tracking_uri_where_use_tracking_uri_restores_it(tmp_path):
    import mlflow
    from mlflow.tracking._tracking_service import utils

    from surrogate_search.tracking.store import use_tracking_uri

    before = mlflow.get_tracking_uri()
    inner = f"sqlite:///{tmp_path / 'inner.db'}"
    with use_tracking_uri(inner):
        assert utils._tracking_uri == inner
        assert mlflow.get_tracking_uri() == inner
    assert mlflow.get_tracking_uri() == before


def test_ray_counts_cpus_where_local_mode_asks():
    from ray._private.utils import get_num_cpus

    assert int(get_num_cpus()) >= 1
