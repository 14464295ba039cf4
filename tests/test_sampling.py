from __future__ import annotations

import pytest
import torch

from surrogate_search.sampling import SamplingConfig
from surrogate_search.metrics import get_metric
from surrogate_search.registry import UnknownNameError
from surrogate_search.sampling import create_sampler, list_strategies


def test_strategies() -> None:
    assert list_strategies() == ["global", "local", "local_global"]


def test_global_text_pairs_span_the_metric(text_checkpoint) -> None:
    task = text_checkpoint.build_task()
    sampler = create_sampler(task, task.load_splits().train, SamplingConfig(strategy="global"), 32, torch.Generator().manual_seed(0))
    pairs = sampler.sample(300, torch.nn.Identity())
    assert pairs.predictions.shape == (300, 24, 37) and pairs.targets.shape == (300, 24, 37)
    assert torch.allclose(pairs.predictions.sum(-1), torch.ones(300, 24), atol=1e-5)
    errors = pairs.errors
    assert (errors == 0).any() and (errors >= 3).any()  # exact matches and heavy edits
    # the error is the exact edit distance of what the predictions decode to
    decoded = task.decode(pairs.predictions[:20])
    labels = [task.decode(pairs.targets[i:i + 1])[0] for i in range(20)]
    assert errors[:20].tolist() == get_metric("edit_distance").per_sample(decoded, labels).tolist()


def test_local_pairs_without_noise_are_the_models_own_predictions(text_checkpoint) -> None:
    task = text_checkpoint.build_task()
    model = text_checkpoint.build_model(task)
    split = task.load_splits().train
    sampler = create_sampler(task, split, SamplingConfig(strategy="local", noise=0.0), 32, torch.Generator().manual_seed(0))
    pairs = sampler.sample(16, model)
    with torch.no_grad():
        model.eval()
        own = task.predict(task.forward(model, split))
    matches = [((own - p).abs().amax(dim=(1, 2)) < 1e-4).any() for p in pairs.predictions]
    assert all(matches)


def test_local_global_mixes_by_ratio(tabular_checkpoint) -> None:
    task = tabular_checkpoint.build_task()
    model = tabular_checkpoint.build_model(task)
    cfg = SamplingConfig(strategy="local_global", local_ratio=0.25)
    sampler = create_sampler(task, task.load_splits().train, cfg, 64, torch.Generator().manual_seed(0))
    pairs = sampler.sample(40, model)
    assert pairs.predictions.shape == (40, 64)  # 40 sets of 64 samples
    assert ((pairs.errors >= 0) & (pairs.errors <= 1)).all()  # 1 - F1


def test_unknown_strategy(tabular_checkpoint) -> None:
    task = tabular_checkpoint.build_task()
    with pytest.raises(UnknownNameError, match="unknown sampling strategy 'locall'"):
        create_sampler(task, task.load_splits().train, SamplingConfig(strategy="locall"), 8, torch.Generator())
