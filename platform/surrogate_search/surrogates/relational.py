"""``relational``: ReLoss style, fitted to order items as the metric does."""

from __future__ import annotations

import torch

from surrogate_search.surrogates.base import register_loss
from surrogate_search.surrogates.learned import LearnedSurrogateLoss, hard_rank, pearson, soft_rank


@register_loss("relational")
class Relational(LearnedSurrogateLoss):
    """``-spearman(soft_rank(e_hat), rank(e)) + lambda (||grad_z e_hat|| - 1)^2``: only the order matters."""

    name = "relational"
    objective = "rank"

    def fit_loss(self, estimates: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
        return -pearson(soft_rank(estimates, self.config.surrogate.rank_temperature), hard_rank(errors))
