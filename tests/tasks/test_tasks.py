"""Every registered task: seeded splits, a model whose outputs decode into the metric's terms."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from surrogate_search.registry import UnknownNameError
from surrogate_search.tasks import get_task, list_tasks

TINY: dict[str, dict[str, Any]] = {
    "synthetic_text": {"train_size": 48, "val_size": 16, "test_size": 16},
    "imbalanced_tabular": {"dataset": "breast_cancer"},
    "box_localization": {"train_size": 48, "val_size": 16, "test_size": 16},
    "retrieval": {"train_per_class": 3, "val_per_class": 3, "test_per_class": 3},
    "rotated_box": {"train_size": 48, "val_size": 16, "test_size": 16},
}


def test_every_builtin_task_has_tiny_options() -> None:
    assert set(list_tasks()) == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_splits_are_seeded_and_disjoint_in_size(name: str) -> None:
    a = get_task(name, seed=0, **TINY[name]).load_splits()
    b = get_task(name, seed=0, **TINY[name]).load_splits()
    c = get_task(name, seed=1, **TINY[name]).load_splits()
    for split in ("train", "val", "test"):
        assert a[split].labels == b[split].labels
        for key, tensor in a[split].tensors.items():
            assert torch.equal(tensor, b[split].tensors[key])
    assert a.train.labels != c.train.labels  # another seed, other data
    assert len(a.train) > len(a.val) > 0 and len(a.test) > 0


@pytest.mark.parametrize("name", sorted(TINY))
def test_model_outputs_decode_and_evaluate(name: str) -> None:
    task = get_task(name, **TINY[name])
    splits = task.load_splits()
    model = task.build_model()
    batch = next(splits.train.batches(8))
    outputs = task.forward(model, batch)
    loss = task.proxy_loss(outputs, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    predictions = task.predict(outputs)
    # probabilities, boxes as fractions of the image; unit-length embeddings for retrieval
    low = -1 if name == "retrieval" else 0
    if name == "rotated_box":  # and the angle of a rotated box, in radians
        assert predictions[:, 4].abs().max() <= math.pi / 2
        predictions = predictions[:, :4]
    assert predictions.min() >= low and predictions.max() <= 1
    decoded = task.decode(task.predict(outputs))
    assert len(decoded) == len(batch)
    assert 0 <= task.metric.compute(decoded, batch.labels) < float("inf")  # what the metric reads
    results = task.evaluate(model, splits.val)
    assert {task.metric_name, *task.report_metrics, "proxy_loss"} <= set(results)


def test_unknown_task_lists_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="unknown task 'synthetic'; known tasks: box_localization, imbalanced_tabular, retrieval, rotated_box, synthetic_text"):
        get_task("synthetic")


def test_bad_task_options_name_the_value() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'iris'; known: \\['breast_cancer', 'digits', 'synthetic'\\]"):
        get_task("imbalanced_tabular", dataset="iris")
    with pytest.raises(ValueError, match="unknown option\\(s\\) \\['train_sise'\\]"):
        get_task("synthetic_text", train_sise=10)
    with pytest.raises(ValueError, match="train_size must be an integer >= 1, got -5"):
        get_task("synthetic_text", train_size=-5)


def test_the_synthetic_tabular_set_takes_a_size_and_its_base_folder_names_it() -> None:
    from surrogate_search.pretrain import default_checkpoint_dir

    default, large = get_task("imbalanced_tabular"), get_task("imbalanced_tabular", samples=8000)
    rows = {name: sum(len(split.labels) for split in (s.train, s.tune, s.val, s.test)) for name, s in
            (("default", default.splits()), ("large", large.splits()))}
    assert rows == {"default": 4000, "large": 8000}
    assert 0.04 < sum(large.splits().test.labels) / len(large.splits().test.labels) < 0.07  # still 5% positives
    assert default.options == {"dataset": "synthetic"}  # checkpoints made before the option still match
    assert default_checkpoint_dir(large).name == "base_imbalanced_tabular_synthetic_8000"
    with pytest.raises(ValueError, match="'samples' sizes the synthetic dataset only; dataset 'digits' has a fixed size"):
        get_task("imbalanced_tabular", dataset="digits", samples=8000)
    with pytest.raises(ValueError, match="samples must be an integer >= 1000 \\(50 positives\\), got 10"):
        get_task("imbalanced_tabular", samples=10)


def test_shards_partition_a_split() -> None:
    split = get_task("imbalanced_tabular", dataset="breast_cancer").load_splits().train
    shards = [split.shard(rank, 3) for rank in range(3)]
    assert sum(len(s) for s in shards) == len(split)
    assert sorted(sum((s.labels for s in shards), [])) == sorted(split.labels)
