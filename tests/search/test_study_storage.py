"""``search --study-storage URL``: the Optuna study in a database that every node of a cluster reaches,
checked before any work. (The search itself on PostgreSQL, with a two-node cluster and an MLflow
server on the same PostgreSQL: tests/search/test_cluster_job.py.)"""

from __future__ import annotations

import optuna
import pytest

from surrogate_search.cli import main
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


def test_an_unreachable_database_is_named_without_its_password(tmp_path, monkeypatch, capsys):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://optuna:s3cret@127.0.0.1:{port}/optuna"
    assert shown_url(url) == f"postgresql://optuna:***@127.0.0.1:{port}/optuna"
    monkeypatch.chdir(REPO_ROOT)
    code = main(["search", "search_spaces/tabular_f1_smoke.yaml", "--storage", str(tmp_path / "searches"),
                 "--study-storage", url, "--no-track"])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert f"--study-storage postgresql://optuna:***@127.0.0.1:{port}/optuna: cannot open it" in err
    assert "Connection refused" in err or "connection failed" in err
    assert "s3cret" not in out + err
    assert "Traceback" not in err
    assert not (tmp_path / "searches").exists()


def test_storage_is_a_folder_a_file_uri_or_a_bucket_and_a_bucket_needs_a_study_database(tmp_path, monkeypatch, capsys):
    from surrogate_search.search.outcome import storage_location

    assert storage_location(tmp_path / "searches").local == tmp_path / "searches"
    assert storage_location(f"file://{tmp_path}/my%20searches").local == tmp_path / "my searches"
    bucket = storage_location("s3://bucket/searches") / "tabular_f1_smoke"
    assert bucket.uri == "s3://bucket/searches/tabular_f1_smoke" and not bucket.is_local  # for Ray, unchanged
    # As a user types it: a bucket without --study-storage is refused before any work, nothing
    # created (no ./s3:/bucket folder), with the way out named.
    monkeypatch.chdir(tmp_path)
    code = main(["search", str(REPO_ROOT / "search_spaces" / "tabular_f1_smoke.yaml"), "--storage",
                 "s3://KEY:s3cret@bucket/searches", "--no-track"])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert "--storage s3://KEY:***@bucket/searches: a bucket cannot hold the Optuna study" in err
    assert "pass --study-storage" in err and "s3cret" not in out + err
    assert list(tmp_path.iterdir()) == []
