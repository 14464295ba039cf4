"""Shared test setup: every test writes its caches and MLflow records under a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# Two cores here: keep torch from oversubscribing when Ray or pytest run work side by side.
torch.set_num_threads(min(2, os.cpu_count() or 1))


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
def retrieval_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A (barely trained) embedding model on a few images per character."""
    from surrogate_search.checkpoint import load_checkpoint
    from surrogate_search.pretrain import pretrain
    from surrogate_search.tasks import get_task

    out = tmp_path_factory.mktemp("base_retrieval")
    pretrain(get_task("retrieval", train_per_class=4, val_per_class=3, test_per_class=3), out, max_epochs=1, patience=1)
    return load_checkpoint(out)
