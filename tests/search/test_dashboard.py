"""``surrogate-search dashboard``: what it serves and how it fails. A real browser on a finished
smoke search is in ``test_tune.py``, which has the search."""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from pathlib import Path

import optuna
import pytest

from surrogate_search.cli import main
from surrogate_search.search.dashboard import INSTALL_HINT, DashboardServer


@pytest.fixture
def search_dir(tmp_path: Path) -> Path:
    """A search folder whose study has one trial, as a search leaves it."""
    study = optuna.create_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}", direction="maximize")
    study.enqueue_trial({"lr": 0.01})
    study.optimize(lambda trial: trial.suggest_float("lr", 1e-5, 1.0, log=True), n_trials=1)
    return tmp_path


def test_serves_the_study_on_localhost(search_dir: Path) -> None:
    server = DashboardServer.open(search_dir, port=0)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        assert server.url.startswith("http://127.0.0.1:") and server.studies == [(1, "tiny", 1)]
        with urllib.request.urlopen(f"{server.url}/api/studies/1", timeout=30) as response:
            study = json.loads(response.read())
        assert study["name"] == "tiny" and [t["params"][0]["param_external_value"] for t in study["trials"]] == ["0.01"]
    finally:
        server.shutdown()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_a_folder_without_a_study_names_what_to_pass(tmp_path: Path, capsys) -> None:
    assert main(["dashboard", str(tmp_path)]) == 2
    assert f"{tmp_path} holds no optuna.db: pass a search's folder, e.g. runs/search/<space name>" in capsys.readouterr().err


def test_without_the_extra_it_says_how_to_install_it(search_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if not installed
    assert main(["dashboard", str(search_dir)]) == 2
    assert INSTALL_HINT in capsys.readouterr().err and "pip install -e '.[dashboard]'" in INSTALL_HINT
