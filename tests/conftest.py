"""Shared test setup: every test writes its caches and MLflow records under a temporary folder."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

# Torch's threads spin while they wait: two threads per process on two cores, with another pytest
# worker beside it (make test runs two), made small tensor work 10x slower. So each pytest worker,
# and every command it starts (they inherit the variable), gets its share of the cores; run alone,
# at most two threads. Set before torch is imported, which reads it once.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)

import torch  # noqa: E402

torch.set_num_threads(THREADS)

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
"""Screenshots of the browser tests (ignored by git); their paths are printed."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules that hold an end-to-end (``slow``) test run first, each keeping its own order. ``make
    test`` hands whole modules to two workers in this order: started first, the minute-long modules
    leave the many short ones to even out the two workers' ends."""
    slow_modules = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow_modules)


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path_factory.getbasetemp() / "state"
    monkeypatch.setenv("SURROGATE_SEARCH_CACHE", str(state / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{state / 'mlflow.db'}")


@pytest.fixture(scope="session")
def tiny_text_options() -> dict[str, int]:
    return {"train_size": 96, "val_size": 32, "test_size": 32}


@pytest.fixture(scope="session")
def tabular_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A quickly pretrained breast-cancer MLP, shared by post-tuning tests."""
    from surrogate_search.checkpoint import load_checkpoint
    from surrogate_search.pretrain import pretrain
    from surrogate_search.tasks import get_task

    out = tmp_path_factory.mktemp("base_tabular")
    pretrain(get_task("imbalanced_tabular", dataset="breast_cancer"), out, max_epochs=30, patience=5)
    return load_checkpoint(out)


@pytest.fixture(scope="session")
def text_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_text_options):
    """A (barely trained) CRNN on a tiny rendered split: enough to exercise every code path."""
    from surrogate_search.checkpoint import load_checkpoint
    from surrogate_search.pretrain import pretrain
    from surrogate_search.tasks import get_task

    out = tmp_path_factory.mktemp("base_text")
    pretrain(get_task("synthetic_text", **tiny_text_options), out, max_epochs=1, patience=1)
    return load_checkpoint(out)


@pytest.fixture(scope="session")
def tiny_box_options() -> dict[str, int]:
    return {"train_size": 96, "val_size": 32, "test_size": 32}


@pytest.fixture(scope="session")
def box_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_box_options):
    """A (barely trained) box regressor on a tiny split: enough to exercise every code path."""
    from surrogate_search.checkpoint import load_checkpoint
    from surrogate_search.pretrain import pretrain
    from surrogate_search.tasks import get_task

    out = tmp_path_factory.mktemp("base_box")
    pretrain(get_task("box_localization", **tiny_box_options), out, max_epochs=2, patience=2)
    return load_checkpoint(out)


@pytest.fixture(scope="session")
def rotated_box_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_box_options):
    """A (barely trained) rotated-box regressor on a tiny split: enough to exercise every code path."""
    from surrogate_search.checkpoint import load_checkpoint
    from surrogate_search.pretrain import pretrain
    from surrogate_search.tasks import get_task

    out = tmp_path_factory.mktemp("base_rotated_box")
    pretrain(get_task("rotated_box", **tiny_box_options), out, max_epochs=2, patience=2)
    return load_checkpoint(out)


@pytest.fixture(scope="session")
def retrieval_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A (barely trained) embedding model on a few images per character."""
    from surrogate_search.checkpoint import load_checkpoint
    from surrogate_search.pretrain import pretrain
    from surrogate_search.tasks import get_task

    out = tmp_path_factory.mktemp("base_retrieval")
    pretrain(get_task("retrieval", train_per_class=4, val_per_class=3, test_per_class=3), out, max_epochs=1, patience=1)
    return load_checkpoint(out)


def chromium() -> str:
    """The headless browser; installed with apt-get when missing, else the test is skipped with the reason."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    print("chromium not found: trying `apt-get install -y chromium`")
    for command in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as exc:
            done = None
            reason = f"{' '.join(command)} could not run: {exc}"
        if done is not None and done.returncode == 0 and shutil.which("chromium"):
            return shutil.which("chromium")  # type: ignore[return-value]
        if done is not None:
            reason = f"{' '.join(command)} failed with code {done.returncode}: {done.stderr.strip()[-300:]}"
    message = f"no headless Chromium for the browser test ({reason})"
    print(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def open_page() -> Callable[[str, Path], str]:
    """``open_page(url, screenshot)``: load ``url`` in headless Chromium (a single-page app: let it run
    20 s of virtual time), save a screenshot, return the page's visible text."""
    browser = chromium()

    def load(url: str, screenshot: Path) -> str:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                               "--virtual-time-budget=20000", f"--screenshot={screenshot}", "--dump-dom", url],
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        print(f"screenshot of {url}: {screenshot}")
        dom = re.sub(r"<(script|style)\b.*?</\1>", " ", done.stdout, flags=re.S)
        return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))

    return load
