"""Where a learned surrogate's training pairs come from: ``global``, ``local``, ``local_global``,
``rerandomised``.

A sampler returns :class:`Pairs`: predictions, the targets in the surrogate's form, and the true
metric of each item as an error (lower is better), computed exactly from the predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from surrogate_search.metrics import ConfusionMatrixMetric
from surrogate_search.registry import Registry
from surrogate_search.tasks import Split, Task
from surrogate_search.utils import check_range


SOURCES = ("fresh", "batch")


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
    target: str = "decision"
    """What each pair's error is, i.e. what the surrogate learns: ``decision``, the metric of the
    task's own decisions (F1 at the 0.5 threshold); ``best_threshold`` (set-level confusion-matrix
    metrics such as F1), the metric at each set's best decision threshold, a measure of how well the
    set is ranked, since the figure reported is the metric at a threshold tuned on val."""
    source: str = "fresh"
    """Where local pairs come from between model updates: ``fresh``, the current model run (in
    eval mode) on samples drawn from the tuning data, one forward pass more per surrogate update;
    ``batch``, the model update's own outputs on its batch, detached and drawn from with
    replacement (no extra forward pass; the surrogate update then comes between that forward
    pass and the loss). Pretraining and warm-up, which have no model update, always draw fresh."""

    def validate(self) -> None:
        SAMPLERS.get(self.strategy)
        TARGETS.get(self.target)
        if self.source not in SOURCES:
            raise ValueError(f"sampling.source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        check_range("sampling", self, non_negative=("noise",), unit=("local_ratio",))


@dataclass
class Seen:
    """A model update's own forward pass: its batch and the model's outputs on it (detached)."""

    batch: Split
    outputs: torch.Tensor


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
    """Draws ``n_items`` fresh pairs; local samplers read the model as it is now, or, with
    ``sampling.source='batch'`` and a ``seen`` forward pass, the outputs it has just produced."""

    def __init__(self, task: Task, split: Split, config: SamplingConfig, set_size: int,
                 generator: torch.Generator, device: torch.device | str = "cpu") -> None:
        self.task, self.split, self.config = task, split, config
        self.set_size, self.generator, self.device = set_size, generator, torch.device(device)

    def sample(self, n_items: int, model: nn.Module, seen: Seen | None = None) -> Pairs:
        raise NotImplementedError


SAMPLERS: Registry[PairSampler] = Registry("sampling strategy")

TARGETS: Registry[torch.Tensor] = Registry("sampling target")
"""``sampling.target``: (task, predictions, labels) -> the error of each item."""


@TARGETS.register("decision")
def decision_errors(task: Task, predictions: torch.Tensor, labels: Sequence[Any]) -> torch.Tensor:
    """The task's metric of its own decisions (``task.decode``), as an error."""
    return task.item_errors(predictions, labels)


@TARGETS.register("best_threshold")
def best_threshold_errors(task: Task, predictions: torch.Tensor, labels: Sequence[Any]) -> torch.Tensor:
    """The metric of each set at the decision threshold that is best for that set, as an error:
    :meth:`ConfusionMatrixMetric.best_threshold`'s value, for all sets at once."""
    check_best_threshold_target(task)
    metric = task.metric
    assert isinstance(metric, ConfusionMatrixMetric)
    p = predictions.detach().cpu().double()
    p, order = p.sort(dim=1, descending=True)
    y = torch.tensor([list(l) for l in labels], dtype=torch.float64).gather(1, order)
    n = p.shape[1]
    # Cut after the k highest probabilities, k = 0..n, only where the probability changes.
    tp = torch.cat([torch.zeros(len(p), 1, dtype=p.dtype), y.cumsum(1)], dim=1)
    k = torch.arange(n + 1, dtype=p.dtype)
    positives = y.sum(1, keepdim=True)
    fp, fn = k - tp, positives - tp
    tn = n - positives - fp
    with torch.no_grad():
        values = metric.formula(tp, fp, fn, tn)
    undefined = values.isnan()  # 0/0: the metric's own rule for an empty class (F1: 1 with nothing to find)
    for i, j in undefined.nonzero().tolist():
        values[i, j] = metric.from_counts(*(int(c[i, j]) for c in (tp, fp, fn, tn)))
    cut = torch.ones_like(values, dtype=torch.bool)
    cut[:, 1:n] = p[:, :-1] > p[:, 1:]
    best = values.masked_fill(~cut, -torch.inf).amax(1)
    return torch.tensor([task.error(float(v)) for v in best], dtype=torch.float32)


