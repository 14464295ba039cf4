"""``surrogate-search sync`` on a search whose tracking server was down as it ended: the folder
and the study are made as such a search leaves them (no Ray needed), and sync is run as a user
runs it. It makes the runs of trials that started during the outage, restores the ``diverged`` tag
of a trial that diverged, and closes the search's parent run as the search's end would have."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import yaml
from mlflow.tracking import MlflowClient

from surrogate_search.cli import main
from surrogate_search.search.outcome import BEST_CONFIG, STUDY_DB
from surrogate_search.search.sync import TrialRecord
from surrogate_search.tracking.runs import start_search_run

REASON = "post-tuning with deep_embedding (seed 0) diverged at step 5 of 8: lower lr (now 0.2)"


def left_by_an_outage(tmp_path: Path) -> tuple[Path, str, str]:
    """A finished search whose server went down before its trials started: two trials (the second
    diverged, so PRUNED) with rows and records but no runs, and its parent run still RUNNING."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    search_dir = tmp_path / "searches" / "tabular_f1_smoke"
    search_dir.mkdir(parents=True)
    parent = start_search_run("sync_test", f"{search_dir}#1", {"objective": "val/f1"}, tracking_uri=uri,
                              tags={"space": "tabular_f1_smoke"}, run_name="search tabular_f1_smoke")
    study = optuna.create_study(study_name="tabular_f1_smoke", storage=f"sqlite:///{search_dir / STUDY_DB}",
                                direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.9, intermediate_values={1: 0.8},
                                              user_attrs={"train_run": "trial_0000"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, intermediate_values={1: 0.7},
                                              user_attrs={"train_run": "trial_0001", "diverged": REASON}))
    rows = {"trial_0000": [{"step": 4.0, "val/f1": 0.8, "final": 0.0}, {"step": 8.0, "val/f1": 0.9, "final": 1.0}],
            "trial_0001": [{"step": 4.0, "val/f1": 0.7, "final": 0.0},
                           {"step": 4.0, "val/f1": 0.7, "final": 0.0, "diverged_step": 5.0, "diverged": REASON}]}
    for trial, trial_rows in rows.items():
        folder = search_dir / "train" / trial
        TrialRecord(uri, parent, trial, "val/f1", None, {"lr": "0.2"}, {"method": "deep_embedding"}).write(folder)
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trial_rows))
    (search_dir / BEST_CONFIG).write_text(yaml.safe_dump({
        "task": {"name": "imbalanced_tabular"}, "posttune": {"lr": 1e-5}, "train_run": "trial_0000",
        "objective": {"metric": "val/f1", "mode": "max", "value": 0.9}}))
    return search_dir, uri, parent


def test_sync_restores_the_diverged_tag_of_a_run_it_makes(tmp_path: Path, capsys) -> None:
    search_dir, uri, _ = left_by_an_outage(tmp_path)
    assert main(["-q", "sync", str(search_dir)]) == 0
    assert "trial_0001: run " in capsys.readouterr().out
    run = MlflowClient(uri).get_run(TrialRecord.read(search_dir / "train" / "trial_0001").run_id)
    assert run.data.tags["diverged"] == REASON
    assert (run.info.status, run.data.tags["optuna_state"]) == ("KILLED", "PRUNED")
    finished = MlflowClient(uri).get_run(TrialRecord.read(search_dir / "train" / "trial_0000").run_id)
    assert "diverged" not in finished.data.tags and finished.info.status == "FINISHED"


def test_sync_closes_the_search_run_once_the_search_is_over(tmp_path: Path, capsys) -> None:
    search_dir, uri, parent = left_by_an_outage(tmp_path)
    client = MlflowClient(uri)
    assert client.get_run(parent).info.status == "RUNNING"
    assert main(["-q", "sync", str(search_dir)]) == 0
    assert f"search run {parent}: status FINISHED" in capsys.readouterr().out
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.tags["best_trial"] == "trial_0000"
    assert run.data.tags["best_trial_run_id"] == TrialRecord.read(search_dir / "train" / "trial_0000").run_id
    assert run.data.metrics["best_objective"] == 0.9
    assert BEST_CONFIG in [a.path for a in client.list_artifacts(parent)]
    # Run again: nothing left to do, the best trial's metric is not logged twice.
    assert main(["-q", "sync", str(search_dir)]) == 0
    assert "search run" not in capsys.readouterr().out
    assert len(client.get_metric_history(parent, "best_objective")) == 1


def test_sync_leaves_the_search_run_of_an_interrupted_search_to_resume(tmp_path: Path, capsys) -> None:
    search_dir, uri, parent = left_by_an_outage(tmp_path)
    optuna.load_study(study_name="tabular_f1_smoke", storage=f"sqlite:///{search_dir / STUDY_DB}").ask()  # RUNNING
    assert main(["-q", "sync", str(search_dir)]) == 0
    assert "search run" not in capsys.readouterr().out
    assert MlflowClient(uri).get_run(parent).info.status == "RUNNING"
