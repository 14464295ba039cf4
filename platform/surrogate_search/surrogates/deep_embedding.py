"""``deep_embedding``: LS-ED / LS-IoU style, fitted by regression on the true metric."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from surrogate_search.surrogates.base import register_loss
from surrogate_search.surrogates.learned import LearnedSurrogateLoss


@register_loss("deep_embedding")
class DeepEmbedding(LearnedSurrogateLoss):
    """``(e_hat - e)^2 + lambda (||grad_z e_hat|| - 1)^2``: match the metric's value."""

    objective = "regression"

    def fit_loss(self, estimates: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
        if self.config.surrogate.fit == "l1":
            return F.l1_loss(estimates, errors)
        return F.mse_loss(estimates, errors)
