"""Post-tuning losses (fixed and learned) and their registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from surrogate_search.registry import Registry
from surrogate_search.tasks import Split, Task

if TYPE_CHECKING:
    from surrogate_search.config import PostTuneConfig
    from surrogate_search.sampling import Pairs


class SurrogateDivergedError(RuntimeError):
    """A surrogate produced NaN or infinity; the model was not updated with it."""


class PostTuneLoss(nn.Module):
    """What a model is post-tuned with. ``model_loss`` turns model outputs for a batch into the
    scalar that the model's optimizer minimises. Learned losses also ``fit`` their surrogate on
    fresh (prediction, label, metric) triples between model updates."""

    name: ClassVar[str]
    learned: ClassVar[bool] = False

    def __init__(self, task: Task, config: PostTuneConfig) -> None:
        super().__init__()
        self.task = task
        self.config = config
        self.check_supported(task)

    @classmethod
    def supports(cls, task: Task) -> bool:
        return True

    @classmethod
    def check_supported(cls, task: Task) -> None:
        if not cls.supports(task):
            raise ValueError(f"method {cls.name!r} does not apply to task {task.name!r} (metric {task.metric_name!r})")

    def model_loss(self, outputs: torch.Tensor, batch: Split) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def fit(self, pairs: Pairs) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError(f"{self.name!r} is a fixed loss; it has nothing to fit")

    def score(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Learned losses: the surrogate's estimate of each item's error."""
        raise NotImplementedError(f"{self.name!r} is a fixed loss; it has no surrogate to score with")


LOSSES: Registry[PostTuneLoss] = Registry("method")
register_loss = LOSSES.register


def create_loss(task: Task, config: PostTuneConfig) -> PostTuneLoss:
    return LOSSES.get(config.method)(task, config)  # type: ignore[return-value]


def list_methods(task: Task | None = None) -> list[str]:
    """Registered methods; with ``task``, only those that apply to it."""
    return [n for n in LOSSES.names() if task is None or LOSSES.get(n).supports(task)]  # type: ignore[attr-defined]


def check_finite(value: torch.Tensor, what: str, **context: Any) -> None:
    if not torch.isfinite(value).all():
        where = ", ".join(f"{k} {v}" for k, v in context.items())
        raise SurrogateDivergedError(f"{what} is not finite ({value.detach().flatten()[:4].tolist()}) at {where}; "
                                     "the model was not updated. Lower surrogate.lr or raise surrogate.grad_penalty.")
