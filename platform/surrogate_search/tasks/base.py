"""The task interface: data + model + proxy loss + decoding + metric, and its registry."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from surrogate_search.metrics import Metric, get_metric
from surrogate_search.registry import Registry
from surrogate_search.utils import update_digest


@dataclass
class Split:
    """One data split: tensors sharing a leading sample dimension, and the labels in the metric's
    own terms (strings for text, 0/1 for classification)."""

    tensors: dict[str, torch.Tensor]
    labels: list[Any]

    def __post_init__(self) -> None:
        sizes = {name: len(t) for name, t in self.tensors.items()}
        if len(set(sizes.values()) | {len(self.labels)}) > 1:
            raise ValueError(f"split tensors disagree on the number of samples: {sizes}, labels: {len(self.labels)}")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> Split:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Split({k: v[idx] for k, v in self.tensors.items()}, [self.labels[i] for i in idx.tolist()])

    def shard(self, rank: int, world_size: int) -> Split:
        """Every ``world_size``-th sample starting at ``rank``: a Ray Train worker's share."""
        return self.subset(range(rank, len(self), world_size))

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[Split]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        stop = len(self) - (len(self) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            yield self.subset(order[start:start + batch_size])

    def to(self, device: torch.device | str) -> Split:
        return Split({k: v.to(device) for k, v in self.tensors.items()}, self.labels)

    def digest(self, rows: int = 256) -> str:
        """A short hash of what this split holds: its labels, each tensor's name, type and shape, and
        the values of up to ``rows`` evenly spaced samples (cheap on a large split, yet it tells apart
        two renderings of the same labels)."""
        digest = hashlib.sha256(labels_digest(self.labels).encode())
        picked = torch.linspace(0, len(self) - 1, min(rows, len(self))).long()
        for name in sorted(self.tensors):
            update_digest(digest, name, self.tensors[name], rows=picked)
        return digest.hexdigest()[:16]


@dataclass
class Splits:
    train: Split
    """What the base model trains on."""
    val: Split
    """What every selection (early stopping, best post-tuning step, thresholds) is made on."""
    test: Split
    """What comparisons report; never used to choose anything."""
    tune: Split | None = None
    """Data the base model never trained on, where post-tuning updates the model (and a learned
    surrogate draws the model's own predictions): a model makes there the errors it makes on
    unseen data, while on its own training split it has memorised nearly every label."""

    def __getitem__(self, name: str) -> Split:
        if name not in ("train", "val", "test", "tune") or getattr(self, name) is None:
            raise KeyError(f"unknown split {name!r}; splits are train, val, test, tune")
        return getattr(self, name)


@dataclass
class TrainDefaults:
    """How a task's base model is trained with its proxy loss (used by ``pretrain``)."""

    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 100
    patience: int = 5
    min_delta: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """A learning problem judged by a non-differentiable metric.

    A task owns its data (seeded train/val/test splits), builds its model, computes the proxy loss
    the base model is trained with (CTC, BCE), turns model outputs into the differentiable
    *prediction* a surrogate reads (``predict``: per-frame probabilities, class probabilities) and
    decodes those into the metric's own terms (strings, 0/1 labels).
    """

    name: ClassVar[str]
    metric_name: ClassVar[str]
    """The primary metric: what post-tuning and the search optimise."""
    report_metrics: ClassVar[tuple[str, ...]] = ()
    """Further metrics printed and logged beside the primary one."""
    checkpoint_options: ClassVar[tuple[str, ...]] = ("dataset",)
    """Options that name a different model or dataset, hence a base checkpoint of its own: they
    are part of its default folder (``runs/base_<task>_<value>...``)."""
    version: ClassVar[int] = 1
    """Version of the task's data definition (dataset, labelling, splits). Bump it when a change makes
    base checkpoints trained before it wrong for the task: loading one is then refused, with the
    command that pretrains it again."""

    def __init__(self, *, seed: int = 0, **options: Any) -> None:
        self.seed = seed
        self.options = self.validate_options(options)

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if options:
            raise ValueError(f"task {self.name!r} takes no options, got {sorted(options)}")
        return {}

    @property
    def metric(self) -> Metric:
        return get_metric(self.metric_name)

    @property
    def config(self) -> dict[str, Any]:
        """What identifies this task's data: stored in checkpoints and compared on load."""
        return {"task": self.name, "seed": self.seed, "options": dict(self.options)}

    # --- data -------------------------------------------------------------------------------------
    tuning_fraction: ClassVar[float] = 0.2
    """Share of the training split held out as the tuning part, for tasks without their own."""

    @abstractmethod
    def load_splits(self, cache_dir: str | Path | None = None) -> Splits:
        """Seeded train/val/test splits (and a ``tune`` split where the task can make fresh data);
        where rendering is slow they are cached in ``cache_dir``."""

    def splits(self, cache_dir: str | Path | None = None) -> Splits:
        """The splits everything here uses: :meth:`load_splits`, with a tuning part. A task without
        its own gives up a seeded ``tuning_fraction`` of its training split, which the base model
        then never trains on."""
        splits = self.load_splits(cache_dir)
        if splits.tune is not None:
            return splits
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(self.seed + 7919))
        held = max(1, round(self.tuning_fraction * len(splits.train)))
        return Splits(splits.train.subset(order[held:].sort().values), splits.val, splits.test,
                      tune=splits.train.subset(order[:held].sort().values))

    def fresh_train_split(self, epoch: int) -> Split | None:
        """New training samples for pretraining's ``epoch`` (2, 3, ...; epoch 1 trains on the train
        split): as many as the train split holds, from a stream that no split and no other epoch
        draws from, so that a base model pretrained with ``fresh_data`` sees each sample once and
        cannot memorise them. None (the default): the task has a fixed dataset."""
        return None

    def fingerprint(self, splits: Splits) -> dict[str, Any]:
        """What a base checkpoint records of this task's definition and data, and compares on load:
        a model trained on other data is refused instead of being post-tuned into nonsense. The
        default covers the name, ``version``, options and data seed, each split's size and a digest
        of its labels (in order: the labelling, the split and the seed), and the label values
        themselves where there are few (the classes). A task whose data depends on more (a
        vocabulary, a label mapping kept outside the labels) adds it: ``{**super().fingerprint(splits),
        "vocabulary": ...}``; values must be JSON-like (str, numbers, lists, dicts)."""
        named = {name: getattr(splits, name) for name in ("train", "val", "test", "tune")}
        present = {name: split for name, split in named.items() if split is not None}
        values = sorted({label if isinstance(label, (int, float, str)) else str(label) for label in _plain(splits.val.labels)},
                        key=str)
        return {"task": self.name, "version": int(self.version), "options": dict(self.options), "data_seed": self.seed,
                "split_sizes": {name: len(split) for name, split in present.items()},
                "labels": {name: labels_digest(split.labels) for name, split in present.items()},
                "classes": values if len(values) <= 20 else f"{len(values)} distinct labels in val"}

    # --- model ------------------------------------------------------------------------------------
    @abstractmethod
    def build_model(self, **model_options: Any) -> nn.Module:
        """A fresh model; ``model_options`` come from the checkpoint when one is loaded."""

    def default_model_options(self) -> dict[str, Any]:
        return {}

    def train_defaults(self) -> TrainDefaults:
        return TrainDefaults()

    def posttune_defaults(self) -> dict[str, Any]:
        """Dotted post-tuning settings that suit this task out of the box; a user's overrides win.
        Set-level metrics need a set encoder and sets large enough to hold positives."""
        if self.set_level:
            return {"batch_size": 128, "surrogate.encoder": "deepsets", "surrogate.batch_size": 32}
        return {"batch_size": 32, "surrogate.encoder": "conv_lstm", "surrogate.batch_size": 64}

    @abstractmethod
    def forward(self, model: nn.Module, batch: Split) -> torch.Tensor:
        """Model outputs (logits) for a batch."""

    @abstractmethod
    def proxy_loss(self, outputs: torch.Tensor, batch: Split) -> torch.Tensor:
        """The differentiable loss the base model is trained with (mean over the batch)."""

    @abstractmethod
    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """Differentiable predictions (probabilities) that surrogates read."""

    @abstractmethod
    def decode(self, predictions: torch.Tensor) -> list[Any]:
        """Predictions in the metric's own terms."""

    # --- what a learned surrogate sees -------------------------------------------------------------
    # A surrogate scores *items*. For a metric that decomposes per sample (edit distance) an item is
    # one sample; for a set-level metric (F1) an item is a whole set of ``set_size`` samples, since
    # F1 of a batch is not a sum over its samples.

    surrogate_shape: ClassVar[tuple[int, int]] = (0, 0)
    """(frames, classes) of a sequence task's predictions; unused by set-level tasks."""

    @property
    def set_level(self) -> bool:
        return not self.metric.decomposable

    def surrogate_targets(self, batch: Split) -> torch.Tensor:
        """Targets in the same form as ``predict``'s output (one-hot frames, 0/1 labels)."""
        raise NotImplementedError(f"task {self.name!r} does not support learned surrogates")

    @property
    def surrogate_feature_shape(self) -> tuple[int, ...]:
        """``surrogate_shape`` of what :meth:`surrogate_features`' module returns (derived from it)."""
        return tuple(self.surrogate_features()(torch.zeros(1, *self.surrogate_shape)).shape[1:])

    def surrogate_features(self) -> nn.Module:
        """The first layer of a learned surrogate: what its network reads of predictions and of their
        (aligned) targets, both in ``predict``'s layout. The values themselves unless a task's values
        have a seam that the metric does not (an angle that wraps round), which its module maps to a
        continuous form. A module (not a method) so that a surrogate logged as a model reads
        ``predict``'s layout; it must be differentiable and hold no weights."""
        return nn.Identity()

    def align_targets(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Surrogate ``targets`` laid out as the (detached) ``predictions`` would be if they were
        right; the identity unless the output layout depends on the prediction (CTC frames)."""
        return targets

    def true_class_probabilities(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The probability each prediction gives its target class (per output for sequences, per
        sample of each set for set-level metrics): what a ReLoss-style ``relational`` surrogate
        reads. Only tasks whose predictions are class probabilities have it."""
        raise NotImplementedError(f"task {self.name!r} does not predict class probabilities")

    def decode_classes(self, classes: torch.Tensor) -> list[Any]:
        """Sequence tasks: a class index per output (e.g. sampled paths) in the metric's own terms.
        Losses that sample outputs (``expected_edit_distance``) apply where a task has it."""
        raise NotImplementedError(f"task {self.name!r} does not decode class indices")

    def random_pairs(self, n_items: int, set_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        """Global sampling: ``(predictions, surrogate targets, labels)`` spanning the metric's range,
        ``n_items`` items (of ``set_size`` samples each for set-level metrics), not from any model."""
        raise NotImplementedError(f"task {self.name!r} does not support global pair sampling")

    def perturb(self, outputs: torch.Tensor, noise: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Local sampling: predictions from model ``outputs`` with per-sample ``noise`` (0 = the
        model's own prediction), so that a converged model still yields pairs with errors."""
        raise NotImplementedError(f"task {self.name!r} does not support local pair sampling")

    def error(self, value: float) -> float:
        """A metric value as an error, lower is better (``1 - F1``, edit distance as is)."""
        return 1.0 - value if self.metric.higher_is_better else value

    def item_errors(self, predictions: torch.Tensor, labels: Sequence[Any]) -> torch.Tensor:
        """The true metric of each item, as an error (lower is better): what a surrogate learns.

        ``predictions`` has a leading item dimension; for set-level metrics ``labels`` holds one
        sequence of labels per item."""
        metric = self.metric
        if not self.set_level:
            values = metric.per_sample(self.decode(predictions), labels)
            errors = [self.error(float(v)) for v in values]
        else:
            errors = [self.error(metric.compute(self.decode(p), list(l))) for p, l in zip(predictions, labels)]
        return torch.tensor(errors, dtype=torch.float32)

    # --- evaluation -------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_split(self, model: nn.Module, split: Split, *, batch_size: int = 256,
                      device: torch.device | str = "cpu") -> torch.Tensor:
        """``predict`` of ``model`` on a whole split, on the CPU (for a confusion-matrix metric: the
        probability of the positive class per sample, from which thresholds are chosen)."""
        was_training = model.training
        model.eval()
        predictions = [self.predict(self.forward(model, batch.to(device))).float().cpu()
                       for batch in split.batches(batch_size)]
        model.train(was_training)
        return torch.cat(predictions)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: Split, *, batch_size: int = 256,
                 device: torch.device | str = "cpu") -> dict[str, float]:
        """The primary metric and the report metrics of ``model`` on ``split``, plus the proxy loss."""
        was_training = model.training
        model.eval()
        decoded: list[Any] = []
        loss_sum = 0.0
        for batch in split.batches(batch_size):
            batch = batch.to(device)
            outputs = self.forward(model, batch)
            loss_sum += float(self.proxy_loss(outputs, batch)) * len(batch)
            decoded.extend(self.decode(self.predict(outputs)))
        model.train(was_training)
        results = {name: get_metric(name).compute(decoded, split.labels)
                   for name in (self.metric_name, *self.report_metrics)}
        results["proxy_loss"] = loss_sum / max(len(split), 1)
        return results


def _plain(labels: Sequence[Any]) -> list[Any]:
    return [label.item() if hasattr(label, "item") else label for label in labels]  # numpy/torch scalars as numbers


def labels_digest(labels: Sequence[Any]) -> str:
    """A short hash of a split's labels, in order: it changes when the labelling, the split sizes or
    the split seed change."""
    text = json.dumps([label if isinstance(label, (str, int, float, bool)) else str(label) for label in _plain(labels)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


TASKS: Registry[Task] = Registry("task")
register_task = TASKS.register


def get_task(name: str, **options: Any) -> Task:
    """Build the task registered under ``name``, e.g. ``get_task("imbalanced_tabular", dataset="digits")``."""
    return TASKS.create(name, **options)


def list_tasks() -> list[str]:
    return TASKS.names()

