"""Every post-tuning method, on every task it applies to: gradients reach the model."""

from __future__ import annotations

import pytest
import torch

from surrogate_search.config import PostTuneConfig
from surrogate_search.surrogates import LOSSES, create_loss, list_methods


def _setup(checkpoint, method: str):
    task = checkpoint.build_task()
    config = PostTuneConfig.for_task(task, {"method": method, "surrogate.proxy_weight": 0.0})
    return task, config, checkpoint.build_model(task), create_loss(task, config)


@pytest.mark.parametrize("method", sorted(LOSSES.names()))
@pytest.mark.parametrize("which", ["tabular_checkpoint", "text_checkpoint", "box_checkpoint",
                                   "retrieval_checkpoint", "rotated_box_checkpoint"])
def test_gradients_flow_to_the_model(method: str, which: str, request: pytest.FixtureRequest) -> None:
    checkpoint = request.getfixturevalue(which)
    task = checkpoint.build_task()
    if method not in list_methods(task):
        with pytest.raises(ValueError, match=f"method '{method}' does not apply to task '{task.name}'"):
            _setup(checkpoint, method)
        return
    task, config, model, loss_fn = _setup(checkpoint, method)
    batch = next(task.load_splits().train.batches(config.batch_size))
    loss, stats = loss_fn.model_loss(task.forward(model, batch), batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_methods_that_apply() -> None:
    from surrogate_search.tasks import get_task

    # Registration order: the baselines, then the learned surrogates (the default comparison's order).
    assert list_methods(get_task("synthetic_text")) == ["proxy", "expected_edit_distance", "deep_embedding",
                                                        "relational"]
    assert list_methods(get_task("imbalanced_tabular")) == ["proxy", "weighted_proxy", "anyloss", "deep_embedding",
                                                            "relational"]
    assert list_methods(get_task("box_localization")) == ["proxy", "giou", "deep_embedding", "relational"]
    assert list_methods(get_task("retrieval")) == ["proxy", "recall_at_k", "deep_embedding", "relational"]
    assert list_methods(get_task("rotated_box")) == ["proxy", "rotated_iou_loss", "kld", "deep_embedding", "relational"]


def test_wrong_encoder_for_the_task_is_named(tabular_checkpoint) -> None:
    task = tabular_checkpoint.build_task()
    config = PostTuneConfig.from_dotted({"method": "deep_embedding", "surrogate": {"encoder": "conv_lstm"}})
    with pytest.raises(ValueError, match="set-level metric \\(f1\\); surrogate.encoder must be a set encoder \\('deepsets', 'ranking'\\), got 'conv_lstm'"):
        create_loss(task, config)
