"""The ``surrogate`` config section: what every learned surrogate is built and trained with."""

from __future__ import annotations

from dataclasses import dataclass

from surrogate_search.utils import check_range


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
    """k: surrogate updates on fresh pairs between two model updates."""
    batch_size: int = 64
    """Items per surrogate update (samples for text; sets for F1)."""
    warmup_steps: int = 300
    """Surrogate updates before the first model update."""
    grad_penalty: float = 0.1
    """lambda in ``fit + lambda * (||grad_z e_hat|| - 1)^2``."""
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
        check_range("surrogate", self, positive=("width", "depth", "embedding", "lr", "steps_per_model_step",
                                                 "batch_size"),
                    non_negative=("warmup_steps", "grad_penalty", "proxy_weight"))
