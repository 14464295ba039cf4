"""A saved surrogate: read back without running code, refused where it does not fit (both sides
named), and a post-tuning that starts from it learns no surrogate of its own first."""

from __future__ import annotations

import json

import pytest
import torch

from surrogate_search.config import PostTuneConfig
from surrogate_search.posttune import WorkerContext, posttune
from surrogate_search.surrogates import create_loss, load_surrogate, save_surrogate
from surrogate_search.tasks import get_task


def tabular_config(**overrides) -> PostTuneConfig:
    return PostTuneConfig.for_task(get_task("imbalanced_tabular"), {"method": "deep_embedding", "surrogate.width": 16,
                                                                    **overrides})


def saved_loss(tmp_path, seed: int = 7, **overrides):
    torch.manual_seed(seed)
    config = tabular_config(**overrides)
    loss = create_loss(get_task("imbalanced_tabular"), config)
    return loss, load_surrogate(save_surrogate(loss, tmp_path / "saved"))


def test_a_saved_surrogate_loads_into_a_fresh_network_with_its_settings(tmp_path) -> None:
    loss, saved = saved_loss(tmp_path, **{"surrogate.depth": 1})
    assert saved.method == "deep_embedding" and saved.source == str(tmp_path / "saved")
    assert saved.settings["surrogate.width"] == 16 and saved.settings["surrogate.depth"] == 1
    assert "surrogate.lr" not in saved.settings  # training settings are the run's own
    torch.manual_seed(0)
    fresh = create_loss(get_task("imbalanced_tabular"), tabular_config(**saved.settings))
    saved.load_into(fresh)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in loss.state_dict().items())


@pytest.mark.parametrize("overrides, task, message", [
    ({"surrogate.width": 32}, "imbalanced_tabular",
     r"learned with surrogate.width=16; the post-tuning asks for surrogate.width=32"),
    ({"method": "relational"}, "imbalanced_tabular",
     r"learned by method 'deep_embedding'; the post-tuning asks for method 'relational'"),
    ({}, "box_localization", r"surrogate of f1 on task 'imbalanced_tabular'; the post-tuning is on task 'box_localization'"),
])
def test_a_surrogate_that_does_not_fit_is_refused_naming_both_sides(tmp_path, overrides, task, message) -> None:
    _, saved = saved_loss(tmp_path)
    config = PostTuneConfig.for_task(get_task(task), {**saved.settings, **overrides})
    with pytest.raises(ValueError, match=message):
        saved.check(get_task(task), config)


def test_a_network_of_another_shape_is_refused_before_any_weight_is_copied(tmp_path) -> None:
    _, saved = saved_loss(tmp_path)
    saved.about["settings"].pop("surrogate.width")  # a hand-edited surrogate.json: only the weights can tell
    with pytest.raises(ValueError, match=r"does not fit the deep_embedding network built here: .* \(16, .*\) there"):
        saved.load_into(create_loss(get_task("imbalanced_tabular"), tabular_config(**{"surrogate.width": 64})))


def test_a_state_file_that_would_run_code_is_refused(tmp_path) -> None:
    saved_loss(tmp_path)
    torch.save({"weights": PostTuneConfig()}, tmp_path / "saved" / "surrogate.pt")  # unpickling it imports a class
    with pytest.raises(ValueError, match="not a plain state dict .* nothing in it was run"):
        load_surrogate(tmp_path / "saved")
    with pytest.raises(FileNotFoundError, match="no saved surrogate there"):
        load_surrogate(tmp_path / "nothing")
    (tmp_path / "saved" / "surrogate.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="has format 'other'"):
        load_surrogate(tmp_path / "saved")


def test_a_run_started_from_a_saved_surrogate_does_not_pretrain(tabular_checkpoint, tmp_path) -> None:
    loss, saved = saved_loss(tmp_path)
    config = tabular_config(**{"steps": 2, "eval_every": 2, "batch_size": 64, "surrogate.pretrain_steps": 6,
                               "surrogate.warmup_steps": 0, "surrogate.steps_per_model_step": 0,
                               "surrogate.batch_size": 8})
    states = []
    ctx = WorkerContext(report=lambda metrics, state: states.append(state()["loss_fn"]))
    result = posttune(config, tabular_checkpoint, cache_dir=str(tmp_path / "cache"), context=ctx, surrogate=saved)
    assert result.surrogate_pretraining == {} and result.surrogate_source == saved.source
    assert not (tmp_path / "cache" / "surrogates").exists()
    # No surrogate update in this run: the surrogate it used is the saved one, weight for weight.
    assert all(torch.equal(states[-1][k].cpu(), v) for k, v in loss.state_dict().items())
