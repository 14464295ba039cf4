"""Learned surrogates ``e_hat(z, y) = ||h(z, y) - h(y, y)||_2`` and how they are trained.

The architecture is shared (LS-ED's deep embedding, Patel et al. 2020); what differs is the
objective: ``deep_embedding`` regresses the metric, ``relational`` (ReLoss, Huang et al. 2022)
only asks that the surrogate orders items as the metric does. Both keep the surrogate's gradient
with respect to the prediction near unit length: ``lambda * (||grad_z e_hat||_2 - 1)^2``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import ClassVar

import torch

from surrogate_search.sampling import Pairs
from surrogate_search.surrogates.base import PostTuneLoss, check_finite
from surrogate_search.surrogates.encoders import ENCODERS, set_encoders
from surrogate_search.surrogates.options import SurrogateConfig
from surrogate_search.tasks import Split, Task


class EmbeddingSurrogate(torch.nn.Module):
    """``e_hat(z, y) = ||h(z, y) - h(y, y)||_2``: zero when the prediction is the label itself."""

    def __init__(self, encoder: torch.nn.Module, features: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.features = features if features is not None else torch.nn.Identity()  # the task's Task.surrogate_features()
        self.encoder = encoder

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        predictions, targets = self.features(predictions), self.features(targets)
        # Two passes rather than one over both: h(y, y) needs no gradient with respect to its input.
        difference = self.encoder(predictions, targets) - self.encoder(targets, targets)
        return torch.sqrt(difference.pow(2).sum(-1) + 1e-8)  # smooth at 0, where the plain norm's gradient is undefined


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Within the block ``module``'s parameters take no gradient (autograd skips their backward)."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def gradient_norms(values: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``||d value_i / d input_i||_2`` per item, kept in the graph so it can be penalised."""
    (grads,) = torch.autograd.grad(values.sum(), inputs, create_graph=True)
    return grads.flatten(1).norm(dim=1)


def soft_rank(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """Differentiable ranks (1..n) from pairwise sigmoids; ``temperature`` is relative to the
    spread of ``x``. Written out here (O(n^2), fine for a few hundred items) instead of pulling in a
    compiled sorting package."""
    scale = temperature * x.detach().std().clamp_min(1e-6)
    pairwise = torch.sigmoid((x[:, None] - x[None, :]) / scale)
    return pairwise.sum(1) + 0.5  # the diagonal adds 0.5; ranks start at 1


def hard_rank(x: torch.Tensor) -> torch.Tensor:
    """Ranks with ties averaged (as scipy.stats.rankdata's default)."""
    less = (x[:, None] > x[None, :]).sum(1).float()
    equal = (x[:, None] == x[None, :]).sum(1).float()
    return less + (equal + 1) / 2


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-8)


def spearman(estimates: torch.Tensor, truth: torch.Tensor) -> float:
    """Plain Spearman rank correlation (for reporting fidelity)."""
    if len(truth) < 2 or truth.std() == 0 or estimates.std() == 0:
        return float("nan")
    return float(pearson(hard_rank(estimates.detach().float()), hard_rank(truth.float())))


