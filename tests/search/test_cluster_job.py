"""``jobs/search.py`` submitted as a Ray job to a real two-node cluster (two ``ray start`` nodes on
this machine, token authentication on): the job succeeds and a trial's workers span both nodes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """Stop a ``ray start --block`` we started, then anything left in its process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def two_node_cluster(ray_token: str) -> Iterator[dict]:
    temp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Each node its own temp dir, as on separate machines: nodes sharing one would share (and
    # garbage-collect) each other's runtime_resources, the job's working_dir included.
    temp2 = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    port, dashboard = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ray_token}
    common = ["--block", "--num-cpus=2", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    started: list[subprocess.Popen] = []
    logs = Path(temp) / "nodes.log"
    try:
        with open(logs, "ab") as log:
            started.append(subprocess.Popen(
                [RAY, "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                 f"--temp-dir={temp}", *common], env=env, stdout=log, stderr=log, start_new_session=True))
            address = f"http://127.0.0.1:{dashboard}"
            from ray.util.state import list_nodes

            nodes: list = []
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                if len(started) == 1:
                    try:
                        list_nodes(address=address)
                    except Exception:
                        time.sleep(2)
                        continue
                    started.append(subprocess.Popen([RAY, "start", f"--address=127.0.0.1:{port}", f"--temp-dir={temp2}",
                                                     *common], env=env,
                                                    stdout=log, stderr=log, start_new_session=True))
                nodes = [n for n in list_nodes(address=address) if n.state == "ALIVE"]
                if len(nodes) == 2:
                    break
                time.sleep(2)
            assert len(nodes) == 2, f"cluster did not come up: {logs.read_text(errors='replace')[-3000:]}"
            yield {"address": address, "node_ids": {n.node_id for n in nodes}, "temp": Path(temp)}
    finally:
        for process in reversed(started):
            stop(process)
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(temp2, ignore_errors=True)


@pytest.mark.slow
def test_search_job_runs_on_a_two_node_cluster(two_node_cluster, tmp_path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    from surrogate_search.pretrain import pretrain
    from surrogate_search.tasks import get_task

    base = tmp_path / "base"
    pretrain(get_task("imbalanced_tabular", dataset="breast_cancer"), base, max_epochs=30, patience=5)
    storage = tmp_path / "searches"
    client = JobSubmissionClient(two_node_cluster["address"])
    # The command a user types, with overrides that keep it short: one trial whose two workers
    # are spread over the two nodes.
    entrypoint = (f"{sys.executable} jobs/search.py search_spaces/tabular_f1_smoke.yaml --set checkpoint={base} "
                  f"--set budget.trials=1 --set budget.placement=SPREAD --set posttune.steps=8 --storage {storage}")
    job = client.submit_job(entrypoint=entrypoint,
                            runtime_env={"working_dir": str(REPO_ROOT), "excludes": [".git", "runs", "*.db"]})
    deadline = time.monotonic() + 480
    status = client.get_job_status(job)
    while status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED} and time.monotonic() < deadline:
        time.sleep(3)
        status = client.get_job_status(job)
    logs = client.get_job_logs(job)
    if status != JobStatus.SUCCEEDED:
        client.stop_job(job)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    assert "best trial trial_0000" in logs

    rows = [json.loads(line) for line in
            (storage / "tabular_f1_smoke" / "train" / "trial_0000" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["final"] for r in rows) == 1
    worker_nodes = set(rows[-1]["node_ids"])
    assert worker_nodes == two_node_cluster["node_ids"]
    assert (storage / "tabular_f1_smoke" / "best_config.yaml").exists()
