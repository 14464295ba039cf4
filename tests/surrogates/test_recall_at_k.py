"""The Recall@k surrogate: a hand-computed case, its limits, a slow reference, gradients, SiMix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from surrogate_search.metrics import get_metric
from surrogate_search.surrogates.recall_at_k import recall_at_k_surrogate, similarity_mixup


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def slow_loss(e: np.ndarray, classes: list[int], ks: list[int], tau_rank: float, tau_k: float) -> float:
    """The paper's formulas, one query and one positive at a time."""
    recalls = {k: [] for k in ks}
    for q in range(len(e)):
        others = [j for j in range(len(e)) if j != q]
        positives = [p for p in others if classes[p] == classes[q]]
        if not positives:
            continue
        s = {j: float(e[q] @ e[j]) for j in others}
        ranks = {p: 1 + sum(sigmoid((s[j] - s[p]) / tau_rank) for j in others if j != p) for p in positives}
        for k in ks:
            hits = sum(sigmoid((k - ranks[p]) / tau_k) for p in positives)
            recalls[k].append(min(k, hits) / min(k, len(positives)))
    return 1 - float(np.mean([np.mean(v) for v in recalls.values()]))


def three_points() -> tuple[torch.Tensor, torch.Tensor]:
    root = math.sqrt(1 - 0.81)
    return torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.9, root]], dtype=torch.float64), torch.tensor([0, 0, 1])


def test_hand_computed_value() -> None:
    e, classes = three_points()
    # s01 = 0.8, s02 = 0.9, s12 = 0.72 + 0.6 * sqrt(0.19). Query 2 has no positive.
    s12 = 0.72 + 0.6 * math.sqrt(0.19)
    rank_q0 = 1 + sigmoid((0.9 - 0.8) / 0.01)      # the negative 2 is above the positive 1
    rank_q1 = 1 + sigmoid((s12 - 0.8) / 0.01)
    expected = 1 - (sigmoid(1 - rank_q0) + sigmoid(1 - rank_q1)) / 2
    assert float(recall_at_k_surrogate(e, classes, [1])) == pytest.approx(expected, rel=1e-9)


def test_sharp_temperatures_count_a_top_ranked_positive_as_half() -> None:
    # With both sigmoids sharp, ranks are integers and sigmoid((k - r) / tau_k) is 1 below k, 1/2 AT
    # k, 0 above (the paper's formula, not a rounding of ours): for k = 1 the loss is
    # 1 - recall@1 / 2, exactly tied to the true recall@1.
    rng = np.random.default_rng(0)
    e = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(40, 3))), dim=1)
    classes = torch.from_numpy(rng.integers(0, 4, size=40))
    truth = get_metric("recall_at_1").compute(e.numpy(), classes.tolist())
    assert 0.2 < truth < 0.9
    loss = float(recall_at_k_surrogate(e, classes, [1], tau_rank=1e-6, tau_k=1e-3))
    assert loss == pytest.approx(1 - truth / 2, abs=1e-3)


@pytest.mark.parametrize("seed", range(3))
def test_matches_the_slow_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    e = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(12, 4))), dim=1)
    classes = rng.integers(0, 4, size=12).tolist()
    fast = float(recall_at_k_surrogate(e, torch.tensor(classes), [1, 2, 4], tau_rank=0.05, tau_k=1.0))
    assert fast == pytest.approx(slow_loss(e.numpy(), classes, [1, 2, 4], 0.05, 1.0), rel=1e-9)


def test_gradient_pulls_the_positive_above_the_negative() -> None:
    e, classes = three_points()
    e.requires_grad_(True)
    recall_at_k_surrogate(e, classes, [1], tau_rank=0.1).backward()
    # descending the loss moves sample 1 towards sample 0 (raising s01 = e0 . e1)
    step = -e.grad[1]
    assert float(step @ e.detach()[0]) > 0
    # and matches finite differences
    base = e.detach().clone()
    for i, j in [(0, 0), (1, 1), (2, 0)]:
        bump = torch.zeros_like(base)
        bump[i, j] = 1e-6
        up = float(recall_at_k_surrogate(base + bump, classes, [1], tau_rank=0.1))
        down = float(recall_at_k_surrogate(base - bump, classes, [1], tau_rank=0.1))
        assert float(e.grad[i, j]) == pytest.approx((up - down) / 2e-6, abs=1e-6)


def test_similarity_mixup_mixes_only_within_a_class() -> None:
    e = torch.eye(6, dtype=torch.float64)
    classes = torch.tensor([0, 0, 0, 1, 1, 2])
    mixed, mixed_classes, parents = similarity_mixup(e, classes, max_mixes=100, generator=torch.Generator().manual_seed(0))
    assert len(mixed) == 4  # 3 pairs in class 0, 1 in class 1, none in class 2
    assert (classes[parents[:, 0]] == mixed_classes).all() and (classes[parents[:, 1]] == mixed_classes).all()
    weights = mixed[torch.arange(4), parents[:, 0]] + mixed[torch.arange(4), parents[:, 1]]
    torch.testing.assert_close(weights, torch.ones(4, dtype=torch.float64))  # alpha + (1 - alpha)
    assert len(similarity_mixup(e, classes, max_mixes=2)[0]) == 2


def test_a_query_never_sees_a_mixture_of_itself() -> None:
    # two samples of one class and a negative: their only mixture contains each query, so it is
    # left out for both and the loss equals the one without mixup
    e, _ = three_points()
    classes = torch.tensor([0, 0, 1])
    with_mixup = recall_at_k_surrogate(e, classes, [1, 2], max_mixes=10, generator=torch.Generator().manual_seed(0))
    assert float(with_mixup) == pytest.approx(float(recall_at_k_surrogate(e, classes, [1, 2])))
