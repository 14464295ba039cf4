"""The API the Ray search calls: a parent run per search, a child run per trial, resume-safe."""

from __future__ import annotations

import logging
import os
import pickle

import pytest
from mlflow.tracking import MlflowClient

from surrogate_search.config import PostTuneConfig
from surrogate_search.tracking import (
    NullLogger,
    finish_run,
    start_run,
    start_search_run,
    trial_logger,
    tracked_posttune,
)
from surrogate_search.tracking.ui import stop_process_group
from local_servers import free_port, start_mlflow_server


def children(client, parent_id: str):
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
                              order_by=["attributes.start_time ASC"])


def test_resumed_search_reuses_its_runs_and_kills_the_interrupted_ones(mlflow_server, tracking_client) -> None:
    uri = mlflow_server.uri
    parent = start_search_run("search-resume", "sweep-1", {"space": "tabular.yaml", "num_samples": 4},
                              tracking_uri=uri)
    interrupted = trial_logger(parent, "trial_0", {"lr": 0.001}, {"surrogate": "relational"}, tracking_uri=uri)
    interrupted.log({"objective": 0.5}, step=1)
    with trial_logger(parent, "trial_1", {"lr": 0.01}, tracking_uri=uri) as done:
        done.log({"objective": 0.7}, step=1)
    # the driver dies here: trial_0 is left RUNNING; the search is started again with the same id
    assert tracking_client.get_run(interrupted.run_id).info.status == "RUNNING"

    assert start_search_run("search-resume", "sweep-1", {"space": "tabular.yaml", "num_samples": 4},
                            tracking_uri=uri) == parent
    assert tracking_client.get_run(interrupted.run_id).info.status == "KILLED"
    assert tracking_client.get_run(done.run_id).info.status == "FINISHED"

    with trial_logger(parent, "trial_0", {"lr": 0.001}, tracking_uri=uri) as again:
        assert again.run_id == interrupted.run_id  # the same run, continued
        again.log({"objective": 0.6}, step=2)
    finish_run(parent, tracking_uri=uri)

    runs = children(tracking_client, parent)
    assert sorted(r.data.tags["trial_key"] for r in runs) == ["trial_0", "trial_1"]  # no duplicates
    assert {r.info.status for r in runs} == {"FINISHED"}
    history = tracking_client.get_metric_history(interrupted.run_id, "objective")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.6)]
    assert tracking_client.get_run(parent).info.status == "FINISHED"
    parents = tracking_client.search_runs([tracking_client.get_run(parent).info.experiment_id],
                                          filter_string="tags.run_kind = 'search'")
    assert len(parents) == 1


def test_finishing_a_search_closes_trials_left_running(mlflow_server, tracking_client) -> None:
    parent = start_search_run("search-finish", "sweep-2", tracking_uri=mlflow_server.uri)
    stale = trial_logger(parent, "trial_0", tracking_uri=mlflow_server.uri)
    finish_run(parent, tracking_uri=mlflow_server.uri)
    assert tracking_client.get_run(stale.run_id).info.status == "KILLED"
    assert tracking_client.get_run(stale.run_id).data.tags["interrupted"] == "true"


