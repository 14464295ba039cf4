"""Servers the tests start on this machine: a free port on 127.0.0.1, and a real ``mlflow server``."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from surrogate_search.tracking.ui import start_server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:``port`` over ``folder/mlflow.db``, in its own process group."""
    return start_server(f"sqlite:///{folder / 'mlflow.db'}", port, artifacts_destination=folder / "artifacts",
                        cwd=folder)