def check_best_threshold_target(task: Task) -> None:
    """Fail, naming the task's metric, where a set's best threshold does not exist."""
    if not (task.set_level and isinstance(task.metric, ConfusionMatrixMetric)):
        raise ValueError(f"sampling.target 'best_threshold' needs a set-level confusion-matrix metric (such as f1); "
                         f"task {task.name!r} is judged by {task.metric_name}: use 'decision'")


best_threshold_errors.check = check_best_threshold_target  # type: ignore[attr-defined]


def item_errors(task: Task, config: SamplingConfig, predictions: torch.Tensor, labels: Sequence[Any]) -> torch.Tensor:
    """The error of each item as ``config.target`` defines it."""
    return TARGETS.get(config.target)(task, predictions, labels)


@SAMPLERS.register("global")
class GlobalSampler(PairSampler):
    """Model-free pairs spanning the metric's whole range (random strings and edits of them;
    random probability sets for F1)."""

    def sample(self, n_items: int, model: nn.Module, seen: Seen | None = None) -> Pairs:
        predictions, targets, labels = self.task.random_pairs(n_items, self.set_size, self.generator)
        errors = item_errors(self.task, self.config, predictions, labels)
        return Pairs(predictions, targets, errors).to(self.device)


@SAMPLERS.register("local")
class LocalSampler(PairSampler):
    """The current model's predictions on the data it is tuned on against their labels, each
    perturbed by a random scale in ``[0, noise]`` so that even a nearly perfect model yields pairs
    with errors. Fresh samples by default; the model update's own batch with ``source='batch'``."""

    @torch.no_grad()
    def sample(self, n_items: int, model: nn.Module, seen: Seen | None = None) -> Pairs:
        per_item = self.set_size if self.task.set_level else 1
        if seen is not None and self.config.source == "batch":
            index = torch.randint(len(seen.batch), (n_items * per_item,), generator=self.generator)
            return self.pairs(seen.outputs.float(), seen.batch, index, n_items, per_item)
        index = torch.randint(len(self.split), (n_items * per_item,), generator=self.generator)
        # Sets drawn from a small tuning split repeat samples (1,024 draws from 346 images touch ~330):
        # each distinct sample is loaded and run through the model once (in eval mode, so its output
        # is the same either way), then repeated as drawn.
        distinct, inverse = index.unique(return_inverse=True)
        batch = self.split.subset(distinct).to(self.device)
        was_training = model.training
        model.eval()
        outputs = self.task.forward(model, batch).float()
        model.train(was_training)
        return self.pairs(outputs, batch, inverse, n_items, per_item)

    def pairs(self, outputs: torch.Tensor, batch: Split, index: torch.Tensor, n_items: int, per_item: int) -> Pairs:
        """Pairs from the model's ``outputs`` on ``batch``, taking its samples at ``index`` as drawn."""
        drawn = index.to(outputs.device)
        predictions = self.predictions(outputs[drawn], n_items, per_item)
        targets = self.task.surrogate_targets(batch)[drawn]
        labels: list[Any] = [batch.labels[i] for i in index.tolist()]
        if self.task.set_level:
            predictions = predictions.view(n_items, per_item, *predictions.shape[1:])  # (items, N, ...) sets
            targets = targets.view(n_items, per_item, *targets.shape[1:])
            labels = [labels[i * per_item:(i + 1) * per_item] for i in range(n_items)]
        errors = item_errors(self.task, self.config, predictions.cpu(), labels).to(self.device)
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

    def sample(self, n_items: int, model: nn.Module, seen: Seen | None = None) -> Pairs:
        n_local = round(self.config.local_ratio * n_items)
        parts = []
        if n_local:
            parts.append(self.local.sample(n_local, model, seen))
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
    check_target = getattr(TARGETS.get(config.target), "check", None)
    if check_target is not None:  # fails before any pair is drawn
        check_target(task)
    return SAMPLERS.get(config.strategy)(task, split, config, set_size, generator, device)  # type: ignore[return-value]


def list_strategies() -> list[str]:
    return SAMPLERS.names()
