from __future__ import annotations

import json

import pytest

from surrogate_search.checkpoint import load_checkpoint
from surrogate_search.cli import main
from surrogate_search.pretrain import pretrain
from surrogate_search.tasks import get_task


def test_pretrain_stops_at_a_plateau_and_beats_chance(tmp_path) -> None:
    task = get_task("imbalanced_tabular", dataset="breast_cancer")
    # A folder with a dot in its name is still a folder (it was taken for a file name).
    result = pretrain(task, tmp_path / "base_v1.2", patience=5, max_epochs=200)
    assert result.epochs < 200 and result.epochs - result.best_epoch >= 0
    assert result.test["f1"] > 0.85  # malignant vs benign is easy for an MLP
    ckpt = load_checkpoint(tmp_path / "base_v1.2", expected_task="imbalanced_tabular")
    reloaded = task.evaluate(ckpt.build_model(), task.load_splits().test)
    assert reloaded["f1"] == pytest.approx(result.test["f1"])
    saved = json.loads((tmp_path / "base_v1.2" / "metrics.json").read_text())
    assert saved["test"]["f1"] == pytest.approx(result.test["f1"])


def test_cli_pretrain_prints_val_and_test_metrics(tmp_path, capsys, tiny_text_options) -> None:
    options = [f"--option={k}={v}" for k, v in tiny_text_options.items()]
    code = main(["-q", "pretrain", "--task", "synthetic_text", "--out", str(tmp_path / "text"), *options, "--max-epochs", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "checkpoint: " in out and "model.pt" in out
    assert out.count("edit_distance") >= 2 and "test" in out and "val" in out
    assert load_checkpoint(tmp_path / "text").task_options["train_size"] == tiny_text_options["train_size"]