def test_failed_trial_is_failed_with_its_error_and_the_sweep_goes_on(mlflow_server, tracking_client,
                                                                     tabular_checkpoint, tmp_path) -> None:
    uri = mlflow_server.uri
    parent = start_search_run("search-failure", "sweep-3", tracking_uri=uri)
    bad = PostTuneConfig.from_dotted({"method": "proxy", "steps": 2, "batch_size": 128, "lr": -0.5})
    with pytest.raises(ValueError, match=r"lr must be in \(0, 1\]"):
        with trial_logger(parent, "trial_bad", bad.params(), tracking_uri=uri) as trial:
            tracked_posttune(bad, tabular_checkpoint, trial)
    good = PostTuneConfig.from_dotted({"method": "proxy", "steps": 2, "eval_every": 1, "batch_size": 128})
    with trial_logger(parent, "trial_good", good.params(), tracking_uri=uri) as trial:
        tracked_posttune(good, tabular_checkpoint, trial)
    finish_run(parent, tracking_uri=uri)

    runs = {r.data.tags["trial_key"]: r for r in children(tracking_client, parent)}
    failed = runs["trial_bad"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["error"].startswith("ValueError: post-tuning config: lr must be in (0, 1] ")
    error_file = tracking_client.download_artifacts(failed.info.run_id, "error.txt", str(tmp_path))
    assert "Traceback" in open(error_file).read()
    assert runs["trial_good"].info.status == "FINISHED"
    assert [m.step for m in tracking_client.get_metric_history(runs["trial_good"].info.run_id, "objective")] == [1, 2]


def test_only_rank_zero_records_and_the_logger_pickles(mlflow_server, tracking_client) -> None:
    parent = start_search_run("search-ranks", "sweep-4", tracking_uri=mlflow_server.uri)
    other = trial_logger(parent, "trial_0", {"lr": 0.1}, tracking_uri=mlflow_server.uri, rank=1)
    assert isinstance(other, NullLogger)
    other.log({"objective": 1.0}, step=1)
    other.finish("FAILED", "ignored")
    assert children(tracking_client, parent) == []

    trial = trial_logger(parent, "trial_0", {"lr": 0.1}, tracking_uri=mlflow_server.uri, rank=0)
    shipped = pickle.loads(pickle.dumps(trial))  # what Ray does to send it to a worker
    shipped.log({"objective": 0.25}, step=3)
    shipped.finish()
    (run,) = children(tracking_client, parent)
    assert run.info.run_id == trial.run_id and run.info.status == "FINISHED"
    assert run.data.metrics["objective"] == 0.25


def test_credentials_are_never_logged_as_parameters(mlflow_server, tracking_client) -> None:
    parent = start_search_run("search-secrets", "sweep-5", tracking_uri=mlflow_server.uri)
    trial = trial_logger(parent, "trial_0", {"lr": 0.1, "ray.auth_token": "s3cr3t", "aws": {"api_key": "k"}},
                         tracking_uri=mlflow_server.uri)
    trial.finish()
    params = tracking_client.get_run(trial.run_id).data.params
    assert params == {"lr": "0.1"}


@pytest.mark.slow
def test_a_server_that_goes_away_mid_run_costs_no_record_and_no_wait(tmp_path, caplog) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp_path, port)
    try:
        run = start_run("outage", {"lr": 0.1}, tracking_uri=uri)
        run.log({"val/f1": 0.5}, step=1)
        run.log({"val/f1": 0.6}, step=2)
        assert run.flush() == 0
        stop_process_group(server)  # the server goes away in the middle of the run

        with caplog.at_level(logging.WARNING, logger="surrogate_search.tracking.runs"):
            run.log({"val/f1": 0.7}, step=3)  # no exception, no wait: training goes on
            run.log({"val/f1": 0.8, "final": 1.0}, step=4)
            run.set_tags({"note": "written while down"})
            assert run.flush() == 3  # one attempt, refused at once: kept, not dropped
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert f"MLflow tracking server {uri} did not take the metrics of run {run.run_id}" in warnings[0]
        assert "metrics are kept and sent when it answers again" in warnings[0] and "training goes on" in warnings[0]
        assert len([w for w in warnings if "did not take" in w]) == 1  # one warning for the outage, not one per call

        # What was recorded before the outage is intact (read from the server's own store).
        store = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        history = store.get_metric_history(run.run_id, "val/f1")
        assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.6)]
        assert store.get_run(run.run_id).info.status == "RUNNING"

        # The server comes back: what was kept is sent, once, with what comes next. (A run that
        # ends while the server is down gives its queue up: a search's trials keep their rows in
        # metrics.jsonl, from which tests/search/test_outage.py has them recorded.)
        server = start_mlflow_server(tmp_path, port)
        caplog.clear()
        run.retry_after_s = 0.0
        with caplog.at_level(logging.WARNING, logger="surrogate_search.tracking.runs"):
            run.log({"val/f1": 0.9}, step=5)
            run.finish()
        assert any(f"MLflow tracking server {uri} answers again: run {run.run_id} is recorded again" in r.getMessage()
                   for r in caplog.records)
        back = MlflowClient(tracking_uri=uri)
        assert [(m.step, m.value) for m in back.get_metric_history(run.run_id, "val/f1")] == \
            [(1, 0.5), (2, 0.6), (3, 0.7), (4, 0.8), (5, 0.9)]
        assert [m.step for m in back.get_metric_history(run.run_id, "final")] == [4]
        assert back.get_run(run.run_id).info.status == "FINISHED"
    finally:
        stop_process_group(server)
