"""Processes a command started, found by a marker in their environment (Ray's own included, which
leave the command's process group): for tests that run searches as a user does."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def processes_with(marker: str) -> list[int]:
    """Processes with ``marker`` in their environment."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return found


def left_running(marker: str, grace_s: float = 10.0) -> list[int]:
    """What a finished command left running, given ``grace_s`` to wind down; killed, and returned."""
    deadline = time.monotonic() + grace_s
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = processes_with(marker)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left
