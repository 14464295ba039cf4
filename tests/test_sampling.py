from __future__ import annotations

import pytest
import torch

from surrogate_search.sampling import SamplingConfig
from surrogate_search.metrics import get_metric
from surrogate_search.registry import UnknownNameError
from surrogate_search.sampling import Seen, best_threshold_errors, create_sampler, list_strategies


def test_strategies() -> None:
    assert list_strategies() == ["global", "local", "local_global", "rerandomised"]


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


def test_local_sets_run_each_distinct_sample_through_the_model_once(tabular_checkpoint) -> None:
    # 30 sets of 64 rows from 100 rows repeat rows; the model sees the 100 at most, and each set's
    # predictions are still the model's outputs on that set's rows.
    task = tabular_checkpoint.build_task()
    model = tabular_checkpoint.build_model(task)
    split = task.load_splits().train.subset(range(100))
    seen: list[int] = []
    model.register_forward_hook(lambda module, args, out: seen.append(len(out)))
    pairs = create_sampler(task, split, SamplingConfig(strategy="local", noise=0.0), 64,
                           torch.Generator().manual_seed(0)).sample(30, model)
    assert seen and sum(seen) <= 100
    index = torch.randint(len(split), (30 * 64,), generator=torch.Generator().manual_seed(0))  # the sampler's draw
    with torch.no_grad():
        expected = task.predict(task.forward(model.eval(), split.subset(index))).view(30, 64)
    torch.testing.assert_close(pairs.predictions, expected)


def test_batch_source_draws_local_pairs_from_the_model_updates_own_outputs(text_checkpoint) -> None:
    task = text_checkpoint.build_task()
    model = text_checkpoint.build_model(task)
    batch = task.load_splits().train.subset(range(8))
    with torch.no_grad():
        outputs = task.forward(model, batch)

    def no_forward(*args):
        raise AssertionError("the model was run again")

    model.register_forward_pre_hook(no_forward)
    cfg = SamplingConfig(strategy="local", noise=0.0, source="batch")
    pairs = create_sampler(task, task.load_splits().train, cfg, 32, torch.Generator().manual_seed(0)).sample(
        20, model, Seen(batch, outputs))
    own = task.predict(outputs)
    # each pair is one of the batch's outputs, against that sample's own label and its true edit distance
    which = [int(((own - p).abs().amax(dim=(1, 2))).argmin()) for p in pairs.predictions]
    assert all(((own[i] - p).abs().amax() < 1e-5) for i, p in zip(which, pairs.predictions))
    assert len(set(which)) > 1
    labels = [batch.labels[i] for i in which]
    assert pairs.errors.tolist() == get_metric("edit_distance").per_sample(task.decode(pairs.predictions), labels).tolist()
    torch.testing.assert_close(pairs.targets, task.surrogate_targets(batch)[which])
    # without a forward pass to draw from (pretraining, warm-up) the sampler runs the model
    with pytest.raises(AssertionError, match="run again"):
        create_sampler(task, task.load_splits().train, cfg, 32, torch.Generator()).sample(4, model)


def test_fresh_source_ignores_the_model_updates_outputs(text_checkpoint) -> None:
    task = text_checkpoint.build_task()
    model = text_checkpoint.build_model(task)
    split = task.load_splits().train
    cfg = SamplingConfig(strategy="local", noise=0.0)
    garbage = Seen(split.subset(range(4)), torch.zeros(4, *task.surrogate_shape))
    with_seen = create_sampler(task, split, cfg, 32, torch.Generator().manual_seed(0)).sample(6, model, garbage)
    without = create_sampler(task, split, cfg, 32, torch.Generator().manual_seed(0)).sample(6, model)
    torch.testing.assert_close(with_seen.predictions, without.predictions)


def test_unknown_source_is_named() -> None:
    with pytest.raises(ValueError, match="sampling.source must be one of fresh, batch, got 'batches'"):
        SamplingConfig(source="batches").validate()


def test_local_global_mixes_by_ratio(tabular_checkpoint) -> None:
    task = tabular_checkpoint.build_task()
    model = tabular_checkpoint.build_model(task)
    cfg = SamplingConfig(strategy="local_global", local_ratio=0.25)
    sampler = create_sampler(task, task.load_splits().train, cfg, 64, torch.Generator().manual_seed(0))
    pairs = sampler.sample(40, model)
    assert pairs.predictions.shape == (40, 64)  # 40 sets of 64 samples
    assert ((pairs.errors >= 0) & (pairs.errors <= 1)).all()  # 1 - F1


