"""surrogate-search: learned surrogates of non-differentiable metrics, post-tuning, and their search."""

from surrogate_search.api import compare, fetch_surrogate, posttune, run_search
from surrogate_search.checkpoint import BaseCheckpoint, CheckpointError, load_checkpoint, save_checkpoint
from surrogate_search.config import PostTuneConfig
from surrogate_search.metrics import ConfusionMatrixMetric, Metric, get_metric, list_metrics, register_metric
from surrogate_search.pretrain import PretrainResult, ensure_base_checkpoint, pretrain
from surrogate_search.registry import UnknownNameError
from surrogate_search.search import load_space
from surrogate_search.surrogates import LearnedSurrogateLoss, PostTuneLoss, list_methods, register_loss
from surrogate_search.tasks import Split, Splits, Task, get_task, list_tasks, register_task

__version__ = "0.1.0"

# Tasks, metrics and losses that user modules register (SURROGATE_SEARCH_PLUGINS), here and in Ray workers.
from surrogate_search import plugins as _plugins  # noqa: E402

_plugins.load_plugins()

__all__ = [
    "BaseCheckpoint",
    "CheckpointError",
    "ConfusionMatrixMetric",
    "LearnedSurrogateLoss",
    "Metric",
    "PostTuneConfig",
    "PostTuneLoss",
    "PretrainResult",
    "Split",
    "Splits",
    "Task",
    "UnknownNameError",
    "compare",
    "ensure_base_checkpoint",
    "fetch_surrogate",
    "get_metric",
    "get_task",
    "list_methods",
    "list_metrics",
    "list_tasks",
    "load_checkpoint",
    "load_space",
    "posttune",
    "pretrain",
    "register_loss",
    "register_metric",
    "register_task",
    "run_search",
    "save_checkpoint",
]
