"""A trial whose post-tuning diverges is a result of its settings, not a crash: it ends at once,
reaches Optuna as PRUNED with why (so TPE learns to avoid the region, which it would not from a
FAIL), is tagged in MLflow, and is run once (no Ray Train or Tune retry), for inline one-worker
trials and for Ray Train trials of two workers alike. The NaN comes from a plugin loaded by every
Ray worker (``diverging_plugin.py``)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from surrogate_search.search import load_space
from surrogate_search.search.outcome import STUDY_DB
from surrogate_search.search.train import read_metrics_log
from surrogate_search.search.tune import run_search

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE = REPO_ROOT / "search_spaces" / "tabular_f1_smoke.yaml"
PLUGIN = Path(__file__).with_name("diverging_plugin.py")
GOOD = {"method": "deep_embedding", "surrogate.encoder": "deepsets", "surrogate.width": 16,
        "surrogate.grad_penalty": 0.1, "surrogate.proxy_weight": 1.0, "lr": 1.0e-5, "sampling.strategy": "global"}
DIVERGING = {**GOOD, "lr": 0.2}  # >= diverging_plugin.DIVERGING_LR


@pytest.fixture(scope="module")
def base_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from surrogate_search.pretrain import pretrain
    from surrogate_search.tasks import get_task

    out = tmp_path_factory.mktemp("base_breast_cancer")
    pretrain(get_task("imbalanced_tabular", dataset="breast_cancer"), out, max_epochs=30, patience=5)
    return str(out)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["inline", "ray_train"])
def test_a_diverging_trial_is_pruned_with_its_reason_and_run_once(workers, ray_token, base_checkpoint_dir, tmp_path,
                                                                  monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("SURROGATE_SEARCH_PLUGINS", str(PLUGIN))  # read by every Ray worker that imports us
    # No ASHA: the diverging trial must reach its divergence (step 5, after the evaluation at step 4).
    spec = load_space(SMOKE, overrides={"checkpoint": base_checkpoint_dir, "posttune.steps": 8, "budget.trials": 2,
                                        "budget.concurrency": 1, "budget.workers_per_trial": workers,
                                        "budget.scheduler.type": "none", "space.lr.high": 0.5})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = run_search(spec, storage=tmp_path, num_cpus=3, points_to_evaluate=[GOOD, DIVERGING], verbose=0,
                         tracking_uri=uri)
    search_dir = tmp_path / "tabular_f1_smoke"

    trials = optuna.load_study(study_name="tabular_f1_smoke", storage=f"sqlite:///{search_dir / STUDY_DB}").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    reason = trials[1].user_attrs["diverged"]
    assert "post-tuning with deep_embedding (seed 0) diverged at step 5 of 8" in reason
    assert "lower lr (now 0.2)" in reason and "raise surrogate.proxy_weight (now 1)" in reason
    assert "diverged" not in trials[0].user_attrs
    assert outcome.diverged == {1: reason} and outcome.best_run == "trial_0000"

    # Ran once: the evaluation at step 4, then one row for the divergence -- a retry (from the
    # step-4 checkpoint) would have diverged again and written a second one -- from one process.
    rows = read_metrics_log(search_dir / "train" / "trial_0001")
    assert [(r["step"], r.get("diverged_step")) for r in rows] == [(4.0, None), (4.0, 5.0)]
    assert rows[1]["diverged"] == reason and not rows[1]["final"]
    assert rows[1]["val/f1"] == rows[0]["val/f1"]  # the last finite evaluation, reported again
    assert rows[0]["pids"] == rows[1]["pids"]
    assert trials[1].intermediate_values[max(trials[1].intermediate_values)] == pytest.approx(rows[0]["val/f1"])
    tune_trials = [p for p in (search_dir / "tune_0").iterdir() if p.is_dir() and p.name.startswith("trial_trainable")]
    assert len(tune_trials) == 2

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("imbalanced_tabular_breast_cancer").experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{outcome.mlflow['run_id']}'")
    children = [r for r in runs if r.data.tags.get("trial_key") == "trial_0001"]
    assert len(children) == 1
    assert children[0].data.tags["diverged"] == reason and children[0].data.tags["optuna_state"] == "PRUNED"
    assert "diverged" not in next(r for r in runs if r.data.tags.get("trial_key") == "trial_0000").data.tags
