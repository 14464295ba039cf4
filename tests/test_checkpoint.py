from __future__ import annotations

import pytest
import torch

from surrogate_search.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from surrogate_search.tasks import get_task


@pytest.fixture()
def saved(tmp_path):
    task = get_task("imbalanced_tabular", dataset="breast_cancer", seed=4)
    model = task.build_model()
    path = save_checkpoint(tmp_path / "base", task, model, task.default_model_options(), metrics={"test": {"f1": 0.5}})
    return task, model, path


def test_round_trip_with_weights_only(saved) -> None:
    task, model, path = saved
    raw = torch.load(path, weights_only=True)  # the safe loader accepts it
    assert raw["task"] == "imbalanced_tabular"
    ckpt = load_checkpoint(path.parent, expected_task="imbalanced_tabular")
    assert ckpt.task_seed == 4 and ckpt.task_options == {"dataset": "breast_cancer"}
    assert ckpt.metrics["test"]["f1"] == 0.5
    rebuilt = ckpt.build_model()
    for (k, v), (k2, v2) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_missing_checkpoint_says_how_to_make_one(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*nowhere/model.pt .*surrogate-search pretrain"):
        load_checkpoint(tmp_path / "nowhere")


def test_corrupt_checkpoint(tmp_path) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="corrupt or not a surrogate-search checkpoint"):
        load_checkpoint(bad)


def test_foreign_pickle_is_refused_without_running_it(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))

    path = tmp_path / "model.pt"
    torch.save({"format": "surrogate-search/base-model/v1", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="corrupt or not a surrogate-search checkpoint"):
        load_checkpoint(path)


def test_other_format_is_named(tmp_path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="has format None, expected 'surrogate-search/base-model/v1'"):
        load_checkpoint(path)


def test_checkpoint_from_another_task_is_refused(saved) -> None:
    _, _, path = saved
    with pytest.raises(CheckpointError, match="trained for task 'imbalanced_tabular', not 'synthetic_text'"):
        load_checkpoint(path, expected_task="synthetic_text")
