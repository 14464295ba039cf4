"""``imbalanced_tabular``: binary classification with a rare positive class, an MLP, BCE, and F1."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from surrogate_search.tasks.base import Split, Splits, Task, TrainDefaults, register_task


# scikit-learn is imported where data is made, not at import time: every Ray process imports
# this module (task registry), and scikit-learn costs seconds to import.


def _breast_cancer(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return data.data, (data.target == 0).astype(np.int64)  # positive = malignant (37%)


def _digits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    # 8 is the digit most often confused with others (3, 5, 9, 1): one-vs-rest with 10% positives.
    return data.data, (data.target == 8).astype(np.int64)


SYNTHETIC_SAMPLES = 4000
"""The synthetic set's default size: 214 positives, 43 in val and 43 in test, where one
positive moves F1 by about 0.012 (more than the spread over training seeds); ``samples`` makes it
larger."""


def _synthetic(seed: int, samples: int = SYNTHETIC_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=samples, n_features=20, n_informative=6, n_redundant=4,
                               weights=[0.95, 0.05], flip_y=0.01, class_sep=0.8, random_state=seed)
    return x, y.astype(np.int64)  # 5% positives


DATASETS = {"breast_cancer": _breast_cancer, "digits": _digits, "synthetic": _synthetic}
"""Datasets that scikit-learn ships or generates: nothing is downloaded."""


class MLP(nn.Module):
    """Features -> one logit for the positive class."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (64, 32), dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


@register_task("imbalanced_tabular")
class ImbalancedTabular(Task):
    """Binary classification on ``dataset`` (breast_cancer, digits 8-vs-rest, synthetic with 5%
    positives), split 60/20/20 stratified by ``seed``, features standardised on the train split.
    ``samples`` (synthetic only, default 4000): how many rows the synthetic set has."""

    name = "imbalanced_tabular"
    version = 2
    """2: the base model trains without the tuning part (``tuning_fraction`` of the train split)."""
    metric_name = "f1"
    report_metrics = ("balanced_accuracy", "gmean", "accuracy")
    checkpoint_options = ("dataset", "samples")

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = set(options) - {"dataset", "samples"}
        if unknown:
            raise ValueError(f"task 'imbalanced_tabular': unknown option(s) {sorted(unknown)}; known: ['dataset', 'samples']")
        dataset = options.get("dataset", "synthetic")
        if dataset not in DATASETS:
            raise ValueError(f"task 'imbalanced_tabular': unknown dataset {dataset!r}; known: {sorted(DATASETS)}")
        if "samples" not in options:
            return {"dataset": dataset}
        if dataset != "synthetic":
            raise ValueError(f"task 'imbalanced_tabular': option 'samples' sizes the synthetic dataset only; "
                             f"dataset {dataset!r} has a fixed size")
        samples = options["samples"]
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1000:
            raise ValueError(f"task 'imbalanced_tabular': samples must be an integer >= 1000 (50 positives), got {samples!r}")
        return {"dataset": dataset, "samples": samples}

    def raw_data(self) -> tuple[np.ndarray, np.ndarray]:
        """Features and 0/1 labels before splitting; a subclass overrides this to bring its own data."""
        sizes = {k: v for k, v in self.options.items() if k != "dataset"}  # ``samples``: synthetic only
        return DATASETS[self.options["dataset"]](self.seed, **sizes)

    def load_splits(self, cache_dir: Any = None) -> Splits:
        from sklearn.model_selection import train_test_split

        x, y = self.raw_data()
        x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=self.seed)
        x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=self.seed)
        mean, std = x_train.mean(0), x_train.std(0) + 1e-8

        def split(x_: np.ndarray, y_: np.ndarray) -> Split:
            features = torch.tensor((x_ - mean) / std, dtype=torch.float32)
            return Split({"features": features, "targets": torch.tensor(y_, dtype=torch.float32)}, [int(v) for v in y_])

        return Splits(split(x_train, y_train), split(x_val, y_val), split(x_test, y_test))

    def default_model_options(self) -> dict[str, Any]:
        known = {"breast_cancer": 30, "digits": 64, "synthetic": 20}
        in_features = known.get(self.options.get("dataset", ""), 0) or self.raw_data()[0].shape[1]
        return {"in_features": in_features, "hidden": [64, 32], "dropout": 0.1}

    def build_model(self, **model_options: Any) -> nn.Module:
        opts = {**self.default_model_options(), **model_options}
        return MLP(opts["in_features"], tuple(opts["hidden"]), opts["dropout"])

    def train_defaults(self) -> TrainDefaults:
        return TrainDefaults(batch_size=64, lr=1e-3, weight_decay=1e-4, max_epochs=500, patience=20)

    def forward(self, model: nn.Module, batch: Split) -> torch.Tensor:
        return model(batch.tensors["features"])

    def proxy_loss(self, outputs: torch.Tensor, batch: Split) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs.float(), batch.tensors["targets"])

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.sigmoid()

    def decode(self, predictions: torch.Tensor) -> list[int]:
        return (predictions.detach() > 0.5).long().cpu().tolist()

    # --- what a learned surrogate sees -------------------------------------------------------------
    def surrogate_targets(self, batch: Split) -> torch.Tensor:
        return batch.tensors["targets"]

    def true_class_probabilities(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The probability of each sample's own label: ``p`` for a positive, ``1 - p`` for a negative."""
        return torch.where(targets > 0.5, predictions, 1.0 - predictions)

    def random_pairs(self, n_items: int, set_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        """Random sets: a positive rate between 2% and 40%, classifiers from useless to perfect."""
        g = generator
        rate = 0.02 + 0.38 * torch.rand(n_items, 1, generator=g)
        labels = (torch.rand(n_items, set_size, generator=g) < rate).float()
        separation = 4.0 * torch.rand(n_items, 1, generator=g)
        spread = 0.3 + 2.0 * torch.rand(n_items, 1, generator=g)
        bias = 1.5 * torch.randn(n_items, 1, generator=g)
        logits = separation * (2 * labels - 1) + spread * torch.randn(n_items, set_size, generator=g) + bias
        return logits.sigmoid(), labels, [[int(v) for v in row] for row in labels.long().tolist()]

    def perturb(self, outputs: torch.Tensor, noise: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        gauss = torch.randn(outputs.shape, generator=generator).to(outputs.device)
        return (outputs + 2.0 * noise.view(-1) * gauss).sigmoid()
