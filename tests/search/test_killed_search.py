"""A search driver killed with SIGKILL mid-search (a machine lost, an OOM kill: no cleanup of any
kind), then ``surrogate-search search --resume``, both as a user runs them: the resumed search
finishes the budget, runs no finished trial again, and records no trial twice in MLflow."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import left_running

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE = REPO_ROOT / "search_spaces" / "tabular_f1_smoke.yaml"
RESUME_S = 400


def rows_of(run_dir: Path) -> list[dict]:
    file = run_dir / "metrics.jsonl"
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_a_search_killed_with_sigkill_resumes_without_rerunning_or_duplicating(ray_token, tabular_checkpoint,
                                                                               tmp_path) -> None:
    marker = f"killed-search-{secrets.token_hex(6)}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "KILLED_SEARCH_PROBE": marker,
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "surrogate_search.cli", "search", str(SMOKE), "--storage", str(tmp_path / "searches"),
               "--set", f"checkpoint={tabular_checkpoint.path.parent}", "--set", "budget.trials=3",
               "--set", "budget.workers_per_trial=1", "--set", "budget.concurrency=1",
               "--set", "budget.scheduler.type=none", "--set", "posttune.steps=24", "--num-cpus", "2"]
    search_dir = tmp_path / "searches" / "tabular_f1_smoke"
    log = open(tmp_path / "first.log", "w")
    driver = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        # Killed while trial 1 runs: trial 0 finished, trial 1 has reported and not finished.
        while not (rows_of(search_dir / "train" / "trial_0001") and not rows_of(search_dir / "train" / "trial_0001")[-1]["final"]):
            assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "trial 1 never started"
            time.sleep(0.05)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        log.close()
        left_running(marker, grace_s=0)  # Ray's own processes, which left the killed driver's group
    finished_before = rows_of(search_dir / "train" / "trial_0000")
    assert [r for r in finished_before if r["final"]], "trial 0 had not finished when the driver was killed"

    resumed = subprocess.Popen([*command, "--resume"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out = resumed.communicate(timeout=RESUME_S)[0]
    except subprocess.TimeoutExpired:
        os.killpg(resumed.pid, signal.SIGKILL)
        out = resumed.communicate()[0]
        pytest.fail(f"--resume did not finish within {RESUME_S} s:\n{out[-6000:]}")
    finally:
        left_running(marker, grace_s=0)
    assert resumed.returncode == 0, out[-4000:]
    assert "3 complete" in out and "1 fail" in out  # trial 1 re-queued, its stuck copy FAILED

    import optuna

    trials = optuna.load_study(study_name="tabular_f1_smoke", storage=f"sqlite:///{search_dir / 'optuna.db'}").get_trials()
    runs_of_trials = [t.user_attrs["train_run"] for t in trials if t.state.name == "COMPLETE"]
    # Each run finished once; the re-queued trial kept trial 1's run, the next one is new.
    assert len(runs_of_trials) == len(set(runs_of_trials)) == 3 and {"trial_0000", "trial_0001"} <= set(runs_of_trials)
    assert [t.state.name for t in trials].count("FAIL") == 1
    # Trial 0 was not run again: its log is as the killed search left it.
    assert rows_of(search_dir / "train" / "trial_0000") == finished_before
    assert len([r for r in rows_of(search_dir / "train" / "trial_0001") if r["final"]]) == 1

    # One MLflow run per trial, counted as a list (a duplicate would not collapse).
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        keys = [row[0] for row in db.execute("SELECT value FROM tags WHERE key = 'trial_key'")]
        parents = db.execute("SELECT COUNT(*) FROM tags WHERE key = 'run_kind' AND value = 'search'").fetchone()[0]
    assert sorted(keys) == sorted(runs_of_trials) and parents == 1
