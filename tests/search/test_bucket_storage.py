"""``search --storage s3://bucket/searches``: a search whose checkpoints and trial rows live in a
bucket, against a real S3 API server (moto) on 127.0.0.1, reached as a user's cluster reaches
MinIO or S3: through ``AWS_ENDPOINT_URL`` and the AWS credentials in the environment, which Ray's
workers inherit. The study is a SQLite file on this machine (``--study-storage``), as a bucket
cannot hold one. Checked as a user sees it: the search finishes, its files are objects in the bucket
(listed through pyarrow, nothing written to a local ``s3:`` folder), ``surrogate-search sync`` reads
the rows back from the bucket into MLflow exactly once, and ``--resume`` finds the search."""

from __future__ import annotations

import logging
import socket
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from surrogate_search.cli import main
from surrogate_search.search import load_space
from surrogate_search.search.outcome import load_best_config
from surrogate_search.search.storage import Location
from surrogate_search.search.sync import TrialRecord, report_metrics
from surrogate_search.search.train import read_metrics_log
from surrogate_search.search.tune import run_search
from surrogate_search.tracking.replay import row_key
from surrogate_search.tracking.runs import metric_items

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE = REPO_ROOT / "search_spaces" / "tabular_f1_smoke.yaml"
GOOD = {"method": "deep_embedding", "surrogate.encoder": "deepsets", "surrogate.width": 16,
        "surrogate.grad_penalty": 0.1, "surrogate.proxy_weight": 1.0, "lr": 1.0e-5, "sampling.strategy": "global"}
# One-worker trials run inline (no Ray Train start-up), one at a time, every one to its end.
SETTINGS = {"posttune.steps": 8, "budget.workers_per_trial": 1, "budget.concurrency": 1,
            "budget.scheduler.type": "none"}
