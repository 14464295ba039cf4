"""``relational``: ReLoss style, fitted to order items as the metric does."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from surrogate_search.surrogates.base import register_loss
from surrogate_search.surrogates.learned import LearnedSurrogateLoss, hard_rank, pearson, soft_rank
from surrogate_search.utils import check_range


@dataclass
class RelationalOptions:
    rank_temperature: float = 0.1
    """Softness of the soft ranks, relative to the spread of the surrogate's scores."""

    def validate(self) -> None:
        check_range("relational", self, positive=("rank_temperature",))


@register_loss("relational")
class Relational(LearnedSurrogateLoss):
    """``-spearman(soft_rank(e_hat), rank(e)) + lambda (||grad_z e_hat|| - 1)^2``: only the order matters."""

    Options = RelationalOptions
    objective = "rank"

    def fit_loss(self, estimates: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
        return -pearson(soft_rank(estimates, self.options.rank_temperature), hard_rank(errors))
