"""Leaving the base only when val is sure: ``win_share`` and ``leave_base_confidence``."""

from __future__ import annotations

import copy
import sys

import pytest
import torch

from surrogate_search.config import PostTuneConfig
from surrogate_search.posttune import posttune
from surrogate_search.selection import win_share


def wrecked(model: torch.nn.Module) -> torch.nn.Module:
    """The same network with its weights scrambled: worse than the trained one on any half of val."""
    bad = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in bad.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return bad


@pytest.mark.parametrize("at_best_threshold", [False, True])
def test_val_cannot_tell_a_model_from_itself(tabular_checkpoint, at_best_threshold) -> None:
    task = tabular_checkpoint.build_task()
    model = tabular_checkpoint.build_model(task)
    val = task.splits().val
    assert win_share(task, model, copy.deepcopy(model), val, at_best_threshold=at_best_threshold) == 0.5


@pytest.mark.parametrize("at_best_threshold", [False, True])
def test_a_model_better_on_all_of_val_wins_every_half(tabular_checkpoint, at_best_threshold) -> None:
    task = tabular_checkpoint.build_task()
    trained = tabular_checkpoint.build_model(task)
    val = task.splits().val
    bad = wrecked(trained)
    assert task.evaluate(bad, val)["f1"] < task.evaluate(trained, val)["f1"] - 0.2
    assert win_share(task, bad, trained, val, at_best_threshold=at_best_threshold, halves=50) == 1.0
    assert win_share(task, trained, bad, val, at_best_threshold=at_best_threshold, halves=50) == 0.0


def test_a_per_sample_metric_is_weighed_half_by_half(box_checkpoint) -> None:
    # IoU decomposes per sample: each half's score is the mean of the samples in it.
    task = box_checkpoint.build_task()
    trained = box_checkpoint.build_model(task)
    val = task.splits().val
    bad = wrecked(trained)
    assert task.evaluate(bad, val)["iou"] < task.evaluate(trained, val)["iou"] - 0.2
    assert win_share(task, trained, copy.deepcopy(trained), val, at_best_threshold=False) == 0.5
    assert win_share(task, bad, trained, val, at_best_threshold=False, halves=50) == 1.0
    assert win_share(task, trained, bad, val, at_best_threshold=False, halves=50) == 0.0


def test_a_gain_val_is_not_sure_of_keeps_the_base(box_checkpoint, monkeypatch) -> None:
    # The barely trained box model improves on val within a few updates; val's verdict (the share of
    # halves won) is fixed at 0.6 here, so each confidence decides the same run one way.
    posttune_module = sys.modules[posttune.__module__]  # the module, which the package's name hides

    task = box_checkpoint.build_task()
    base = {"method": "proxy", "steps": 8, "eval_every": 4, "batch_size": 16, "lr": 1e-3}
    plain = posttune(PostTuneConfig.for_task(task, base), box_checkpoint)
    assert plain.best_step > 0 and plain.leave_base_share is None, "the test needs a run that leaves the base"
    weighed = []
    monkeypatch.setattr(posttune_module, "win_share", lambda *a, **k: weighed.append(a) or 0.6)

    unsure = posttune(PostTuneConfig.for_task(task, {**base, "leave_base_confidence": 0.7}), box_checkpoint)
    assert unsure.best_step == 0 and unsure.leave_base_share == 0.6
    base_model = box_checkpoint.build_model(task)
    assert unsure.test == pytest.approx(task.evaluate(base_model, task.splits().test))
    assert unsure.val == pytest.approx(unsure.base_val)
    assert unsure.test_final == pytest.approx(plain.test_final)  # the updates themselves are unchanged

    sure = posttune(PostTuneConfig.for_task(task, {**base, "leave_base_confidence": 0.5}), box_checkpoint)
    assert sure.best_step == plain.best_step and sure.leave_base_share == 0.6
    assert sure.test == pytest.approx(plain.test)
    # Weighed against the base model itself, on val: the base's weights, not the last update's.
    base_arg, selected_arg, split = weighed[0][1:4]
    assert all(torch.equal(a, b) for a, b in zip(base_arg.state_dict().values(), base_model.state_dict().values()))
    assert len(split) == len(task.splits().val)


@pytest.mark.parametrize("value", [-0.1, 1.0, 2.0])
def test_leave_base_confidence_outside_its_range_is_named(value) -> None:
    with pytest.raises(ValueError, match=rf"leave_base_confidence must be in \[0, 1\), got {value}"):
        PostTuneConfig.from_dotted({"leave_base_confidence": value}).validate()
