"""A search whose MLflow tracking server goes away in the middle and comes back: every trial
completes, and every row each trial reported is in its MLflow run exactly once (sent live, kept
while the server was down, or recorded from the trial's metrics.jsonl at the end)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from surrogate_search.search import load_space
from surrogate_search.cli import main
from surrogate_search.search.sync import TrialRecord, report_metrics
from surrogate_search.search.train import read_metrics_log
from surrogate_search.search.tune import run_search
from surrogate_search.tracking.replay import row_key
from surrogate_search.tracking.runs import metric_items
from surrogate_search.tracking.ui import stop_process_group
from local_servers import free_port, start_mlflow_server

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE = REPO_ROOT / "search_spaces" / "tabular_f1_smoke.yaml"
GOOD = {"method": "deep_embedding", "surrogate.encoder": "deepsets", "surrogate.width": 16,
        "surrogate.grad_penalty": 0.1, "surrogate.proxy_weight": 1.0, "lr": 1.0e-5, "sampling.strategy": "global"}


def expected_rows(run_dir: Path, objective: str) -> Counter:
    """Every metric row the trial reported, as the trial's MLflow run should hold them."""
    rows: Counter = Counter()
    for row in read_metrics_log(run_dir):
        step, values = report_metrics(row, objective)
        rows.update(row_key(m) for m in metric_items(values, step))
    return rows


def recorded_rows(client: MlflowClient, run_id: str) -> Counter:
    rows: Counter = Counter()
    for key in client.get_run(run_id).data.metrics:
        rows.update(row_key(m) for m in client.get_metric_history(run_id, key))
    return rows


@pytest.fixture(scope="module")
def base_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from surrogate_search.pretrain import pretrain
    from surrogate_search.tasks import get_task

    out = tmp_path_factory.mktemp("base_breast_cancer")
    pretrain(get_task("imbalanced_tabular", dataset="breast_cancer"), out, max_epochs=30, patience=5)
    return str(out)


@pytest.mark.slow
def test_search_survives_a_tracking_outage_and_records_every_row_once(ray_token, base_checkpoint_dir,
                                                                        tmp_path, caplog, capsys) -> None:
    folder = tmp_path / "mlflow"
    folder.mkdir()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    # Three one-worker trials, one at a time, none stopped early: 15 reports each.
    spec = load_space(SMOKE, overrides={"checkpoint": base_checkpoint_dir, "budget.trials": 3,
                                        "budget.workers_per_trial": 1, "budget.concurrency": 1,
                                        "budget.scheduler.type": "none", "posttune.steps": 56,
                                        "posttune.eval_every": 4})
    train = tmp_path / "searches" / spec.name / "train"
    servers = [start_mlflow_server(folder, port)]
    outage: dict[str, int] = {}
    done = threading.Event()

    def stop_then_restart() -> None:
        # Down after trial 0's second report; back once trial 1 has started and reported (so trial
        # 1 started with the server down, and its run is made afterwards), or after 90 s at most.
        while not done.is_set():
            if not outage and len(read_metrics_log(train / "trial_0000")) >= 2:
                outage["trial_0000_rows_before"] = len(read_metrics_log(train / "trial_0000"))
                outage["stopped_at"] = int(time.monotonic())
                stop_process_group(servers[0])
            elif outage and "restarted" not in outage and (read_metrics_log(train / "trial_0001")
                                                           or time.monotonic() > outage["stopped_at"] + 90):
                servers.append(start_mlflow_server(folder, port))
                outage["restarted"] = 1
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=stop_then_restart)
    watcher.start()
    try:
        with caplog.at_level(logging.INFO, logger="surrogate_search.search.sync"):
            outcome = run_search(spec, storage=tmp_path / "searches", num_cpus=2, points_to_evaluate=[GOOD],
                                 verbose=0, tracking_uri=uri)
        done.set()
        watcher.join()
        assert outcome.states == {"COMPLETE": 3}
        assert outage.get("restarted"), f"the outage did not happen as planned: {outage}"
        total = len(read_metrics_log(train / "trial_0000"))
        assert outage["trial_0000_rows_before"] < total, "trial 0 ended before the server went away"
        # Trial 1 started while the server was down: its run was made at the end, from its folder.
        assert any("of trial trial_0001 synced: made now" in r.getMessage() for r in caplog.records)
        client = MlflowClient(uri)
        for trial in ("trial_0000", "trial_0001", "trial_0002"):
            record = TrialRecord.read(train / trial)
            assert record.run_id, f"{trial} has no MLflow run"
            expected = expected_rows(train / trial, spec.metric)
            assert sum(expected.values()) >= 15 * 10
            recorded = recorded_rows(client, record.run_id)
            missing, doubled = expected - recorded, recorded - expected
            assert not missing and not doubled, (f"{trial}: {sum(missing.values())} row(s) missing (e.g. "
                                                 f"{sorted(missing)[:3]}), {sum(doubled.values())} recorded twice "
                                                 f"(e.g. {sorted(doubled)[:3]})")
            run = client.get_run(record.run_id)
            assert run.info.status == "FINISHED" and run.data.tags["optuna_state"] == "COMPLETE", trial
        assert client.get_run(outcome.mlflow["run_id"]).info.status == "FINISHED"
        # A second sync, as a user runs it, finds nothing left to send.
        assert main(["-q", "sync", str(train.parent)]) == 0
        out = capsys.readouterr().out
        assert out.count(": 0 metric value(s) sent") == 3 and "3 trial(s) in sync with MLflow" in out, out
    finally:
        done.set()
        watcher.join()
        for server in servers:
            stop_process_group(server)
