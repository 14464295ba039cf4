"""The post-tuning configuration: one object that a CLI flag, a YAML search space or a Ray Tune
trial fills in. Unknown keys and out-of-range values fail with the key and the value named."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

C = TypeVar("C")


@dataclass
class SurrogateConfig:
    """A learned surrogate: its architecture and how it is trained."""

    encoder: str = "conv_lstm"
    """Sequence tasks: ``conv``, ``lstm`` or ``conv_lstm``; set-level tasks: ``deepsets``."""
    width: int = 64
    depth: int = 2
    embedding: int = 64
    lr: float = 1e-3
    steps_per_model_step: int = 1
    """k: surrogate updates on fresh pairs between two model updates."""
    batch_size: int = 64
    """Items per surrogate update (samples for text; sets for F1)."""
    warmup_steps: int = 300
    """Surrogate updates before the first model update."""
    grad_penalty: float = 0.1
    """lambda in ``fit + lambda * (||grad_z e_hat|| - 1)^2``."""
    rank_temperature: float = 0.1
    """Relational surrogates: softness of the soft ranks, relative to the spread of the scores."""
    filter_threshold: float | None = None
    """FEDS-style: drop samples whose surrogate value is further than this from the true metric
    from the model's loss (None keeps all)."""


@dataclass
class SamplingConfig:
    """Where the surrogate's training pairs come from."""

    strategy: str = "local_global"
    """``global`` (model-free pairs over the metric's whole range), ``local`` (the current
    model's predictions on training data) or ``local_global`` (a mixture)."""
    local_ratio: float = 0.5
    """Fraction of local pairs in ``local_global``."""
    noise: float = 1.0
    """Largest perturbation of local predictions (each pair draws a scale in [0, noise]): error-rich
    pairs near the model, even when its own predictions are nearly all right."""


@dataclass
class AnyLossConfig:
    metric: str = "f1"
    """``f1`` (F-beta), ``gmean``, ``balanced_accuracy`` or ``accuracy``."""
    beta: float = 1.0
    amplification: float = 73.0
    """L in ``A(p) = 1 / (1 + exp(-L (p - 0.5)))``; 73 as in the AnyLoss notebooks."""


@dataclass
class PostTuneConfig:
    """Post-tuning from a base checkpoint: the same budget (``steps`` x ``batch_size``) for every method."""

    method: str = "deep_embedding"
    """A registered post-tuning loss: ``proxy``, ``weighted_proxy``, ``anyloss``, ``deep_embedding``, ``relational``."""
    steps: int = 300
    """Model updates: the extra budget every method gets."""
    batch_size: int = 32
    """Samples per model update (and the set size a set-level surrogate scores)."""
    lr: float = 1e-4
    proxy_weight: float = 0.0
    """Weight of the proxy loss (CTC, BCE) added to a surrogate's loss."""
    eval_every: int = 50
    seed: int = 0
    amp: bool = False
    """bfloat16 autocast for the model on CUDA."""
    device: str = "auto"
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    anyloss: AnyLossConfig = field(default_factory=AnyLossConfig)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> PostTuneConfig:
        """Build from nested dicts, e.g. ``{"method": "relational", "surrogate": {"width": 32}}``.
        Dotted keys work too: ``{"surrogate.width": 32}``."""
        return _from_dict(cls, _undot(values or {}), prefix="")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted keys, as MLflow parameters: ``{"surrogate.width": 64, ...}``."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    def validate(self) -> PostTuneConfig:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "eval_every": self.eval_every,
                    "surrogate.width": self.surrogate.width, "surrogate.depth": self.surrogate.depth,
                    "surrogate.embedding": self.surrogate.embedding, "surrogate.batch_size": self.surrogate.batch_size,
                    "surrogate.steps_per_model_step": self.surrogate.steps_per_model_step,
                    "lr": self.lr, "surrogate.lr": self.surrogate.lr, "anyloss.amplification": self.anyloss.amplification}
        for key, value in positive.items():
            if not value > 0:
                raise ValueError(f"post-tuning config: {key} must be > 0, got {value!r}")
        non_negative = {"proxy_weight": self.proxy_weight, "surrogate.warmup_steps": self.surrogate.warmup_steps,
                        "surrogate.grad_penalty": self.surrogate.grad_penalty, "sampling.noise": self.sampling.noise}
        for key, value in non_negative.items():
            if value < 0:
                raise ValueError(f"post-tuning config: {key} must be >= 0, got {value!r}")
        if not 0.0 <= self.sampling.local_ratio <= 1.0:
            raise ValueError(f"post-tuning config: sampling.local_ratio must be in [0, 1], got {self.sampling.local_ratio!r}")
        return self


def _undot(values: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in values.items():
        head, _, rest = str(key).partition(".")
        if rest:
            nested.setdefault(head, {})
            if not isinstance(nested[head], dict):
                raise ValueError(f"post-tuning config: {head!r} is both a value and a section")
            nested[head][rest] = value
        elif isinstance(value, dict):
            nested.setdefault(key, {}).update(value)
        else:
            nested[key] = value
    return nested


def _from_dict(cls: type[C], values: dict[str, Any], prefix: str) -> C:
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"post-tuning config: unknown key(s) {[prefix + k for k in unknown]}; "
                         f"known: {[prefix + k for k in known]}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING else known[name].default
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ValueError(f"post-tuning config: {prefix + name} must be a mapping, got {value!r}")
            kwargs[name] = _from_dict(type(default), value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, default, prefix + name)
    return cls(**kwargs)


def _coerce(value: Any, default: Any, key: str) -> Any:
    # YAML and Optuna hand back ints for floats and numpy scalars; accept what is meant.
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"post-tuning config: {key} must be true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if default is not None and not isinstance(value, type(default)):
        raise ValueError(f"post-tuning config: {key} must be {type(default).__name__}, got {value!r}")
    return value
