"""Post-tuning losses (fixed and learned) and their registry.

A loss is a class registered by name. What the rest of the platform needs to know about it, it
asks the class: whether it is ``learned`` (a surrogate network trained beside the model), which
tasks it ``supports``, and its ``Options`` (a dataclass: the loss's own config section, reached
as ``--set <name>.<key>=...``, in YAML search spaces and in MLflow params).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from surrogate_search.registry import Registry
from surrogate_search.tasks import Split, Task

if TYPE_CHECKING:
    from surrogate_search.config import PostTuneConfig
    from surrogate_search.sampling import Pairs

LEARNED_SECTIONS = ("surrogate", "sampling")
"""Config sections that every learned loss reads (the surrogate network and its training pairs)."""


class SurrogateDivergedError(RuntimeError):
    """A surrogate or a loss produced NaN or infinity; the model was not updated with it. ``what``:
    which value, e.g. ``the proxy loss is not finite ([nan])``."""

    def __init__(self, message: str, *, what: str = "") -> None:
        super().__init__(message)
        self.what = what or message


class PostTuneLoss(nn.Module):
    """What a model is post-tuned with. ``model_loss`` turns model outputs for a batch into the
    scalar that the model's optimizer minimises. Learned losses also ``fit`` their surrogate on
    fresh (prediction, label, metric) triples between model updates.

    ``Options``, when a loss has settings of its own, is a dataclass; the loss reads its values as
    ``self.options``, filled from the config section named after the loss.
    """

    name: ClassVar[str]
    """The registry key; set by :func:`register_loss`."""
    learned: ClassVar[bool] = False
    Options: ClassVar[type | None] = None

    def __init__(self, task: Task, config: PostTuneConfig) -> None:
        super().__init__()
        self.task = task
        self.config = config
        self.options: Any = config.section(self.name) if self.Options is not None else None
        self.check_supported(task)

    @classmethod
    def supports(cls, task: Task) -> bool:
        return True

    @classmethod
    def sections(cls) -> list[str]:
        """The config sections this loss reads, besides the top-level settings."""
        return [*(LEARNED_SECTIONS if cls.learned else ()), *([cls.name] if cls.Options is not None else [])]

    @classmethod
    def check_supported(cls, task: Task) -> None:
        if not cls.supports(task):
            raise ValueError(f"method {cls.name!r} does not apply to task {task.name!r} (metric {task.metric_name!r})")

    def prepare(self, train: Split) -> None:
        """Called once with the whole training split before the first update (e.g. class balance)."""

    def model_loss(self, outputs: torch.Tensor, batch: Split) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def fit(self, pairs: Pairs) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError(f"{self.name!r} is a fixed loss; it has nothing to fit")

    def score(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Learned losses: the surrogate's estimate of each item's error."""
        raise NotImplementedError(f"{self.name!r} is a fixed loss; it has no surrogate to score with")


LOSSES: Registry[PostTuneLoss] = Registry("method")


def register_loss(name: str, *, overwrite: bool = False) -> Any:
    """Class decorator: register a :class:`PostTuneLoss` under ``name`` (its method name)::

        @register_loss("huber_embedding")
        class HuberEmbedding(LearnedSurrogateLoss): ...
    """
    def decorator(cls: type[PostTuneLoss]) -> type[PostTuneLoss]:
        if not (isinstance(cls, type) and issubclass(cls, PostTuneLoss)):
            raise TypeError(f"register_loss({name!r}) decorates a PostTuneLoss subclass, got {cls!r}")
        cls.name = name
        return LOSSES.register(name, overwrite=overwrite)(cls)  # type: ignore[return-value]

    return decorator


def loss_class(method: str) -> type[PostTuneLoss]:
    """The class registered as ``method``; an unknown name lists the known ones."""
    return LOSSES.get(method)  # type: ignore[return-value]


def create_loss(task: Task, config: PostTuneConfig) -> PostTuneLoss:
    return loss_class(config.method)(task, config)


def list_methods(task: Task | None = None) -> list[str]:
    """Registered methods in registration order; with ``task``, only those that apply to it."""
    return [n for n in LOSSES.in_order() if task is None or loss_class(n).supports(task)]


_SYNC_WORLD = 1
"""Workers whose finite checks agree (see :func:`synced_finite_checks`); 1: each decides alone."""


@contextlib.contextmanager
def synced_finite_checks(world_size: int) -> Iterator[None]:
    """Within the block, :func:`check_finite` asks every Ray Train worker: one worker's non-finite
    value stops them all at the same check, before the next collective (DDP's gradient all-reduce)
    would leave the others waiting for a worker that has stopped. Only for code every worker runs
    in step, such as the post-tuning loop."""
    global _SYNC_WORLD
    saved, _SYNC_WORLD = _SYNC_WORLD, world_size
    try:
        yield
    finally:
        _SYNC_WORLD = saved


def _finite_everywhere(finite: bool) -> bool:
    import torch.distributed as dist

    if _SYNC_WORLD <= 1 or not (dist.is_available() and dist.is_initialized()):
        return finite
    flag = torch.tensor([1 if finite else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def check_finite(value: torch.Tensor, what: str, *, hint: str = "Lower surrogate.lr or raise surrogate.grad_penalty.",
                 **context: Any) -> None:
    """Raise ``SurrogateDivergedError`` naming ``what``, where (``context``) and what to change (``hint``)."""
    finite = bool(torch.isfinite(value).all())
    if not _finite_everywhere(finite):
        where = ", ".join(f"{k} {v}" for k, v in context.items())
        values = value.detach().flatten()[:4].tolist() if not finite else "finite here, not on another worker"
        raise SurrogateDivergedError(f"{what} is not finite ({values}) at {where}; the model was not updated. {hint}",
                                     what=f"{what} is not finite ({values})")
