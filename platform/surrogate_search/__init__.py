"""surrogate-search: learned surrogates of non-differentiable metrics, post-tuning, and their search."""

from surrogate_search.checkpoint import BaseCheckpoint, CheckpointError, load_checkpoint, save_checkpoint
from surrogate_search.metrics import Metric, get_metric, list_metrics, register_metric
from surrogate_search.pretrain import PretrainResult, pretrain
from surrogate_search.registry import UnknownNameError
from surrogate_search.tasks import Split, Splits, Task, get_task, list_tasks, register_task

__version__ = "0.1.0"

# Tasks and metrics that user modules register (SURROGATE_SEARCH_PLUGINS), here and in Ray workers.
from surrogate_search import plugins as _plugins  # noqa: E402

_plugins.load_plugins()

__all__ = [
    "BaseCheckpoint",
    "CheckpointError",
    "Metric",
    "PretrainResult",
    "Split",
    "Splits",
    "Task",
    "UnknownNameError",
    "get_metric",
    "get_task",
    "list_metrics",
    "list_tasks",
    "load_checkpoint",
    "pretrain",
    "register_metric",
    "register_task",
    "save_checkpoint",
]
