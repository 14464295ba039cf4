"""Post-tuning losses: learned surrogates (``deep_embedding``, ``relational``) and fixed baselines
(``proxy``, ``weighted_proxy``, ``anyloss``), found by name in one registry."""

from surrogate_search.surrogates import anyloss, deep_embedding, proxy, relational  # noqa: F401  (registers)
from surrogate_search.surrogates.base import (
    LOSSES,
    PostTuneLoss,
    SurrogateDivergedError,
    create_loss,
    list_methods,
    register_loss,
)
from surrogate_search.surrogates.encoders import ENCODERS
from surrogate_search.surrogates.learned import EmbeddingSurrogate, LearnedSurrogateLoss, spearman

__all__ = [
    "ENCODERS",
    "LOSSES",
    "EmbeddingSurrogate",
    "LearnedSurrogateLoss",
    "PostTuneLoss",
    "SurrogateDivergedError",
    "create_loss",
    "list_methods",
    "register_loss",
    "spearman",
]
