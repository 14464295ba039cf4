"""``search --study-storage URL``: the Optuna study in a database that every node of a cluster reaches,
checked before any work. (The search itself on PostgreSQL, with a two-node cluster and an MLflow
server on the same PostgreSQL: tests/search/test_cluster_job.py.)"""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest

from surrogate_search.search.outcome import StorageError
from surrogate_search.search.study import check_study_storage, shown_url
from conftest import REPO_ROOT


def test_a_study_there_already_is_resumed_only_when_asked(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    with pytest.raises(StorageError, match="holds no study 'tabular_f1_smoke'"):
        check_study_storage("tabular_f1_smoke", url, resume=True)
    optuna.create_study(study_name="tabular_f1_smoke", storage=url)
    check_study_storage("tabular_f1_smoke", url, resume=True)
    with pytest.raises(FileExistsError, match="already holds a study 'tabular_f1_smoke'"):
        check_study_storage("tabular_f1_smoke", url, resume=False)


def test_an_unreachable_database_is_named_without_its_password(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://optuna:s3cret@127.0.0.1:{port}/optuna"
    assert shown_url(url) == f"postgresql://optuna:***@127.0.0.1:{port}/optuna"
    done = subprocess.run([sys.executable, "-m", "surrogate_search.cli", "search", "search_spaces/tabular_f1_smoke.yaml",
                           "--storage", str(tmp_path / "searches"), "--study-storage", url, "--no-track"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--study-storage postgresql://optuna:***@127.0.0.1:{port}/optuna: cannot open it" in done.stderr
    assert "Connection refused" in done.stderr or "connection failed" in done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "searches").exists()


def test_storage_is_a_folder_or_a_file_uri_and_a_bucket_is_refused_by_name(tmp_path):
    from surrogate_search.search.outcome import storage_folder

    assert storage_folder(tmp_path / "searches") == tmp_path / "searches"
    assert storage_folder(f"file://{tmp_path}/my%20searches") == tmp_path / "my searches"
    with pytest.raises(StorageError, match=r"--storage s3://bucket/searches: bucket URIs are not supported yet"):
        storage_folder("s3://bucket/searches")
    # As a user types it: refused before any work, nothing created (no ./s3:/bucket folder).
    done = subprocess.run([sys.executable, "-m", "surrogate_search.cli", "search", str(REPO_ROOT / "search_spaces" /
                           "tabular_f1_smoke.yaml"), "--storage", "s3://bucket/searches", "--no-track"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "bucket URIs are not supported yet" in done.stderr
    assert list(tmp_path.iterdir()) == []
