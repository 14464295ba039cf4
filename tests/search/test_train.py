from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from surrogate_search.config import PostTuneConfig


def tabular_config(**overrides) -> PostTuneConfig:
    from surrogate_search.tasks import get_task

    return PostTuneConfig.for_task(get_task("imbalanced_tabular"), {
        "method": "deep_embedding", "steps": 48, "eval_every": 4, "batch_size": 32,
        "surrogate": {"warmup_steps": 5, "batch_size": 8}, **overrides})


@pytest.mark.slow
def test_killed_worker_resumes_from_its_last_checkpoint_and_records_final_metrics_once(
        local_ray, tabular_checkpoint, tmp_path) -> None:
    from surrogate_search.search.train import TrainPlan, read_metrics_log, run_posttune

    outcome: dict = {}

    def run() -> None:
        try:
            # 120 updates: on a loaded 2-core machine a 48-update run once ended before the test saw a row at step >= 8.
            outcome["result"] = run_posttune(tabular_config(steps=120), tabular_checkpoint, name="fault_run",
                                             storage_path=tmp_path,
                                             plan=TrainPlan(num_workers=2, max_failures=2))
        except BaseException as exc:  # surfaced by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 240
    killed = None
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        rows = read_metrics_log(tmp_path / "fault_run")
        if rows and rows[-1]["step"] >= 8 and not rows[-1]["final"]:
            killed = (int(rows[-1]["step"]), rows[-1]["pids"][1])
            os.kill(killed[1], signal.SIGKILL)  # rank 1's worker process, mid-run
        time.sleep(0.2)
    thread.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    assert killed is not None, "the run finished before a worker could be killed"

    rows = read_metrics_log(tmp_path / "fault_run")
    steps = [int(r["step"]) for r in rows if not r["final"]]
    # Resumed from the last checkpoint: steps after the kill continue from it, none start over at 4.
    assert steps == sorted(set(steps)) == list(range(4, 121, 4))
    restarted = [r for r in rows if not r["final"] and int(r["step"]) > killed[0]]
    assert restarted and killed[1] not in restarted[-1]["pids"]
    finals = [r for r in rows if r["final"]]
    assert len(finals) == 1
    result = outcome["result"]
    assert result.error is None
    assert result.metrics["final"] == 1.0 and 0.0 <= result.metrics["test/f1"] <= 1.0
    assert result.metrics["workers"] == 2.0
