"""Ray fixtures: token authentication always on, with a throwaway token in the environment, so
tests never read or write the real ``~/.ray/auth_token``."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ray_token() -> Iterator[str]:
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "PYTHONPATH")}
    token = secrets.token_hex(32)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    # Ray workers must import this checkout's code, whatever the venv's editable install points at.
    platform_dir = str(REPO_ROOT / "platform")
    if platform_dir not in (os.environ.get("PYTHONPATH") or "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (platform_dir, os.environ.get("PYTHONPATH")) if p)
    yield token
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def local_ray(ray_token: str) -> Iterator[None]:
    """An in-process Ray instance of this machine's size, shut down after the module."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
