"""Where runs are recorded: one tracking URI, made absolute once at launch, and checked before any
training starts.

MLflow 3's default store is ``sqlite:///mlflow.db`` relative to the working directory. Ray Tune
moves each trial into its own working directory, so a relative URI handed to a trial would open a
fresh, empty database there. :func:`resolve_tracking_uri` fixes the URI against the directory the
user launched from, and the resolved string is what travels to workers.
"""

from __future__ import annotations

import os
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
"""MLflow 3's own default, when neither ``--tracking-uri`` nor ``MLFLOW_TRACKING_URI`` is set."""


class TrackingUnavailableError(RuntimeError):
    """The tracking store cannot be reached (a server that is down, a folder that cannot be written)."""


def resolve_tracking_uri(uri: str | None = None, base: str | Path | None = None) -> str:
    """The tracking URI to use everywhere, absolute.

    ``uri`` (else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``): a relative SQLite path or
    plain folder is resolved against ``base`` (default: the current directory, i.e. where the
    command was launched); ``http(s)://`` and other URIs pass unchanged.

    >>> resolve_tracking_uri("sqlite:///mlflow.db", base="/home/me/project")
    'sqlite:////home/me/project/mlflow.db'
    """
    uri = (uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI).strip()
    base_dir = Path(base) if base is not None else Path.cwd()
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path == ":memory:" or path.startswith("/"):
            return uri
        return f"sqlite:///{(base_dir / path).resolve()}"
    if uri.startswith("file:"):
        path = urllib.parse.urlparse(uri).path
        return uri if path.startswith("/") else (base_dir / uri[len("file:"):]).resolve().as_uri()
    if "://" not in uri:  # a bare folder: MLflow's file store
        return (base_dir / uri).resolve().as_uri()
    return uri


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_tracking_store(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, with the URI named, when runs could not be recorded there.

    A server must answer its ``/health`` endpoint within ``timeout`` seconds; a SQLite file must lie
    in a folder that exists or can be created."""
    if is_remote(uri):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                if response.status != 200:
                    raise TrackingUnavailableError(
                        f"MLflow tracking server {uri} answered {url} with HTTP {response.status}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingUnavailableError(
                f"MLflow tracking server {uri} is not reachable ({reason}); start it (e.g. `mlflow server "
                f"--host 127.0.0.1 --port PORT --backend-store-uri sqlite:///PATH/mlflow.db`), fix "
                f"--tracking-uri / MLFLOW_TRACKING_URI, or pass --no-track") from None
    elif uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        folder = Path(uri[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingUnavailableError(f"MLflow tracking store {uri}: cannot create {folder} ({exc})") from None
        if not os.access(folder, os.W_OK):
            raise TrackingUnavailableError(f"MLflow tracking store {uri}: folder {folder} is not writable")


_OUTAGE_CODES = frozenset({"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})
"""MLflow error codes of a server that is down, failing or overloaded (how MLflow reports a refused
connection too), as against a request it rejects (a bad value: a bug to raise, not to ride out)."""


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the tracking server could not take a request, not that it refused it."""
    if isinstance(exc, OSError):  # requests' ConnectionError and Timeout are OSErrors too
        return True
    return isinstance(exc, mlflow.exceptions.MlflowException) and exc.error_code in _OUTAGE_CODES


_quick_lock = threading.Lock()
_quick_users = 0
_quick_saved: dict[str, str | None] = {}
QUICK_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@contextmanager
def quick_requests() -> Iterator[None]:
    """MLflow HTTP requests in this block fail at once, after 10 seconds at most, instead of going
    through MLflow's own retries (7, with back-off: minutes per call while a server is down), so
    that the caller decides how long to retry. MLflow reads these settings from the environment on
    every request; the previous values are restored when the last block still open, in any
    thread, ends (a run's metrics are sent from a thread of their own)."""
    global _quick_users
    with _quick_lock:
        if _quick_users == 0:
            _quick_saved.update({key: os.environ.get(key) for key in QUICK_SETTINGS})
            os.environ.update(QUICK_SETTINGS)
        _quick_users += 1
    try:
        yield
    finally:
        with _quick_lock:
            _quick_users -= 1
            if _quick_users == 0:
                for key, value in _quick_saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value


@contextmanager
def environment(**settings: str) -> Iterator[None]:
    """Environment variables set for a block (MLflow reads its settings from them on every call),
    then restored."""
    previous = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def client(uri: str) -> MlflowClient:
    """A client bound to ``uri`` (never to whatever the process-wide default happens to be)."""
    return MlflowClient(tracking_uri=uri)


def experiment_id(uri: str, name: str) -> str:
    """Id of the experiment ``name``, created on first use (two processes racing to create it both
    end with the same id)."""
    mlflow_client = client(uri)
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(found.experiment_id)
        return found.experiment_id
    try:
        # Without this tag MLflow 3's UI opens an experiment on its GenAI (traces) overview.
        return mlflow_client.create_experiment(name, tags={"mlflow.experimentKind": "custom_model_development"})
    except mlflow.exceptions.MlflowException:
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide functions (``mlflow.pytorch.log_model``) at ``uri`` for a block,
    then restore what was set before, environment variable included."""
    from mlflow.tracking._tracking_service import utils

    previous_uri, previous_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils._tracking_uri = previous_uri
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the code that runs (``unknown`` outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"
