"""The ``surrogate`` config section: what every learned surrogate is built and trained with."""

from __future__ import annotations

from dataclasses import dataclass

from surrogate_search.utils import check_range

PENALTY_SCOPES = ("all", "errors")
FITS = ("squared", "l1")
NETWORK_KEYS = ("encoder", "width", "depth", "embedding", "align_targets")
"""Settings that fix what a trained surrogate is (its network's shape, and the label layout it
compares a prediction with): a saved surrogate carries them, and a run that starts from it keeps them."""


@dataclass
class SurrogateConfig:
    """A learned surrogate: its architecture, how it is trained, and how the model's loss uses it."""

    encoder: str = "conv_lstm"
    """Sequence tasks: ``conv``, ``lstm`` or ``conv_lstm``; set-level tasks: ``deepsets``."""
    width: int = 64
    depth: int = 2
    embedding: int = 64
    lr: float = 1e-3
    steps_per_model_step: int = 1
    """k: surrogate updates on fresh pairs between two model updates (0: the surrogate stays as
    warm-up or pretraining left it)."""
    batch_size: int = 64
    """Items per surrogate update (samples for text; sets for F1)."""
    warmup_steps: int = 300
    """Surrogate updates before the first model update (after ``pretrain_steps``, if any)."""
    pretrain_steps: int = 0
    """Surrogate updates on pairs from the *base* model, made once per base checkpoint and
    surrogate settings and cached (``$SURROGATE_SEARCH_CACHE/surrogates``): every seed and trial
    of that base then starts from the same trained surrogate instead of learning it from scratch.
    0: no pretraining, each run learns its surrogate in its warm-up. A run that starts from a saved
    or registered surrogate (``posttune --surrogate models:/NAME@champion``) skips it."""
    grad_penalty: float = 0.1
    """lambda in ``fit + lambda * (||grad_z e_hat|| - 1)^2`` (``relational`` has its own,
    ``relational.grad_penalty``, default 10 as in ReLoss)."""
    penalty_scope: str = "all"
    """Pairs the gradient penalty applies to: ``all``, or ``errors`` (only pairs whose metric is
    not perfect, so items the model already gets right are not pushed to a unit-size gradient)."""
    fit: str = "squared"
    """``deep_embedding``'s regression loss: ``squared`` (mean squared error, LS-ED) or ``l1``
    (mean absolute error, less swayed by the few pairs with large errors)."""
    filter_threshold: float | None = None
    """FEDS-style: drop samples whose surrogate value is further than this from the true metric
    from the model's loss (None keeps all)."""
    proxy_weight: float = 0.0
    """Weight of the task's proxy loss (CTC, BCE) added to the surrogate's loss in a model update."""
    align_targets: bool = True
    """Compare each prediction with the label laid out in the prediction's own frames (CTC: the
    label's best path under the prediction); false: the task's fixed layout (CTC: characters
    packed into the first frames), kept to measure what alignment changes."""

    def validate(self) -> None:
        check_range("surrogate", self, positive=("width", "depth", "embedding", "batch_size"),
                    non_negative=("steps_per_model_step", "warmup_steps", "pretrain_steps", "grad_penalty",
                                  "proxy_weight"), step_size=("lr",))
        for key, known in (("penalty_scope", PENALTY_SCOPES), ("fit", FITS)):
            if getattr(self, key) not in known:
                raise ValueError(f"surrogate.{key} must be one of {', '.join(known)}, got {getattr(self, key)!r}")