def test_rerandomised_items_keep_a_uniform_random_fraction_of_the_models_outputs(text_checkpoint, monkeypatch) -> None:
    task = text_checkpoint.build_task()
    model = text_checkpoint.build_model(task)
    real_perturb = task.perturb
    uniform = torch.full((task.surrogate_shape[1],), 1.0 / task.surrogate_shape[1])

    def marked(outputs, noise, generator):  # a re-randomised output shows as the uniform distribution
        own = real_perturb(outputs, torch.zeros_like(noise), generator)
        return torch.where((noise > 0).view(-1, 1, 1), uniform, own)

    monkeypatch.setattr(task, "perturb", marked)
    sampler = create_sampler(task, task.load_splits().train, SamplingConfig(strategy="rerandomised"), 32,
                             torch.Generator().manual_seed(0))
    pairs = sampler.sample(400, model)
    replaced = torch.isclose(pairs.predictions, uniform).all(-1).float().mean(1)  # per item
    assert replaced.min() < 0.1 and replaced.max() > 0.9 and abs(float(replaced.mean()) - 0.5) < 0.05
    kept = pairs.predictions[~torch.isclose(pairs.predictions, uniform).all(-1)]
    assert torch.allclose(kept.sum(-1), torch.ones(len(kept)), atol=1e-5)  # the model's own distributions


def test_rerandomised_sets_span_the_metric_from_the_model_to_a_guess(tabular_checkpoint) -> None:
    task = tabular_checkpoint.build_task()
    model = tabular_checkpoint.build_model(task)
    sampler = create_sampler(task, task.load_splits().train, SamplingConfig(strategy="rerandomised"), 64,
                             torch.Generator().manual_seed(0))
    pairs = sampler.sample(200, model)
    assert pairs.predictions.shape == (200, 64)
    own = create_sampler(task, task.load_splits().train, SamplingConfig(strategy="local", noise=0.0), 64,
                         torch.Generator().manual_seed(0)).sample(200, model).errors
    assert float(pairs.errors.min()) <= float(own.mean()) and float(pairs.errors.max()) > float(own.mean()) + 0.3


def test_unknown_strategy(tabular_checkpoint) -> None:
    task = tabular_checkpoint.build_task()
    with pytest.raises(UnknownNameError, match="unknown sampling strategy 'locall'"):
        create_sampler(task, task.load_splits().train, SamplingConfig(strategy="locall"), 8, torch.Generator())


def test_best_threshold_target_is_each_sets_f1_at_its_own_best_threshold(tabular_checkpoint) -> None:
    task = tabular_checkpoint.build_task()
    predictions, _, labels = task.random_pairs(60, 40, torch.Generator().manual_seed(0))
    predictions[:4] = (predictions[:4] * 4).round() / 4  # ties: only cuts between distinct probabilities count
    labels[5] = [0] * 40  # nothing to find: F1 is 1 when nothing is predicted positive
    errors = best_threshold_errors(task, predictions, labels)
    f1 = get_metric("f1")
    expected = [1.0 - f1.best_threshold(p.numpy(), l)[1] for p, l in zip(predictions, labels)]
    assert errors.tolist() == pytest.approx(expected, abs=1e-6)
    assert errors[5] == 0.0
    # at 0.5 the same sets score worse or equal: the best threshold is one of the candidates
    assert (errors <= task.item_errors(predictions, labels) + 1e-6).all()
    assert (errors < task.item_errors(predictions, labels) - 1e-6).any()


def test_sampler_labels_pairs_with_the_configured_target(tabular_checkpoint) -> None:
    task = tabular_checkpoint.build_task()
    model = tabular_checkpoint.build_model(task)
    split = task.load_splits().train
    pairs = {target: create_sampler(task, split, SamplingConfig(strategy="local", target=target), 32,
                                     torch.Generator().manual_seed(0)).sample(50, model)
             for target in ("decision", "best_threshold")}
    same = pairs["decision"].predictions
    assert torch.equal(same, pairs["best_threshold"].predictions)  # same draw, different labelling
    labels = [[int(v) for v in row] for row in pairs["decision"].targets.long().tolist()]
    assert pairs["decision"].errors.tolist() == pytest.approx(task.item_errors(same, labels).tolist())
    assert pairs["best_threshold"].errors.tolist() == pytest.approx(best_threshold_errors(task, same, labels).tolist())


def test_best_threshold_target_needs_a_confusion_matrix_metric(text_checkpoint) -> None:
    task = text_checkpoint.build_task()
    with pytest.raises(ValueError, match="needs a set-level confusion-matrix metric.*edit_distance: use 'decision'"):
        create_sampler(task, task.load_splits().train, SamplingConfig(target="best_threshold"), 8, torch.Generator())


def test_unknown_target() -> None:
    with pytest.raises(UnknownNameError, match="unknown sampling target 'best'"):
        SamplingConfig(target="best").validate()
