"""Ray fixtures: token authentication always on, with a throwaway token in the environment, so
tests never read or write the real ``~/.ray/auth_token``."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


# Set when this conftest is imported, before any test module imports Ray: Ray reads its
# authentication mode once per process, so a token set later would not be used by this process.
_SAVED = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "PYTHONPATH")}
_TOKEN = secrets.token_hex(32)
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=_TOKEN)
os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
# Ray workers must import this checkout's code, whatever the venv's editable install points at.
_PLATFORM_DIR = str(REPO_ROOT / "platform")
if _PLATFORM_DIR not in (os.environ.get("PYTHONPATH") or "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_PLATFORM_DIR, os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(scope="session")
def ray_token() -> Iterator[str]:
    saved = _SAVED
    assert os.environ["RAY_AUTH_MODE"] == "token"
    yield _TOKEN
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def local_ray(ray_token: str) -> Iterator[None]:
    """An in-process Ray instance of this machine's size, shut down after the module. Its Ray Train
    controllers poll their workers every 0.1 s (a search's every 0.5 s, Ray's default 2 s): a
    controller takes in one report per poll, and these tests' runs report every few updates."""
    import ray

    from surrogate_search.search.tune import worker_env

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {**worker_env(), "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}})
    try:
        yield
    finally:
        ray.shutdown()
