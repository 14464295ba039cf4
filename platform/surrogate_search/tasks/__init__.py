"""Tasks (data + model + proxy loss + decoding + metric) and their registry.

Add your own by subclassing :class:`Task` and registering it::

    from surrogate_search.tasks import Task, register_task

    @register_task("my_task")
    class MyTask(Task):
        name = "my_task"
        metric_name = "f1"
        ...
"""

from surrogate_search.tasks import imbalanced_tabular, synthetic_text  # noqa: F401  (registers)
from surrogate_search.tasks import box_localization, retrieval, rotated_box  # noqa: F401
from surrogate_search.tasks.base import TASKS, Split, Splits, Task, TrainDefaults, get_task, list_tasks, register_task

__all__ = ["TASKS", "Split", "Splits", "Task", "TrainDefaults", "get_task", "list_tasks", "register_task"]