class LearnedSurrogateLoss(PostTuneLoss):
    """A surrogate network trained alongside the model. Subclasses give the fitting objective
    (``fit_loss``); the network and its training read the ``surrogate`` and ``sampling`` sections."""

    learned = True
    objective: ClassVar[str]

    def __init__(self, task: Task, config) -> None:  # type: ignore[no-untyped-def]
        super().__init__(task, config)
        cfg = config.surrogate
        reads_sets = cfg.encoder in set_encoders()
        if task.set_level and not reads_sets:
            raise ValueError(f"task {task.name!r} has a set-level metric ({task.metric_name}); surrogate.encoder "
                             f"must be a set encoder ({', '.join(map(repr, set_encoders()))}), got {cfg.encoder!r}")
        if not task.set_level and reads_sets:
            raise ValueError(f"surrogate.encoder {cfg.encoder!r} is for set-level metrics; task {task.name!r} scores "
                             f"each sample: use one of {[n for n in ENCODERS.in_order() if n not in set_encoders()]}")
        self.surrogate = self.build_surrogate(task, cfg)

    def build_surrogate(self, task: Task, cfg: SurrogateConfig) -> torch.nn.Module:
        """The network ``e_hat(z, y)``: LS-ED's embedding distance unless a loss reads otherwise."""
        frames, classes = task.surrogate_feature_shape
        return EmbeddingSurrogate(ENCODERS.create(cfg.encoder, num_classes=classes, frames=frames, cfg=cfg),
                                  features=task.surrogate_features())

    @classmethod
    def supports(cls, task: Task) -> bool:
        return type(task).surrogate_targets is not Task.surrogate_targets

    def score(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.surrogate(predictions, self.targets_for(predictions, targets))

    def targets_for(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """What the surrogate compares ``predictions`` with (``surrogate.align_targets``)."""
        if not self.config.surrogate.align_targets or self.task.set_level:
            return targets
        return self.task.align_targets(predictions.detach(), targets)

    @property
    def penalty_weight(self) -> float:
        """lambda of the gradient penalty: ``surrogate.grad_penalty`` unless the loss has its own."""
        return self.config.surrogate.grad_penalty

    def fit_loss(self, estimates: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, pairs: Pairs) -> tuple[torch.Tensor, dict[str, float]]:
        """The surrogate's training loss on ``pairs``; the caller steps the surrogate's optimizer."""
        z = pairs.predictions.detach().requires_grad_(True)
        estimates = self.surrogate(z, self.targets_for(z, pairs.targets))
        fit = self.fit_loss(estimates, pairs.errors)
        penalised = (gradient_norms(estimates, z) - 1.0).pow(2)
        if self.config.surrogate.penalty_scope == "errors":  # leave items the model gets right alone
            penalised = penalised[pairs.errors > 0]
        penalty = penalised.mean() if len(penalised) else estimates.sum() * 0.0
        loss = fit + self.penalty_weight * penalty
        check_finite(loss, f"the {self.name} surrogate's training loss", step="surrogate update")
        return loss, {"surrogate/fit": float(fit.detach()), "surrogate/grad_penalty": float(penalty.detach()),
                "surrogate/mae": float((estimates.detach() - pairs.errors).abs().mean())}

    def model_loss(self, outputs: torch.Tensor, batch: Split) -> tuple[torch.Tensor, dict[str, float]]:
        predictions = self.task.predict(outputs.float())
        targets = self.task.surrogate_targets(batch)
        if self.task.set_level:  # the whole batch is one set
            predictions, targets = predictions.unsqueeze(0), targets.unsqueeze(0)
        targets = self.targets_for(predictions, targets)
        with frozen(self.surrogate):  # the model's update does not train the surrogate: no gradients for it
            estimates = self.surrogate(predictions, targets)
        check_finite(estimates, f"the {self.name} surrogate's output", step="model update")
        stats: dict[str, float] = {"surrogate/value": float(estimates.detach().mean())}
        keep = torch.ones_like(estimates, dtype=torch.bool)
        threshold = self.config.surrogate.filter_threshold
        if threshold is not None:
            labels = [batch.labels] if self.task.set_level else batch.labels
            errors = self.task.item_errors(predictions.detach().cpu(), labels).to(estimates.device)
            keep = (estimates.detach() - errors).abs() <= threshold
            stats["surrogate/kept_fraction"] = float(keep.float().mean())
        loss = (estimates * keep).sum() / keep.sum().clamp_min(1)
        if self.config.surrogate.proxy_weight:
            proxy = self.task.proxy_loss(outputs, batch)
            loss = loss + self.config.surrogate.proxy_weight * proxy
            stats["proxy_loss"] = float(proxy.detach())
        return loss, stats


