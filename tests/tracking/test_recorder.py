"""A recorded comparison and a recorded post-tuning, as a user finds them in the MLflow server."""

from __future__ import annotations

import subprocess

import mlflow.pytorch
import pytest
import torch

from surrogate_search.cli import main
from surrogate_search.tracking.model_registry import fetch_surrogate
from surrogate_search.tracking.store import use_tracking_uri


def test_comparison_is_a_parent_run_with_a_child_per_method_and_seed(smoke_comparison, mlflow_server) -> None:
    parent, children = smoke_comparison.parent, smoke_comparison.children
    assert smoke_comparison.experiment == "imbalanced_tabular_breast_cancer"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["task"] == "imbalanced_tabular" and parent.data.tags["metric"] == "f1"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert parent.data.tags["mlflow.source.git.commit"] == commit
    assert sorted(c.info.run_name for c in children) == [
        "deep_embedding seed 0", "deep_embedding seed 1", "proxy seed 0", "proxy seed 1"]
    for child in children:
        tags, params = child.data.tags, child.data.params
        assert child.info.status == "FINISHED"
        assert child.info.experiment_id == smoke_comparison.experiment_id
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["search_id"] == "smoke-compare" and tags["task"] == "imbalanced_tabular"
        assert tags["mlflow.source.git.commit"] == commit
        assert tags["seed"] == params["seed"] and tags["method"] == params["method"]
        # the same budget for every method; the surrogate's sections only where a surrogate is learned
        assert params["steps"] == "4" and params["eval_every"] == "2"
        assert tags["learned"] == ("true" if tags["method"] == "deep_embedding" else "false")
        if tags["method"] == "deep_embedding":
            assert params["surrogate.warmup_steps"] == "2" and params["surrogate.encoder"] == "deepsets"
        else:
            assert not any(key.startswith(("surrogate.", "sampling.")) for key in params)
    learned = [c for c in children if c.data.tags["method"] == "deep_embedding"]
    assert {c.data.tags["surrogate"] for c in learned} == {"deep_embedding/deepsets"}
    # Every seed's surrogate can be started from, not only the registered one.
    for child in learned:
        saved = fetch_surrogate(child.data.tags["surrogate_uri"], tracking_uri=mlflow_server.uri)
        assert saved.method == "deep_embedding" and saved.state
    assert not any("surrogate_uri" in c.data.tags for c in children if c not in learned)
    assert {c.data.tags["sampling"] for c in learned} == {"local_global"}
    assert {c.data.tags["surrogate"] for c in children if c.data.tags["method"] == "proxy"} == {"none"}


def test_children_hold_metrics_at_every_evaluation_step(smoke_comparison, tracking_client) -> None:
    for child in smoke_comparison.children:
        run_id = child.info.run_id
        objective = tracking_client.get_metric_history(run_id, "objective")
        assert [m.step for m in objective] == [2, 4]
        val_f1 = {m.step: m.value for m in tracking_client.get_metric_history(run_id, "val/f1")}
        assert {m.step: m.value for m in objective} == val_f1  # the objective is the validation F1
        assert [m.step for m in tracking_client.get_metric_history(run_id, "val/proxy_loss")] == [2, 4]
        assert 0.0 <= child.data.metrics["test/f1"] <= 1.0
        if child.data.tags["method"] == "deep_embedding":
            for name in ("fidelity/global_spearman", "fidelity/local_noisy_spearman", "fidelity/global_mae"):
                assert [m.step for m in tracking_client.get_metric_history(run_id, name)] == [2, 4], name
        else:
            assert "fidelity/global_spearman" not in child.data.metrics


def test_comparison_artifacts_config_plots_and_table(smoke_comparison, tracking_client, tmp_path) -> None:
    parent_id = smoke_comparison.parent.info.run_id
    files = {a.path for a in tracking_client.list_artifacts(parent_id)}
    files |= {a.path for a in tracking_client.list_artifacts(parent_id, "plots")}
    assert {"config.yaml", "comparison.json", "comparison.txt", "plots/comparison_bars.png",
            "plots/posttune_curves.png"} <= files
    local = tracking_client.download_artifacts(parent_id, "plots/comparison_bars.png", str(tmp_path))
    assert open(local, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    config = open(tracking_client.download_artifacts(parent_id, "config.yaml", str(tmp_path))).read()
    assert "steps: 4" in config and "encoder: deepsets" in config
    for child in smoke_comparison.children:  # each run's curve is its val history, which MLflow charts
        assert [m.step for m in tracking_client.get_metric_history(child.info.run_id, "val/f1")] == [2, 4]
    # the best learned surrogate carries its fidelity scatter
    best = smoke_comparison.parent.data.tags["best_surrogate_run_id"]
    assert best in {c.info.run_id for c in smoke_comparison.children}
    assert "plots/fidelity_scatter.png" in {a.path for a in tracking_client.list_artifacts(best, "plots")}


def test_best_surrogate_is_a_pytorch_model_that_scores_new_predictions(smoke_comparison, mlflow_server) -> None:
    model_uri = smoke_comparison.parent.data.tags["best_surrogate_model_uri"]
    with use_tracking_uri(mlflow_server.uri):
        surrogate = mlflow.pytorch.load_model(model_uri)
    generator = torch.Generator().manual_seed(0)
    targets = (torch.rand(5, 128, generator=generator) < 0.3).float()  # 5 sets of 128 labels
    exact = surrogate(targets.clone(), targets)
    wrong = surrogate(1.0 - targets, targets)
    assert exact.shape == wrong.shape == (5,)
    assert torch.all(exact < 1e-3)  # a prediction equal to its label scores (close to) zero
    assert torch.all(wrong > exact)


def test_cli_prints_where_the_comparison_was_recorded(smoke_comparison, mlflow_server) -> None:
    out = smoke_comparison.output
    assert "deep_embedding" in out and "vs proxy" in out
    assert f"comparison run {smoke_comparison.parent.info.run_id}" in out and mlflow_server.uri in out


def test_cli_posttune_records_a_run(mlflow_server, tracking_client, tabular_checkpoint, smoke_args, capsys) -> None:
    code = main(["-q", "posttune", "--task", "imbalanced_tabular", "--option", "dataset=breast_cancer",
                 "--checkpoint", str(tabular_checkpoint.path.parent), "--method", "anyloss",
                 "--tracking-uri", mlflow_server.uri, "--experiment", "posttune-smoke", "--set", "seed=3",
                 *smoke_args])
    out = capsys.readouterr().out
    assert code == 0, out
    experiment = tracking_client.get_experiment_by_name("posttune-smoke")
    (run,) = tracking_client.search_runs([experiment.experiment_id])
    assert run.info.run_id in out
    assert run.info.status == "FINISHED" and run.info.run_name == "anyloss seed 3"
    assert run.data.params["method"] == "anyloss" and run.data.params["seed"] == "3"
    assert run.data.tags["run_kind"] == "posttune" and "mlflow.parentRunId" not in run.data.tags
    printed_test = float(out.split(", test ")[1].split(",")[0])
    assert run.data.metrics["test/f1"] == pytest.approx(printed_test, abs=5e-5)