STORAGE = "s3://bucket/searches"


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 API on 127.0.0.1 with a bucket ``bucket``; the environment points pyarrow at it."""
    pytest.importorskip("moto", reason="moto[server] (the dev extra) runs the S3 API server")
    import pyarrow.fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test-key",
           "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        fs = pyarrow.fs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", region="us-east-1",
                                     access_key="test-key", secret_key="test-secret", allow_bucket_creation=True)
        fs.create_dir("bucket")
        try:
            yield fs
        finally:
            server.stop()


@pytest.fixture(scope="module")
def base_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from surrogate_search.pretrain import pretrain
    from surrogate_search.tasks import get_task

    out = tmp_path_factory.mktemp("base_breast_cancer")
    pretrain(get_task("imbalanced_tabular", dataset="breast_cancer"), out, max_epochs=30, patience=5)
    return str(out)


def objects(fs, prefix: str) -> list[str]:
    import pyarrow.fs

    return sorted(i.path[len(prefix) + 1:] for i in fs.get_file_info(pyarrow.fs.FileSelector(prefix, recursive=True))
                  if i.type == pyarrow.fs.FileType.File)


def expected_rows(rows: list[dict], objective: str) -> Counter:
    expected: Counter = Counter()
    for row in rows:
        step, values = report_metrics(row, objective)
        expected.update(row_key(m) for m in metric_items(values, step))
    return expected


def recorded_rows(client, run_id: str) -> Counter:
    recorded: Counter = Counter()
    for key in client.get_run(run_id).data.metrics:
        recorded.update(row_key(m) for m in client.get_metric_history(run_id, key))
    return recorded


@pytest.mark.slow
def test_a_search_in_a_bucket_keeps_its_rows_there_syncs_them_once_and_resumes(s3_server, ray_token, base_checkpoint_dir,
                                                                              tmp_path, monkeypatch, capsys) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # a bucket URI taken for a folder would show up here as ./s3:
    study = f"sqlite:///{tmp_path / 'study.db'}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = load_space(SMOKE, overrides={"checkpoint": base_checkpoint_dir, "budget.trials": 2, **SETTINGS})
    outcome = run_search(spec, storage=STORAGE, study_storage=study, num_cpus=2, points_to_evaluate=[GOOD],
                         verbose=0, tracking_uri=tracking)
    assert outcome.states == {"COMPLETE": 2}
    assert str(outcome.search_dir) == f"{STORAGE}/tabular_f1_smoke"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("s3:")]

    # The search's files are objects in the bucket; Tune's checkpoints of the trials too.
    listed = objects(s3_server, "bucket/searches/tabular_f1_smoke")
    for name in ("best_config.yaml", "mlflow_search_id", "optuna_storage", "train/trial_0000/metrics.jsonl",
                 "train/trial_0000/mlflow_run.json", "train/trial_0001/metrics.jsonl", "train/trial_0001/mlflow_run.json"):
        assert name in listed, f"{name} not in the bucket: {listed}"
    assert any(n.startswith("tune_0/") and "/checkpoint_" in n for n in listed), listed
    search = Location.of(STORAGE) / "tabular_f1_smoke"
    rows = {t: read_metrics_log(search / "train" / t) for t in ("trial_0000", "trial_0001")}
    # Every evaluation (steps 4 and 8) and the final row, each once.
    assert all([r["final"] for r in trial_rows] == [0.0, 0.0, 1.0] for trial_rows in rows.values()), rows
    with s3_server.open_input_stream("bucket/searches/tabular_f1_smoke/train/trial_0000/metrics.jsonl") as stream:
        assert stream.read().decode().count("\n") == 3
    assert load_best_config(f"{STORAGE}/tabular_f1_smoke")["train_run"] == outcome.best_run  # compare --from-search

    # MLflow missed every row (as through an outage): sync reads them from the bucket, once.
    client = MlflowClient(tracking)
    records = {t: TrialRecord.read(search / "train" / t) for t in rows}
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        for record in records.values():
            db.execute("DELETE FROM metrics WHERE run_uuid = ?", (record.run_id,))
            db.execute("DELETE FROM latest_metrics WHERE run_uuid = ?", (record.run_id,))
    assert main(["-q", "sync", f"{STORAGE}/tabular_f1_smoke"]) == 0
    out = capsys.readouterr().out
    assert "2 trial(s) in sync with MLflow" in out and ": 0 metric value(s) sent" not in out, out
    for trial, record in records.items():
        expected, recorded = expected_rows(rows[trial], spec.metric), recorded_rows(client, record.run_id)
        assert sum(expected.values()) >= 30 and recorded == expected, trial
    assert main(["-q", "sync", f"{STORAGE}/tabular_f1_smoke"]) == 0
    assert capsys.readouterr().out.count(": 0 metric value(s) sent") == 2

    # A second search there without --resume is refused; with it, the search is found and grows.
    argv = ["search", str(SMOKE), "--storage", STORAGE, "--study-storage", study, "--tracking-uri", tracking,
            "--num-cpus", "2", "--set", f"checkpoint={base_checkpoint_dir}",
            *[x for key, value in SETTINGS.items() for x in ("--set", f"{key}={value}")]]
    assert main([*argv, "--study-storage", f"sqlite:///{tmp_path / 'other.db'}"]) == 2
    assert "s3://bucket/searches/tabular_f1_smoke already holds a search: pass --resume" in capsys.readouterr().err
    assert main([*argv, "--resume", "--set", "budget.trials=3"]) == 0
    out = capsys.readouterr().out
    assert f"search {STORAGE}/tabular_f1_smoke: 3 complete" in out, out
    assert read_metrics_log(search / "train" / "trial_0000") == rows["trial_0000"]  # not run again
    assert [r["final"] for r in read_metrics_log(search / "train" / "trial_0002")] == [0.0, 0.0, 1.0]
    parents = client.search_runs([client.get_experiment_by_name("imbalanced_tabular_breast_cancer").experiment_id],
                                 filter_string="tags.space = 'tabular_f1_smoke'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("case", ["no_bucket", "server_down", "gs_unreachable"])
def test_a_bucket_that_cannot_be_used_is_refused_by_name_before_any_work(case, s3_server, tmp_path, monkeypatch,
                                                                         capsys) -> None:
    import ray

    from surrogate_search.search import storage

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(storage, "PROBE_TIMEOUT_S", 5.0)  # a gs:// bucket without network or credentials
    uri, says = {"no_bucket": ("s3://no-such-bucket/searches", "there is no bucket 'no-such-bucket'"),
                 "server_down": ("s3://bucket/searches", ""),
                 "gs_unreachable": ("gs://bucket/searches", "")}[case]
    if case == "server_down":
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    study = f"sqlite:///{tmp_path / 'study.db'}"
    code = main(["search", str(SMOKE), "--storage", uri, "--study-storage", study, "--no-track"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"error: --storage {uri}: ") and says in err and "Traceback" not in err, err
    assert not ray.is_initialized()
    assert not any(p.name.startswith("s3:") or p.name.startswith("gs:") for p in tmp_path.iterdir())
