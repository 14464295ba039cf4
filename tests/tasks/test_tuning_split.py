"""The tuning part: data the base model never trained on, where post-tuning updates the model."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from surrogate_search.tasks import Split, Splits, Task, get_task


def rows(split: Split, key: str) -> set[bytes]:
    return {t.numpy().tobytes() for t in split.tensors[key]}


def test_text_tuning_images_are_fresh_renders(tiny_text_options) -> None:
    task = get_task("synthetic_text", **tiny_text_options)
    splits = task.splits()
    assert len(splits.tune) == tiny_text_options["train_size"] // 2  # tune_size 0: half train_size
    assert len(splits.train) == tiny_text_options["train_size"]  # nothing taken from train
    assert not rows(splits.tune, "images") & rows(splits.train, "images")
    sized = get_task("synthetic_text", **{**tiny_text_options, "tune_size": 20}).splits()
    assert len(sized.tune) == 20
    with pytest.raises(ValueError, match="tune_size must be an integer >= 0, got -1"):
        get_task("synthetic_text", tune_size=-1)


def test_tabular_tuning_part_is_carved_out_of_train_and_disjoint() -> None:
    task = get_task("imbalanced_tabular", dataset="breast_cancer")
    raw, splits = task.load_splits(), task.splits()
    assert len(splits.train) + len(splits.tune) == len(raw.train)
    assert len(splits.tune) == round(task.tuning_fraction * len(raw.train))
    assert not rows(splits.tune, "features") & rows(splits.train, "features")
    assert rows(splits.tune, "features") | rows(splits.train, "features") == rows(raw.train, "features")
    again = task.splits()
    assert torch.equal(again.tune.tensors["features"], splits.tune.tensors["features"])  # seeded


class ThreeSplits(Task):
    """What a user registers: train/val/test only."""

    name = "three_splits"
    metric_name = "accuracy"

    def load_splits(self, cache_dir=None) -> Splits:
        def split(n: int, start: int) -> Split:
            x = torch.arange(start, start + n, dtype=torch.float32).unsqueeze(1)
            return Split({"x": x}, [int(v) % 2 for v in range(start, start + n)])
        return Splits(split(50, 0), split(10, 100), split(10, 200))

    def build_model(self, **model_options):
        return torch.nn.Linear(1, 1)

    def forward(self, model, batch):
        return model(batch.tensors["x"]).squeeze(-1)

    def proxy_loss(self, outputs, batch):
        return outputs.pow(2).mean()

    def predict(self, outputs):
        return outputs.sigmoid()

    def decode(self, predictions):
        return (predictions > 0.5).long().tolist()


def test_a_user_task_gets_a_tuning_part_its_base_never_trains_on(tmp_path, caplog) -> None:
    from surrogate_search.pretrain import pretrain

    task = ThreeSplits()
    splits = task.splits()
    assert (len(splits.train), len(splits.tune)) == (40, 10)
    assert not set(splits.tune.tensors["x"].flatten().tolist()) & set(splits.train.tensors["x"].flatten().tolist())
    with caplog.at_level(logging.INFO, logger="surrogate_search.pretrain"):
        pretrain(task, tmp_path, max_epochs=1)
    assert "40 train / 10 val / 10 test samples" in caplog.text


def test_posttune_updates_on_the_tuning_part_unless_told_otherwise(tabular_checkpoint) -> None:
    from surrogate_search.config import PostTuneConfig
    from surrogate_search.posttune import posttune

    task = tabular_checkpoint.build_task()
    config = PostTuneConfig.for_task(task, {"method": "proxy", "steps": 2, "eval_every": 2})
    assert config.data == "tune"
    raw = task.load_splits()  # no tuning part: post-tuning has nowhere to update
    with pytest.raises(KeyError, match="unknown split 'tune'"):
        posttune(config, tabular_checkpoint, splits=raw)
    assert posttune(config.replace(data="train"), tabular_checkpoint, splits=raw).steps == 2
    with pytest.raises(ValueError, match="data must be 'tune' or 'train', got 'val'"):
        config.replace(data="val")
    assert np.isfinite(posttune(config, tabular_checkpoint).test["f1"])
