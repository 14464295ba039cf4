"""The MLflow UI shows the comparison: `surrogate-search ui`, and headless Chromium on the pages a
user opens (the experiment's runs, and the compare view of the comparison's child runs).

Screenshots are kept under tests/artifacts/ (ignored by git; the browser is tests/conftest.py's
``open_page``); their paths are printed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from surrogate_search.tracking import finish_run, start_parent_run, start_run, trial_logger
from surrogate_search.tracking.ui import compare_url

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # as tests/conftest.py's open_page keeps them


@pytest.mark.slow
def test_browser_shows_the_comparison_runs(smoke_comparison, mlflow_server, open_page) -> None:
    children = smoke_comparison.children
    search = urllib.parse.quote("tags.search_id = 'smoke-compare'")
    experiment_page = f"{mlflow_server.uri}/#/experiments/{smoke_comparison.experiment_id}/runs?searchFilter={search}"
    text = open_page(experiment_page, ARTIFACTS / "mlflow_experiment_runs.png")
    assert "imbalanced_tabular_breast_cancer" in text and "Training runs" in text
    assert "smoke-compare" in text  # the comparison's parent run, its children folded under it
    assert f"{len(children) + 1} matching runs" in text
    assert (ARTIFACTS / "mlflow_experiment_runs.png").read_bytes()[:4] == b"\x89PNG"

    text = open_page(compare_url(mlflow_server.uri, smoke_comparison.experiment_id, [c.info.run_id for c in children]),
                     ARTIFACTS / "mlflow_compare_runs.png")
    assert f"Comparing {len(children)} Runs" in text
    for child in children:
        assert child.info.run_name in text and child.info.run_id in text
    assert "test/f1" in text and "surrogate.encoder" in text


def process_tree(root: int) -> dict[int, str]:
    """Every live descendant of ``root`` (read from /proc): pid -> its start time, which tells a
    process from a later one that happens to get the same pid."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we read
            continue
        pid = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)
        starts[pid] = fields[19]
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = starts[pid]
        todo.extend(children.get(pid, []))
    return found


def still_running(pid: int, start: str) -> bool:
    """Whether process ``pid`` started at ``start`` still exists (zombies count as gone: they run nothing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == start and fields[0] != "Z"


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:``port`` and a new server could bind it (SO_REUSEADDR, as
    servers set it, so that closed connections in TIME_WAIT do not count)."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_ui_command_serves_the_local_store_and_stops_on_sigterm(tmp_path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start_run("ui-smoke", {"lr": 0.1}, tracking_uri=store, run_name="ui smoke run").finish()
    parent = start_parent_run("ui-smoke", "compare-ui", kind="comparison", tracking_uri=store)
    children = [trial_logger(parent, f"{m}-seed0", tracking_uri=store) for m in ("proxy", "relational")]
    for child in children:
        child.finish()
    finish_run(parent, tracking_uri=store)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-m", "surrogate_search.cli", "ui", "--port", str(port),
                                "--tracking-uri", store, "--experiment", "ui-smoke"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    tree: dict[int, str] = {}
    try:
        lines = []
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not any("Ctrl-C" in line for line in lines):
            line = process.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
        out = "".join(lines)
        assert f"MLflow UI: http://127.0.0.1:{port}" in out, out[-3000:]
        assert f"experiment ui-smoke: http://127.0.0.1:{port}/#/experiments/" in out
        compare_line = next(line for line in lines if line.startswith("compare view of comparison compare-ui (2 runs): "))
        assert all(child.run_id in urllib.parse.unquote(compare_line) for child in children)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            assert response.status == 200

        # Stopped as `kill` or a process manager stops it: SIGTERM to the ui process alone, not its group.
        tree = process_tree(process.pid)
        assert tree, "the ui started no server process"
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        deadline = time.monotonic() + 10  # orphans that got the signal may still be exiting
        while time.monotonic() < deadline and any(still_running(p, s) for p, s in tree.items()):
            time.sleep(0.2)
        left = {p: Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                for p, s in tree.items() if still_running(p, s)}
        assert not left, f"processes of the ui left running after SIGTERM: {left}"
        assert port_is_free(port), f"port {port} still taken after the ui stopped"
        assert code == 0, f"the ui exited with {code} on SIGTERM"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        for pid, start in tree.items():  # whatever a failed stop left behind, by pid
            if still_running(pid, start):
                os.kill(pid, signal.SIGKILL)
