from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from surrogate_search.config import PostTuneConfig
from surrogate_search.sampling import GlobalSampler, SamplingConfig
from surrogate_search.surrogates import SurrogateConfig, create_loss
from surrogate_search.surrogates.encoders import ENCODERS
from surrogate_search.surrogates.learned import EmbeddingSurrogate, gradient_norms, hard_rank, soft_rank, spearman
from surrogate_search.tasks import get_task


def test_gradient_norms_match_finite_differences() -> None:
    torch.manual_seed(0)
    surrogate = EmbeddingSurrogate(ENCODERS.create("deepsets", num_classes=0, frames=0, cfg=SurrogateConfig(width=8, depth=1, embedding=4)))
    z = torch.rand(3, 6, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(3, 6) > 0.5).double()
    surrogate.double()
    norms = gradient_norms(surrogate(z, y), z)
    eps = 1e-6
    for item in range(3):
        grad = np.zeros(6)
        for j in range(6):
            bump = torch.zeros_like(z)
            bump[item, j] = eps
            grad[j] = float((surrogate(z + bump, y)[item] - surrogate(z - bump, y)[item]) / (2 * eps))
        assert float(norms[item]) == pytest.approx(np.linalg.norm(grad), rel=1e-4)


def _deviation_from_unit_gradients(penalty: float) -> float:
    """Train a set-level surrogate on global F1 pairs; mean | ||grad_z e_hat|| - 1 | on fresh pairs."""
    task = get_task("imbalanced_tabular", dataset="breast_cancer")
    config = PostTuneConfig.from_dotted({"method": "deep_embedding", "surrogate": {
        "encoder": "deepsets", "grad_penalty": penalty, "width": 16, "depth": 1, "lr": 3e-3}})
    torch.manual_seed(0)
    loss_fn = create_loss(task, config)
    opt = torch.optim.Adam(loss_fn.parameters(), lr=3e-3)
    sampler = GlobalSampler(task, task.load_splits().train, SamplingConfig(), 64, torch.Generator().manual_seed(0))
    for _ in range(150):
        loss, stats = loss_fn.fit(sampler.sample(32, torch.nn.Identity()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    pairs = sampler.sample(64, torch.nn.Identity())
    z = pairs.predictions.requires_grad_(True)
    return float((gradient_norms(loss_fn.score(z, pairs.targets), z) - 1).abs().mean())


def test_gradient_penalty_drives_gradient_norms_to_one() -> None:
    free, penalised = _deviation_from_unit_gradients(0.0), _deviation_from_unit_gradients(10.0)
    # F1 of a 64-item set moves far less than 1 per unit step, so a free fit has small gradients
    assert free > 0.5
    assert penalised < 0.3 and penalised < free / 3


def test_ranks() -> None:
    x = torch.tensor([3.0, 1.0, 2.0, 2.0])
    assert hard_rank(x).tolist() == [4.0, 1.0, 2.5, 2.5]
    soft = soft_rank(torch.tensor([3.0, 1.0, 2.0]), temperature=0.01)
    assert soft.tolist() == pytest.approx([3.0, 1.0, 2.0], abs=1e-3)
    a, b = torch.randn(50), torch.randn(50)
    b[:10] = 0.0  # ties
    assert spearman(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-6)


def test_the_sorting_network_ranks_as_a_sort_does_and_passes_gradients() -> None:
    from surrogate_search.surrogates.relational import sorting_network_rank

    x = torch.randn(40, generator=torch.Generator().manual_seed(0), requires_grad=True)
    ranks = sorting_network_rank(x)
    # relaxed: close scores share rank mass, but the order is a sort's and the ranks are near it
    assert spearman(ranks, x.detach()) > 0.99
    assert float((ranks.detach() - (hard_rank(x.detach()) - 1)).abs().mean()) < 2.0  # of 40 places
    (ranks * torch.arange(40.0)).sum().backward()  # any weighting of the ranks reaches the scores
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("ranking", ["pairwise", "diffsort"])
def test_relational_fit_learns_the_order_of_f1(ranking: str) -> None:
    task = get_task("imbalanced_tabular", dataset="breast_cancer")
    config = PostTuneConfig.from_dotted({"method": "relational", "relational.ranking": ranking,
                                         "surrogate": {"encoder": "deepsets", "width": 32}})
    torch.manual_seed(1)
    loss_fn = create_loss(task, config)
    opt = torch.optim.Adam(loss_fn.parameters(), lr=3e-3)
    sampler = GlobalSampler(task, task.load_splits().train, SamplingConfig(), 64, torch.Generator().manual_seed(1))
    held_out = sampler.sample(128, torch.nn.Identity())
    before = spearman(loss_fn.score(held_out.predictions, held_out.targets), held_out.errors)
    for _ in range(120):
        loss, _ = loss_fn.fit(sampler.sample(64, torch.nn.Identity()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = spearman(loss_fn.score(held_out.predictions, held_out.targets), held_out.errors)
    assert after > 0.8 and after > before


@pytest.mark.parametrize("encoder", ["conv", "lstm", "conv_lstm"])
@pytest.mark.parametrize("width", [32, 97])
def test_sequence_encoders_take_any_width_the_search_space_allows(encoder: str, width: int) -> None:
    # An odd width once crashed the LSTM encoders: a bidirectional LSTM gives 2 * (width // 2) features.
    cfg = SurrogateConfig(width=width, depth=2, embedding=11)
    h = ENCODERS.create(encoder, num_classes=5, frames=7, cfg=cfg)
    predictions = torch.softmax(torch.randn(3, 7, 5), dim=-1)
    assert h(predictions).shape == (3, 11)


def test_aligned_targets_rank_ctc_predictions_as_edit_distance_does() -> None:
    """The raw distance between a CTC prediction and its target follows edit distance only when
    the target is laid out in the prediction's own frames (the label's best CTC path)."""
    from surrogate_search.tasks import get_task

    task = get_task("synthetic_text")
    predictions, packed, labels = task.random_pairs(400, 1, torch.Generator().manual_seed(0))
    errors = task.item_errors(predictions, labels)
    aligned = task.align_targets(predictions, packed)
    assert torch.equal(aligned.sum(-1), torch.ones(aligned.shape[:2]))  # one class per frame
    assert task.decode(aligned) == labels  # the aligned target still reads as the label
    distance = {name: (predictions - target).flatten(1).norm(dim=1) for name, target in
                (("packed", packed), ("aligned", aligned))}
    assert spearman(distance["aligned"], errors) > 0.6
    assert spearman(distance["packed"], errors) < 0.3


def test_learned_loss_compares_with_aligned_targets_unless_told_not_to() -> None:
    from surrogate_search.tasks import get_task

    task = get_task("synthetic_text")
    predictions, packed, _ = task.random_pairs(8, 1, torch.Generator().manual_seed(1))
    on = create_loss(task, PostTuneConfig.for_task(task, {"method": "deep_embedding", "surrogate.encoder": "conv"}))
    off = create_loss(task, PostTuneConfig.for_task(task, {"method": "deep_embedding", "surrogate.encoder": "conv",
                                                          "surrogate.align_targets": False}))
    assert torch.equal(on.targets_for(predictions, packed), task.align_targets(predictions, packed))
    assert torch.equal(off.targets_for(predictions, packed), packed)


def test_relational_reads_the_true_class_probability_as_reloss_does_and_learns_edit_distance_order() -> None:
    from surrogate_search.surrogates.relational import TrueClassSurrogate

    task = get_task("synthetic_text")
    config = PostTuneConfig.for_task(task, {"method": "relational", "surrogate.width": 32})
    torch.manual_seed(0)
    loss_fn = create_loss(task, config)
    assert isinstance(loss_fn.surrogate, TrueClassSurrogate) and loss_fn.penalty_weight == 10.0
    sampler = GlobalSampler(task, None, SamplingConfig(), 1, torch.Generator().manual_seed(2))
    held_out = sampler.sample(200, torch.nn.Identity())
    opt = torch.optim.Adam(loss_fn.parameters(), lr=3e-3)
    for _ in range(40):
        loss, _ = loss_fn.fit(sampler.sample(64, torch.nn.Identity()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert spearman(loss_fn.score(held_out.predictions, held_out.targets), held_out.errors) > 0.7


def test_relational_input_falls_back_to_the_embedding_where_there_are_no_class_probabilities() -> None:
    from surrogate_search.surrogates.learned import EmbeddingSurrogate

    boxes = get_task("box_localization")
    assert isinstance(create_loss(boxes, PostTuneConfig.for_task(boxes, {"method": "relational"})).surrogate,
                      EmbeddingSurrogate)
    with pytest.raises(ValueError, match="relational.input 'true_class' needs class probabilities; task 'box_localization'"):
        create_loss(boxes, PostTuneConfig.for_task(boxes, {"method": "relational", "relational.input": "true_class"}))
    with pytest.raises(ValueError, match="relational.input must be one of auto, true_class, embedding, got 'probs'"):
        PostTuneConfig.for_task(boxes, {"method": "relational", "relational.input": "probs"})
    with pytest.raises(ValueError, match="relational.ranking must be one of pairwise, diffsort, got 'sort'"):
        PostTuneConfig.for_task(boxes, {"method": "relational", "relational.ranking": "sort"})
    text = get_task("synthetic_text")
    embedding = create_loss(text, PostTuneConfig.for_task(text, {"method": "relational", "relational.input": "embedding"}))
    assert isinstance(embedding.surrogate, EmbeddingSurrogate)
