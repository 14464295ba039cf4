"""A real MLflow tracking server for the tracking tests, and one smoke comparison recorded in it.

The server (``mlflow server`` on 127.0.0.1, SQLite backend and artifact folder under the pytest
temporary folder) is started once per session in its own process group and stopped by that pid
when the session ends, whatever happened in the tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from surrogate_search.tracking.ui import server_command, wait_until_up
from local_servers import free_port

SMOKE_CONFIG = ["--steps", "4", "--set", "eval_every=2", "--set", "surrogate.warmup_steps=2",
                "--set", "surrogate.batch_size=8"]
"""Tiny post-tuning: 4 model updates, evaluated at steps 2 and 4."""


@dataclass
class Server:
    uri: str
    folder: Path
    pid: int


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    command = server_command(f"sqlite:///{folder / 'mlflow.db'}", port, artifacts_destination=folder / "artifacts")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job runner: one process less
    log = open(folder / "server.log", "wb")
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # its own process group: workers stop with it
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process, timeout=120)
        yield Server(f"http://127.0.0.1:{port}", folder, process.pid)
    except Exception:
        print((folder / "server.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="session")
def smoke_args() -> list[str]:
    return list(SMOKE_CONFIG)


@pytest.fixture(scope="session")
def tracking_client(mlflow_server: Server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server.uri)


@dataclass
class SmokeComparison:
    experiment: str
    experiment_id: str
    parent: Run
    children: list[Run]
    output: str
    """What ``surrogate-search compare`` printed."""


@pytest.fixture(scope="session")
def smoke_comparison(mlflow_server: Server, tracking_client: MlflowClient, tabular_checkpoint) -> SmokeComparison:
    """``surrogate-search compare`` (proxy vs deep_embedding, 2 seeds, 4 updates) recorded in the server."""
    import contextlib
    import io

    from surrogate_search.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["-q", "compare", "--task", "imbalanced_tabular", "--option", "dataset=breast_cancer",
                     "--checkpoint", str(tabular_checkpoint.path.parent), "--methods", "deep_embedding",
                     "--seeds", "2", "--tracking-uri", mlflow_server.uri, "--comparison-id", "smoke-compare",
                     *SMOKE_CONFIG])
    assert code == 0, out.getvalue()
    experiment = tracking_client.get_experiment_by_name("imbalanced_tabular_breast_cancer")
    assert experiment is not None
    parents = tracking_client.search_runs([experiment.experiment_id],
                                          filter_string="tags.run_kind = 'comparison' and tags.search_id = 'smoke-compare'")
    assert len(parents) == 1
    children = tracking_client.search_runs([experiment.experiment_id],
                                           filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'",
                                           order_by=["attributes.start_time ASC"])
    return SmokeComparison(experiment.name, experiment.experiment_id, parents[0], children, out.getvalue())
