"""Where a learned surrogate's training pairs come from: ``global``, ``local``, ``local_global``,
``rerandomised``.

A sampler returns :class:`Pairs`: predictions, the targets in the surrogate's form, and the true
metric of each item as an error (lower is better), computed exactly from the predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from surrogate_search.registry import Registry
from surrogate_search.tasks import Split, Task
from surrogate_search.utils import check_range


@dataclass
class SamplingConfig:
    """The ``sampling`` config section: where a learned surrogate's training pairs come from."""

    strategy: str = "local_global"
    """``global`` (model-free pairs over the metric's whole range), ``local`` (the current
    model's predictions on training data), ``local_global`` (a mixture) or ``rerandomised``
    (ReLoss: the model's predictions with a random fraction of their outputs re-randomised)."""
    local_ratio: float = 0.5
    """Fraction of local pairs in ``local_global``."""
    noise: float = 1.0
    """Largest perturbation of local predictions (each pair draws a scale in [0, noise]): error-rich
    pairs near the model, even when its own predictions are nearly all right."""

    def validate(self) -> None:
        SAMPLERS.get(self.strategy)
        check_range("sampling", self, non_negative=("noise",), unit=("local_ratio",))


@dataclass
class Pairs:
    predictions: torch.Tensor
    """(items, ...) differentiable-form predictions (probabilities)."""
    targets: torch.Tensor
    """(items, ...) targets in the same form."""
    errors: torch.Tensor
    """(items,) the true metric as an error."""

    def __len__(self) -> int:
        return len(self.errors)

    def to(self, device: torch.device | str) -> Pairs:
        return Pairs(self.predictions.to(device), self.targets.to(device), self.errors.to(device))

    @staticmethod
    def cat(parts: list[Pairs]) -> Pairs:
        return Pairs(*(torch.cat([getattr(p, k) for p in parts]) for k in ("predictions", "targets", "errors")))


class PairSampler:
    """Draws ``n_items`` fresh pairs; local samplers read the model as it is now."""

    def __init__(self, task: Task, split: Split, config: SamplingConfig, set_size: int,
                 generator: torch.Generator, device: torch.device | str = "cpu") -> None:
        self.task, self.split, self.config = task, split, config
        self.set_size, self.generator, self.device = set_size, generator, torch.device(device)

    def sample(self, n_items: int, model: nn.Module) -> Pairs:
        raise NotImplementedError


SAMPLERS: Registry[PairSampler] = Registry("sampling strategy")


@SAMPLERS.register("global")
class GlobalSampler(PairSampler):
    """Model-free pairs spanning the metric's whole range (random strings and edits of them;
    random probability sets for F1)."""

    def sample(self, n_items: int, model: nn.Module) -> Pairs:
        predictions, targets, labels = self.task.random_pairs(n_items, self.set_size, self.generator)
        errors = self.task.item_errors(predictions, labels)
        return Pairs(predictions, targets, errors).to(self.device)


@SAMPLERS.register("local")
class LocalSampler(PairSampler):
    """The current model's predictions on training data against their labels, each perturbed by a
    random scale in ``[0, noise]`` so that even a nearly perfect model yields pairs with errors."""

    @torch.no_grad()
    def sample(self, n_items: int, model: nn.Module) -> Pairs:
        per_item = self.set_size if self.task.set_level else 1
        index = torch.randint(len(self.split), (n_items * per_item,), generator=self.generator)
        batch = self.split.subset(index).to(self.device)
        was_training = model.training
        model.eval()
        outputs = self.task.forward(model, batch).float()
        model.train(was_training)
        predictions = self.predictions(outputs, n_items, per_item)
        targets = self.task.surrogate_targets(batch)
        labels: list[Any] = batch.labels
        if self.task.set_level:
            predictions = predictions.view(n_items, per_item, *predictions.shape[1:])  # (items, N, ...) sets
            targets = targets.view(n_items, per_item, *targets.shape[1:])
            labels = [labels[i * per_item:(i + 1) * per_item] for i in range(n_items)]
        errors = self.task.item_errors(predictions.cpu(), labels).to(self.device)
        return Pairs(predictions, targets, errors)

    def predictions(self, outputs: torch.Tensor, n_items: int, per_item: int) -> torch.Tensor:
        """Predictions from the model's ``outputs`` (``n_items * per_item`` samples)."""
        noise = self.config.noise * torch.rand(n_items, generator=self.generator)
        return self.task.perturb(outputs, noise.repeat_interleave(per_item).to(outputs.device), self.generator)


@SAMPLERS.register("local_global")
class LocalGlobalSampler(PairSampler):
    """A ``local_ratio`` share of local pairs, the rest global."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.local = LocalSampler(*args, **kwargs)
        self.global_ = GlobalSampler(*args, **kwargs)

    def sample(self, n_items: int, model: nn.Module) -> Pairs:
        n_local = round(self.config.local_ratio * n_items)
        parts = []
        if n_local:
            parts.append(self.local.sample(n_local, model))
        if n_items - n_local:
            parts.append(self.global_.sample(n_items - n_local, model))
        return Pairs.cat(parts)


@SAMPLERS.register("rerandomised")
class RerandomisedSampler(LocalSampler):
    """ReLoss's groups: the current model's predictions on training data, each item with a random
    fraction (uniform in [0, 1]) of its outputs re-randomised (positions or frames of a sequence,
    samples of a set), so a group's metric spans the range from the model's own error to a random
    guess while the untouched outputs stay the model's."""

    RANDOM = 5.0
    """The perturbation scale of a re-randomised output, far beyond ``noise``'s usual [0, 1]."""

    def predictions(self, outputs: torch.Tensor, n_items: int, per_item: int) -> torch.Tensor:
        own = self.task.perturb(outputs, torch.zeros(len(outputs), device=outputs.device), self.generator)
        random = self.task.perturb(outputs, torch.full((len(outputs),), self.RANDOM, device=outputs.device),
                                   self.generator)
        fraction = torch.rand(n_items, generator=self.generator).repeat_interleave(per_item)
        # One draw per sample of a set, per output (position, frame, coordinate) of an item.
        shape = (len(own),) if self.task.set_level or own.dim() == 1 else tuple(own.shape[:2])
        fraction = fraction.view(-1, *([1] * (len(shape) - 1)))
        chosen = torch.rand(shape, generator=self.generator) < fraction
        chosen = chosen.view(*shape, *([1] * (own.dim() - len(shape)))).to(own.device)
        return torch.where(chosen, random, own)


def create_sampler(task: Task, split: Split, config: SamplingConfig, set_size: int,
                   generator: torch.Generator, device: torch.device | str = "cpu") -> PairSampler:
    return SAMPLERS.get(config.strategy)(task, split, config, set_size, generator, device)  # type: ignore[return-value]


def list_strategies() -> list[str]:
    return SAMPLERS.names()
