"""Where runs go: an absolute URI, checked before any training starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from surrogate_search.cli import main
from surrogate_search.tracking import TrackingUnavailableError, check_tracking_store, resolve_tracking_uri


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def test_relative_store_is_made_absolute_against_the_launch_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolve_tracking_uri("sqlite:///runs/mlflow.db") == f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
    assert resolve_tracking_uri("mlruns") == (tmp_path / "mlruns").resolve().as_uri()
    assert resolve_tracking_uri("http://10.0.0.5:5000") == "http://10.0.0.5:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from_env.db")
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/from_env.db"


def test_server_that_is_down_is_named(mlflow_server) -> None:
    check_tracking_store(mlflow_server.uri)  # the live one passes
    down = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(TrackingUnavailableError, match=f"MLflow tracking server {down} is not reachable"):
        check_tracking_store(down, timeout=2)


@pytest.mark.parametrize("command", ["compare", "posttune"])
def test_cli_fails_before_any_training_when_the_server_is_down(command, tmp_path, capsys) -> None:
    down = f"http://127.0.0.1:{closed_port()}"
    checkpoint = tmp_path / "base"  # missing: a run that got as far as training would pretrain it first
    code = main(["-q", command, "--task", "imbalanced_tabular", "--checkpoint", str(checkpoint),
                 "--tracking-uri", down, "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: MLflow tracking server {down} is not reachable" in err and "--no-track" in err
    assert not checkpoint.exists()


def test_report_on_a_missing_local_store_does_not_create_one(tmp_path, capsys) -> None:
    store = tmp_path / "nowhere" / "mlflow.db"
    assert main(["report", "--experiment", "synthetic_text", "--tracking-uri", f"sqlite:///{store}"]) == 2
    assert f"no MLflow store at sqlite:///{store}" in capsys.readouterr().err
    assert not Path(store).exists()
