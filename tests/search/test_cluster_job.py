"""``jobs/search.py`` submitted with ``ray job submit`` to a real two-node cluster (two ``ray start``
nodes on this machine, token authentication on): a client without the cluster's token, or with a
wrong one, is refused and submits nothing; with the token the job succeeds, its trials' workers
span both nodes, and its Optuna study and MLflow runs live in a real PostgreSQL server.

Time (each test, with the fixtures it sets up or tears down, must stay inside pytest's 600 s on a
loaded 2-core machine): the cluster gets at most ``CLUSTER_UP_S`` to start and run a first job, each refused
submission 60 s, the job ``JOB_S``, and stopping ``STOP_S``; each phase's seconds are printed. The
nodes skip Ray's 30 s drain on SIGTERM (nothing here serves traffic).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from local_servers import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
CLUSTER_UP_S = 150
JOB_S = 300
STOP_S = 30
REFUSED_ENTRYPOINT = "echo submitted-without-a-valid-token"


def processes_mentioning(*texts: str) -> dict[int, str]:
    """Live processes whose command line mentions one of ``texts`` (a node's own temp folder: every
    process of that node carries it), pid -> command line."""
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(text in line for text in texts) and int(cmdline.parent.name) != os.getpid():
            found[int(cmdline.parent.name)] = line
    return found


def stop_nodes(processes: list[subprocess.Popen], temps: list[str]) -> None:
    """Stop the ``ray start --block`` processes we started, all at once, then anything left in
    their process groups or still running from their temp folders (by pid, never by name)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_S
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid, line in processes_mentioning(*temps).items():
        print(f"killing a process of the test cluster left running: {pid} {line[:200]}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_until_jobs_are_accepted(address: str, deadline: float, logs: Path) -> None:
    """Submit a job that does nothing until the head takes it, and wait for it to succeed. A node is
    ALIVE before its dashboard agent, which runs the jobs, has registered; until then the head
    answers a submission with HTTP 500 "No available agent to submit job, please try again later"
    (on a loaded machine, seen more than 10 s after both nodes were ALIVE)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    while True:
        try:
            probe = client.submit_job(entrypoint="true")
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise AssertionError(f"the head takes no job: {exc}\n{logs.read_text(errors='replace')[-3000:]}")
            time.sleep(1)
    while (status := client.get_job_status(probe)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, f"the probe job is still {status}"
        time.sleep(0.5)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(probe)


@dataclass
class Cluster:
    address: str
    """The dashboard's address, as ``ray job submit --address`` takes it."""
    node_ids: set[str]
    env: dict[str, str]
    """This process's environment with the cluster's token: what an authorised user has."""


@pytest.fixture(scope="module")
def two_node_cluster(ray_token: str) -> Iterator[Cluster]:
    started_at = time.monotonic()
    temp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Each node its own temp dir, as on separate machines: nodes sharing one would share (and
    # garbage-collect) each other's runtime_resources, the job's working_dir included.
    temp2 = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    port, dashboard = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ray_token,
           # SIGTERM otherwise waits up to 30 s per node for Serve-style draining: nothing to drain here.
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
           # A job's `python` is the nodes' own, as on a cluster whose nodes have the dependencies installed.
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
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
            deadline = time.monotonic() + CLUSTER_UP_S
            while time.monotonic() < deadline:
                if len(started) == 1:
                    try:
                        list_nodes(address=address)
                    except Exception:
                        time.sleep(1)
                        continue
                    started.append(subprocess.Popen([RAY, "start", f"--address=127.0.0.1:{port}", f"--temp-dir={temp2}",
                                                     *common], env=env,
                                                    stdout=log, stderr=log, start_new_session=True))
                nodes = [n for n in list_nodes(address=address) if n.state == "ALIVE"]
                if len(nodes) == 2:
                    break
                time.sleep(1)
            assert len(nodes) == 2, f"cluster did not come up: {logs.read_text(errors='replace')[-3000:]}"
            wait_until_jobs_are_accepted(address, deadline, logs)
            print(f"two-node cluster up in {time.monotonic() - started_at:.0f}s")
            yield Cluster(address, {n.node_id for n in nodes}, env)
    finally:
        stopping = time.monotonic()
        stop_nodes(started, [temp, temp2])
        print(f"cluster stopped in {time.monotonic() - stopping:.0f}s")
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(temp2, ignore_errors=True)


def without_token(env: dict[str, str], home: Path) -> dict[str, str]:
    """A user's environment that has no Ray token: no RAY_AUTH_* variable, and a home folder without
    ``~/.ray/auth_token``."""
    return {**{k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}, "HOME": str(home)}


@pytest.mark.slow
def test_a_client_without_the_token_is_refused(two_node_cluster: Cluster, tmp_path: Path) -> None:
    from ray.job_submission import JobSubmissionClient

    no_token = without_token(two_node_cluster.env, tmp_path)
    wrong_token = {**no_token, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    for env, expected in ((no_token, "Unauthorized: Missing authentication token"),
                          (wrong_token, "Forbidden: Invalid authentication token")):
        done = subprocess.run([RAY, "job", "submit", "--address", two_node_cluster.address, "--no-wait", "--",
                               *REFUSED_ENTRYPOINT.split()], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
        out = done.stdout + done.stderr
        assert done.returncode != 0, out[-3000:]
        assert expected in out, out[-3000:]
        assert "submitted successfully" not in out
    # Nothing reached the cluster: the token's holder sees no such job.
    client = JobSubmissionClient(two_node_cluster.address)
    assert not [job for job in client.list_jobs() if job.entrypoint == REFUSED_ENTRYPOINT]


@pytest.fixture(scope="module")
def postgres() -> Iterator[Any]:
    """A real PostgreSQL server on 127.0.0.1 (installed from Debian's packages when missing), or the
    reason there is none."""
    import postgres_server

    try:
        server = postgres_server.start()
    except postgres_server.PostgresUnavailable as exc:
        yield str(exc)
        return
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_a_search_job_on_a_two_node_cluster_keeps_its_study_and_its_mlflow_runs_in_postgresql(
        two_node_cluster: Cluster, postgres: Any, tabular_checkpoint, tmp_path: Path, monkeypatch, capsys) -> None:
    """The set-up the README gives for a cluster: ``jobs/search.py`` submitted with ``ray job
    submit``, trials spread over both nodes, the Optuna study and the MLflow tracking server's store
    in one PostgreSQL server. Where PostgreSQL cannot be had, the job runs with the study in its
    folder and MLflow on SQLite, and the test is reported skipped after the job's checks, saying why."""
    import optuna
    from mlflow import MlflowClient
    from ray.job_submission import JobStatus, JobSubmissionClient

    from surrogate_search.tracking.ui import start_server, stop_process_group

    storage = tmp_path / "searches"
    on_postgres = not isinstance(postgres, str)
    if on_postgres:
        study_url, backend_store = postgres.create_database("optuna"), postgres.create_database("mlflow")
    else:
        study_url, backend_store = f"sqlite:///{storage / 'tabular_f1_smoke' / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    port = free_port()
    tracking_uri = f"http://127.0.0.1:{port}"
    with open(tmp_path / "mlflow_server.log", "wb") as log:
        try:
            server = start_server(backend_store, port, artifacts_destination=tmp_path / "artifacts", cwd=tmp_path,
                                  output=log, timeout=180)
        except Exception:
            pytest.fail(f"mlflow server on {backend_store.split(':')[0]} did not start:\n"
                        f"{(tmp_path / 'mlflow_server.log').read_text(errors='replace')[-3000:]}")
    try:
        submission_id = f"search-{secrets.token_hex(4)}"
        # The command a user types, with overrides that keep it short: two trials whose workers are
        # spread over the two nodes.
        command = [RAY, "job", "submit", "--address", two_node_cluster.address, "--submission-id", submission_id,
                   "--working-dir", str(REPO_ROOT),
                   "--runtime-env-json", json.dumps({"excludes": [".git", "runs", "*.db"]}),
                   "--", "python", "jobs/search.py", "search_spaces/tabular_f1_smoke.yaml",
                   "--set", f"checkpoint={tabular_checkpoint.path.parent}", "--set", "budget.trials=2",
                   "--set", "budget.placement=SPREAD", "--set", "posttune.steps=8",
                   "--storage", str(storage), "--tracking-uri", tracking_uri,
                   *(["--study-storage", study_url] if on_postgres else [])]
        started = time.monotonic()
        try:
            done = subprocess.run(command, env=two_node_cluster.env, cwd=REPO_ROOT, capture_output=True, text=True,
                                  timeout=JOB_S)
        except subprocess.TimeoutExpired as timeout:
            JobSubmissionClient(two_node_cluster.address).stop_job(submission_id)
            out = timeout.stdout.decode(errors="replace") if isinstance(timeout.stdout, bytes) else timeout.stdout or ""
            pytest.fail(f"`ray job submit` did not finish within {JOB_S}s:\n{out[-4000:]}")
        print(f"ray job submit: exit {done.returncode} after {time.monotonic() - started:.0f}s")
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-4000:]
        assert f"Job '{submission_id}' succeeded" in out
        assert "best trial trial_000" in out
        assert JobSubmissionClient(two_node_cluster.address).get_job_status(submission_id) == JobStatus.SUCCEEDED
        # Token authentication is on for this cluster: the dashboard's job API refuses a client
        # without the token (HTTP 401) and answers the same request with it.
        from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled

        url = f"{two_node_cluster.address}/api/jobs/{submission_id}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=30)
        assert refused.value.code == 401
        with urllib.request.urlopen(urllib.request.Request(url, headers=get_auth_headers_if_auth_enabled({})),
                                    timeout=30) as answer:
            assert json.loads(answer.read())["submission_id"] == submission_id

        # Each trial finished once, and its workers ran on both nodes.
        for trial in ("trial_0000", "trial_0001"):
            rows = [json.loads(line) for line in
                    (storage / "tabular_f1_smoke" / "train" / trial / "metrics.jsonl").read_text().splitlines()]
            assert sum(r["final"] for r in rows) == 1
            assert set(rows[-1]["node_ids"]) == two_node_cluster.node_ids
        assert (storage / "tabular_f1_smoke" / "best_config.yaml").exists()
        # The study holds both trials, COMPLETE; on PostgreSQL, nothing of it is in the search's folder.
        study = optuna.load_study(study_name="tabular_f1_smoke", storage=study_url)
        states = [t.state for t in study.trials]
        assert len(states) == 2 and all(s == optuna.trial.TrialState.COMPLETE for s in states), states
        # The tracking server holds a parent and one child per trial, each with its objective.
        client = MlflowClient(tracking_uri=tracking_uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
        assert len(runs) == 3 and len(children) == 2
        for child in children:
            assert client.get_metric_history(child.info.run_id, "objective"), child.data.tags
        if not on_postgres:
            pytest.skip(f"the job ran and passed its checks; the PostgreSQL part was not checked: {postgres}")
        assert not (storage / "tabular_f1_smoke" / "optuna.db").exists()
        (runs_in_db,), = postgres.query("mlflow", "SELECT count(*) FROM runs")
        assert runs_in_db == 3
        # A second search under the same name is refused before any work, naming the study.
        from surrogate_search.cli import main

        monkeypatch.chdir(REPO_ROOT)
        capsys.readouterr()
        code = main(["search", "search_spaces/tabular_f1_smoke.yaml", "--storage", str(tmp_path / "other"),
                     "--study-storage", study_url, "--no-track"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "already holds a study 'tabular_f1_smoke'" in err
    finally:
        stop_process_group(server)
