"""``relational``: ReLoss style (Huang et al. 2022), fitted to order items as the metric does.

As in ReLoss, the network reads the probability the prediction gives the true class (per frame or
position of a sequence, against the label aligned to the prediction; per sample of a set, with the
sample's label, since F1 depends on which samples are positive) and maps it to one score per item.
It is fitted with a differentiable Spearman correlation on groups of pairs and a gradient penalty
of its own weight (ReLoss: 10); ``sampling.strategy = rerandomised`` draws ReLoss's groups, the
model's predictions with a random fraction of each item's outputs re-randomised. ``relational.input = embedding`` reads the deep-embedding distance
of ``deep_embedding`` instead; tasks whose predictions are not class probabilities (boxes,
embeddings) always do.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from surrogate_search.surrogates.base import register_loss
from surrogate_search.surrogates.encoders import DeepSetsEncoder
from surrogate_search.surrogates.learned import LearnedSurrogateLoss, hard_rank, pearson, soft_rank
from surrogate_search.surrogates.options import SurrogateConfig
from surrogate_search.tasks import Task
from surrogate_search.utils import check_range

INPUTS = ("auto", "true_class", "embedding")
RANKINGS = ("pairwise", "diffsort")
DIFFSORT_STEEPNESS = 5.0
"""The sorting network's steepness (ReLoss's code uses 5), on scores divided by their spread."""


@dataclass
class RelationalOptions:
    rank_temperature: float = 0.1
    """Softness of the ``pairwise`` soft ranks, relative to the spread of the surrogate's scores."""
    ranking: str = "pairwise"
    """How the surrogate's scores become differentiable ranks: ``pairwise`` (sums of pairwise
    sigmoids, written here) or ``diffsort`` (a differentiable bitonic sorting network from the
    ``diffsort`` package, as ReLoss's code ranks; steepness 5 on scores divided by their spread)."""
    input: str = "auto"
    """``true_class``: the probability of the true class per output (ReLoss); ``embedding``: the
    deep-embedding distance; ``auto``: ``true_class`` where the task predicts class probabilities."""
    grad_penalty: float = 10.0
    """lambda of the gradient penalty for this loss (``surrogate.grad_penalty`` is the others')."""

    def validate(self) -> None:
        check_range("relational", self, positive=("rank_temperature",), non_negative=("grad_penalty",))
        if self.input not in INPUTS:
            raise ValueError(f"relational.input must be one of {', '.join(INPUTS)}, got {self.input!r}")
        if self.ranking not in RANKINGS:
            raise ValueError(f"relational.ranking must be one of {', '.join(RANKINGS)}, got {self.ranking!r}")


def has_true_class(task: Task) -> bool:
    return type(task).true_class_probabilities is not Task.true_class_probabilities


class TrueClassSurrogate(nn.Module):
    """Scores an item from the probability of its true class at each output: an MLP over the
    outputs of a sequence (their order matters), DeepSets over (probability, label) for a set."""

    def __init__(self, task: Task, cfg: SurrogateConfig) -> None:
        super().__init__()
        self.task = task
        if task.set_level:
            self.sets = DeepSetsEncoder(cfg)
            self.head = nn.Linear(cfg.embedding, 1)
        else:
            outputs = task.surrogate_shape[0]
            layers: list[nn.Module] = []
            width_in = outputs
            for _ in range(cfg.depth):
                layers += [nn.Linear(width_in, cfg.width), nn.GELU()]
                width_in = cfg.width
            self.net = nn.Sequential(*layers, nn.Linear(width_in, 1))

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p_true = self.task.true_class_probabilities(predictions, targets)
        if self.task.set_level:
            return self.head(self.sets(p_true, targets)).squeeze(-1)
        # Log-probabilities, as in cross-entropy: on random text pairs sum(-log(p + 0.01)) ranks as
        # edit distance does with Spearman 0.82, sum(1 - p) only 0.56. The 0.01 bounds the slope at
        # 100, where log p's own slope at p ~ 1e-5 made the gradient penalty explode.
        return self.net((p_true + 0.01).log()).squeeze(-1)


@register_loss("relational")
class Relational(LearnedSurrogateLoss):
    """``-spearman(soft_rank(e_hat), rank(e)) + lambda (||grad_z e_hat|| - 1)^2``: only the order matters."""

    Options = RelationalOptions
    objective = "rank"

    def build_surrogate(self, task: Task, cfg: SurrogateConfig) -> nn.Module:
        if self.options.input == "true_class" and not has_true_class(task):
            raise ValueError(f"relational.input 'true_class' needs class probabilities; task {task.name!r} predicts "
                             f"none: use 'embedding' or 'auto'")
        if self.options.input != "embedding" and has_true_class(task):
            return TrueClassSurrogate(task, cfg)
        return super().build_surrogate(task, cfg)

    @property
    def penalty_weight(self) -> float:
        return self.options.grad_penalty

    def fit_loss(self, estimates: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
        if self.options.ranking == "diffsort":
            ranks = sorting_network_rank(estimates)
        else:
            ranks = soft_rank(estimates, self.options.rank_temperature)
        return -pearson(ranks, hard_rank(errors))


@functools.lru_cache(maxsize=8)
def _sorting_network(size: int, device: str) -> nn.Module:
    from diffsort import DiffSortNet

    return DiffSortNet("bitonic", size, steepness=DIFFSORT_STEEPNESS, interpolation_type="logistic_phi",
                       device=device)


def sorting_network_rank(x: torch.Tensor) -> torch.Tensor:
    """Differentiable ranks (0..n-1) of ``x`` from a relaxed bitonic sorting network: each item's
    expected position under the network's soft permutation."""
    scaled = x / x.detach().std().clamp_min(1e-6)
    _, permutation = _sorting_network(len(x), str(x.device))(scaled[None].float())
    positions = torch.arange(len(x), dtype=permutation.dtype, device=x.device)
    return (permutation[0] * positions).sum(dim=1).to(x.dtype)
