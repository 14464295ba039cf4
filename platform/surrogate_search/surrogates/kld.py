"""KLD loss (Yang et al., NeurIPS 2021, "Learning High-Precision Bounding Box for Rotated Object
Detection via Kullback-Leibler Divergence"): rotated boxes as 2-D Gaussians, their divergence as the
loss.

A box ``(cx, cy, w, h, theta)`` becomes the Gaussian with mean ``(cx, cy)`` and covariance
``R(theta) diag(w^2/4, h^2/4) R(theta)^T``: the same Gaussian after half a turn, or with ``w`` and
``h`` swapped at a quarter turn, so the loss has no boundary problem; and its angle term grows with
the aspect ratio, as the IoU's does. The divergence of the prediction ``p`` from the target ``t``,

``D = 1/2 (mu_p - mu_t)^T S_t^-1 (mu_p - mu_t) + 1/2 tr(S_t^-1 S_p) + 1/2 ln(|S_t| / |S_p|) - 1``,

is turned into the paper's loss ``1 - 1 / (tau + ln(1 + D))`` with ``tau = 1``.
"""

from __future__ import annotations

import torch

from surrogate_search.surrogates.base import PostTuneLoss, register_loss
from surrogate_search.surrogates.rotated_iou_loss import rotated_box_task
from surrogate_search.tasks import Split, Task

TAU = 1.0
EPS = 1e-7


def gaussian_kld(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``D(N_p || N_t)`` of each predicted box's Gaussian from its target's; boxes are rows
    ``(cx, cy, w, h, theta)``, lengths in any common unit (the divergence does not depend on it)."""
    p, t = predictions, targets.to(predictions.dtype)
    # Variances along each box's own axes; in the target's axes the inverse is diagonal.
    var_p_along, var_p_across = (p[:, 2] / 2).square() + EPS, (p[:, 3] / 2).square() + EPS
    var_t_along, var_t_across = (t[:, 2] / 2).square() + EPS, (t[:, 3] / 2).square() + EPS
    cos_t, sin_t = torch.cos(t[:, 4]), torch.sin(t[:, 4])
    dx, dy = p[:, 0] - t[:, 0], p[:, 1] - t[:, 1]
    centre = (dx * cos_t + dy * sin_t).square() / var_t_along + (-dx * sin_t + dy * cos_t).square() / var_t_across
    cos2, sin2 = torch.cos(p[:, 4] - t[:, 4]).square(), torch.sin(p[:, 4] - t[:, 4]).square()
    trace = ((var_p_along * cos2 + var_p_across * sin2) / var_t_along
             + (var_p_along * sin2 + var_p_across * cos2) / var_t_across)
    log_det = torch.log(var_t_along * var_t_across) - torch.log(var_p_along * var_p_across)
    return 0.5 * centre + 0.5 * trace + 0.5 * log_det - 1.0


@register_loss("kld")
class KLDLoss(PostTuneLoss):
    """``1 - 1 / (1 + ln(1 + D))``, ``D`` the Kullback-Leibler divergence of the predicted box's
    Gaussian from the true box's, for every task judged by rotated IoU whose ``predict`` gives
    boxes ``(cx, cy, w, h, theta)``."""

    @classmethod
    def supports(cls, task: Task) -> bool:
        return rotated_box_task(task)

    def model_loss(self, outputs: torch.Tensor, batch: Split) -> tuple[torch.Tensor, dict[str, float]]:
        divergence = gaussian_kld(self.task.predict(outputs.float()), self.task.surrogate_targets(batch))
        loss = (1.0 - 1.0 / (TAU + torch.log1p(divergence.clamp_min(0)))).mean()
        return loss, {"kld_loss": float(loss.detach()), "batch_kld": float(divergence.detach().mean())}
