"""Rotated IoU loss (Zhou et al., 3DV 2019, "IoU loss for 2D/3D object detection"): ``1 - IoU`` of
rotated boxes, differentiated through the overlap polygon's corners and edge crossings.

It is the metric itself as the loss: exact where the boxes overlap, blind to the parametrisation
(half a turn, or ``w`` and ``h`` swapped at a quarter turn, is the same rectangle), and without a
gradient once the boxes stop overlapping.
"""

from __future__ import annotations

import torch

from surrogate_search.metrics.rotated_iou import RotatedIoU, rotated_iou
from surrogate_search.surrogates.base import PostTuneLoss, register_loss
from surrogate_search.tasks import Split, Task


def rotated_box_task(task: Task) -> bool:
    """Whether ``task`` is judged by rotated IoU and gives the true boxes ``(cx, cy, w, h, theta)``
    (its ``surrogate_targets``) in the form of its ``predict``."""
    return isinstance(task.metric, RotatedIoU) and type(task).surrogate_targets is not Task.surrogate_targets


@register_loss("rotated_iou_loss")
class RotatedIoULoss(PostTuneLoss):
    """``1 - IoU`` of the predicted rotated boxes against the targets, for every task judged by
    rotated IoU whose ``predict`` gives boxes ``(cx, cy, w, h, theta)``."""

    @classmethod
    def supports(cls, task: Task) -> bool:
        return rotated_box_task(task)

    def model_loss(self, outputs: torch.Tensor, batch: Split) -> tuple[torch.Tensor, dict[str, float]]:
        # float64: corners that sit on the other box's edge are told apart from rounding.
        iou = rotated_iou(self.task.predict(outputs.float()).double(), self.task.surrogate_targets(batch).double())
        loss = (1.0 - iou).mean().float()
        return loss, {"rotated_iou_loss": float(loss.detach()), "batch_iou": float(iou.detach().mean())}
