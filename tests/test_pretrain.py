from __future__ import annotations

import json

import pytest
import torch

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


def test_fresh_data_trains_every_later_epoch_on_images_no_split_holds(tmp_path, tiny_text_options, monkeypatch) -> None:
    task = get_task("synthetic_text", **tiny_text_options, tune_size=32)
    splits = task.splits(tmp_path / "cache")
    trained_on: list[list[str]] = []
    forward = type(task).forward

    def recording_forward(self, model, batch):
        if model.training:  # a training step, not an evaluation
            trained_on[-1].extend(batch.labels)
        return forward(self, model, batch)

    fresh = type(task).fresh_train_split

    def next_epoch(self, epoch):
        trained_on.append([])
        return fresh(self, epoch)

    monkeypatch.setattr(type(task), "forward", recording_forward)
    monkeypatch.setattr(type(task), "fresh_train_split", next_epoch)
    trained_on.append([])  # epoch 1: the train split
    result = pretrain(task, tmp_path / "fresh", cache_dir=tmp_path / "cache", max_epochs=3, patience=3, fresh_data=True)

    assert result.epochs == 3 and result.fresh_data and result.samples_seen == 3 * 64  # 96 images, batches of 64
    assert len(trained_on) == 3 and all(len(labels) == 64 for labels in trained_on)
    assert set(trained_on[0]) <= set(splits.train.labels)
    # Epochs 2 and 3 render images of their own: not a split's, not each other's.
    second, third = task.fresh_train_split(2), task.fresh_train_split(3)
    held = torch.cat([split.tensors["images"] for split in (splits.train, splits.val, splits.test, splits.tune)])
    for images in (second.tensors["images"], third.tensors["images"]):
        assert not (images[:, None] == held[None]).flatten(2).all(-1).any()
    assert not torch.equal(second.tensors["images"], third.tensors["images"])
    assert torch.equal(second.tensors["images"], task.fresh_train_split(2).tensors["images"])  # reproducible
    assert json.loads((tmp_path / "fresh" / "metrics.json").read_text())["fresh_data"] is True


def test_fresh_data_is_refused_for_a_fixed_dataset_before_any_training(tmp_path, capsys) -> None:
    code = main(["pretrain", "--task", "imbalanced_tabular", "--out", str(tmp_path / "base"), "--fresh-data"])
    assert code == 2
    assert "task 'imbalanced_tabular' has a fixed dataset and cannot make fresh training data" in capsys.readouterr().err
    assert not (tmp_path / "base").exists()
