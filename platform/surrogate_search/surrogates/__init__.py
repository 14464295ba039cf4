"""Post-tuning losses: learned surrogates (``deep_embedding``, ``relational``) and fixed baselines
(``proxy``, ``weighted_proxy``, ``anyloss``, ``expected_edit_distance``, ``giou``, ``rotated_iou_loss``,
``kld``, ``recall_at_k``), found by name in one registry.

Add your own (a plugin module, see README)::

    @register_loss("huber_embedding")
    class HuberEmbedding(LearnedSurrogateLoss):
        Options = HuberOptions          # its own section: --set huber_embedding.delta=0.5
        def fit_loss(self, estimates, errors): ...
"""

# Registration order is the default comparison's order: baselines first, then learned surrogates.
from surrogate_search.surrogates import proxy  # noqa: F401, I001  (registers proxy, weighted_proxy)
from surrogate_search.surrogates import anyloss  # noqa: F401
from surrogate_search.surrogates import expected_edit_distance  # noqa: F401
from surrogate_search.surrogates import giou  # noqa: F401
from surrogate_search.surrogates import rotated_iou_loss  # noqa: F401
from surrogate_search.surrogates import kld  # noqa: F401
from surrogate_search.surrogates import recall_at_k  # noqa: F401
from surrogate_search.surrogates import deep_embedding  # noqa: F401
from surrogate_search.surrogates import relational  # noqa: F401
from surrogate_search.surrogates import pair_encoder, ranking_encoder  # noqa: F401  (register encoders)
from surrogate_search.surrogates.base import (
    LEARNED_SECTIONS,
    LOSSES,
    PostTuneLoss,
    SurrogateDivergedError,
    create_loss,
    list_methods,
    loss_class,
    register_loss,
)
from surrogate_search.surrogates.encoders import ENCODERS
from surrogate_search.surrogates.learned import EmbeddingSurrogate, LearnedSurrogateLoss, spearman
from surrogate_search.surrogates.options import SurrogateConfig
from surrogate_search.surrogates.saved import SavedSurrogate, load_surrogate, save_surrogate

__all__ = [
    "ENCODERS",
    "LEARNED_SECTIONS",
    "LOSSES",
    "EmbeddingSurrogate",
    "LearnedSurrogateLoss",
    "PostTuneLoss",
    "SavedSurrogate",
    "SurrogateConfig",
    "SurrogateDivergedError",
    "create_loss",
    "list_methods",
    "load_surrogate",
    "loss_class",
    "register_loss",
    "save_surrogate",
    "spearman",
]
