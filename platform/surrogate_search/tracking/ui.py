"""``surrogate-search ui``: the MLflow UI for the local store, on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from surrogate_search.tracking.store import TrackingUnavailableError, is_remote, resolve_tracking_uri

HOST = "127.0.0.1"


def server_command(backend_store_uri: str, port: int, *, artifacts_destination: str | Path | None = None,
                   workers: int = 1) -> list[str]:
    """The ``mlflow server`` command line for ``backend_store_uri``, bound to 127.0.0.1."""
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli)] if mlflow_cli.exists() else [sys.executable, "-m", "mlflow"]
    command += ["server", "--backend-store-uri", backend_store_uri, "--host", HOST, "--port", str(port),
                "--workers", str(workers)]
    if artifacts_destination is not None:
        command += ["--artifacts-destination", Path(artifacts_destination).resolve().as_uri()]
    return command


def wait_until_up(url: str, process: subprocess.Popen | None = None, timeout: float = 90.0) -> None:
    """Wait for ``url``/health to answer; fail with the URL named (and the server's exit code if it died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise TrackingUnavailableError(f"mlflow server for {url} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise TrackingUnavailableError(f"mlflow server at {url} did not answer within {timeout:.0f}s")


class _Terminated(Exception):
    """SIGTERM arrived: raised in the main thread so that the server is stopped on the way out."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


def stop_process_group(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop ``process`` and every process of its group (it must lead its own group:
    ``start_new_session=True``): SIGTERM, then SIGKILL after ``timeout`` seconds.

    ``mlflow server`` runs uvicorn in a child process and does not stop it when it is itself
    terminated, so signalling the group, not the one pid, is what leaves nothing behind."""
    def signal_group(signum: int) -> bool:
        try:
            os.killpg(process.pid, signum)
            return True
        except ProcessLookupError:  # the whole group is gone already
            return False

    if not signal_group(signal.SIGTERM):
        process.poll()
        return
    deadline = time.monotonic() + timeout
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    # The leader is gone (or stuck); wait for the rest of the group, then kill what is left.
    while time.monotonic() < deadline and signal_group(0):
        time.sleep(0.1)
    signal_group(signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=timeout)


def compare_url(base_url: str, experiment_id: str, run_ids: Sequence[str]) -> str:
    """The UI's compare view for ``run_ids`` (what "Compare" shows after ticking those runs)."""
    query = urllib.parse.urlencode({"runs": json.dumps(list(run_ids)), "experiments": json.dumps([experiment_id])})
    return f"{base_url.rstrip('/')}/#/compare-runs?{query}"


def experiment_url(base_url: str, experiment_id: str) -> str:
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}"


def experiment_lines(uri: str, base_url: str, experiment: str) -> list[str]:
    """Addresses worth opening for ``experiment``: its runs, and the compare view of its latest
    comparison's child runs (one per method and seed)."""
    from surrogate_search.tracking.runs import KIND_TAG, PARENT_TAG, SEARCH_TAG
    from surrogate_search.tracking.store import client

    mlflow_client = client(uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return [f"no experiment {experiment!r} in {uri} yet"]
    exp = found.experiment_id
    lines = [f"experiment {experiment}: {experiment_url(base_url, exp)}/runs"]
    parents = mlflow_client.search_runs([exp], filter_string=f"tags.{KIND_TAG} = 'comparison'",
                                        order_by=["attributes.start_time DESC"], max_results=1)
    if parents:
        parent = parents[0]
        children = mlflow_client.search_runs([exp], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
                                             order_by=["attributes.start_time ASC"])
        if children:
            name = parent.data.tags.get(SEARCH_TAG, parent.info.run_id)
            lines.append(f"compare view of comparison {name} ({len(children)} runs): "
                         + compare_url(base_url, exp, [c.info.run_id for c in children]))
    return lines


def start_server(backend_store_uri: str, port: int, *, artifacts_destination: str | Path | None = None,
                 cwd: str | Path | None = None, output: Any = subprocess.DEVNULL, timeout: float = 120.0,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """``mlflow server`` over ``backend_store_uri`` on 127.0.0.1:``port``, in its own process group
    (stop it with :func:`stop_process_group`), returned once it answers; stopped again if it never
    does. GenAI job execution is off: browsing and logging runs never need it. ``output``: where
    its stdout and stderr go."""
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           **{k: v for k, v in (os.environ if env is None else env).items() if k != "MLFLOW_TRACKING_URI"}}
    process = subprocess.Popen(server_command(backend_store_uri, port, artifacts_destination=artifacts_destination),
                               cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_up(f"http://{HOST}:{port}", process, timeout=timeout)
    except BaseException:
        stop_process_group(process)
        raise
    return process


def serve_ui(tracking_uri: str | None = None, port: int = 5000, *, experiment: str | None = None) -> int:
    """Start the MLflow UI on 127.0.0.1:``port`` for the local store and block until Ctrl-C or
    SIGTERM, either of which stops the server with all its processes and returns 0. For a remote
    tracking server there is nothing to start: its address is printed."""
    uri = resolve_tracking_uri(tracking_uri)
    if is_remote(uri):
        print(f"MLflow UI: {uri} (the tracking server is remote; open it in a browser)")
        for line in experiment_lines(uri, uri, experiment) if experiment else []:
            print(line)
        return 0
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise FileNotFoundError(f"no MLflow store at {uri}: run `surrogate-search compare` or `posttune` here first, "
                                "or pass --tracking-uri")
    url = f"http://{HOST}:{port}"
    # The job runner serves GenAI jobs (judges, prompt optimisation) that browsing runs never needs.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_TRACKING_URI": uri}
    # SIGTERM (from `kill`, systemd, supervisord) would end this process at once, skipping the
    # `finally` below and leaving the server running: turn it into an exception, as Ctrl-C is.
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    process: subprocess.Popen | None = None
    try:
        # Its own process group, so that the server and its uvicorn child are stopped together;
        # Ctrl-C then reaches only this process, which stops the group below.
        process = subprocess.Popen(server_command(uri, port), env=env, start_new_session=True)
        wait_until_up(url, process)
        print(f"MLflow UI: {url}  (store {uri})", flush=True)
        if experiment:
            for line in experiment_lines(uri, url, experiment):
                print(line, flush=True)
        print("Ctrl-C stops it.", flush=True)
        return process.wait()
    except (KeyboardInterrupt, _Terminated):
        return 0
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        try:
            if process is not None:
                stop_process_group(process)
        finally:
            if on_main_thread:
                signal.signal(signal.SIGTERM, previous)
