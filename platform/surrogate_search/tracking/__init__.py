"""MLflow tracking: experiments, search and trial runs, comparison runs, artifacts and the report.

What is recorded
    One experiment per task (``imbalanced_tabular_breast_cancer``, ``synthetic_text``). A search or
    a comparison is a parent run; each Tune trial, or each method x seed of a comparison, is a
    nested child run with its config as parameters (the top level and the sections its method
    reads), metrics at every evaluation step (``objective``, ``val/*``, ``fidelity/*_spearman``,
    ``fidelity/*_mae``, ``surrogate/*``, ``proxy_loss``, ``loss``), its status (FINISHED / FAILED with an ``error`` tag and
    ``error.txt`` / KILLED) and tags (``task``, ``method``, ``learned``, ``surrogate``, ``sampling``,
    ``search_id``, ``trial_key``, ``seed``, ``mlflow.source.git.commit``).

The API a search calls (driver, then each trial's rank-0 worker)::

    from surrogate_search import tracking

    uri = tracking.resolve_tracking_uri()          # on the driver, before Tune changes directories
    tracking.check_tracking_store(uri)             # fails fast, naming the URI, if the server is down
    parent = tracking.start_search_run(experiment, search_id, params, tracking_uri=uri)
    # ...ship (uri, parent) to the trainable; in the worker:
    with tracking.trial_logger(parent, trial_key, config.params(), tags, tracking_uri=uri,
                               rank=train.get_context().get_world_rank()) as trial:
        ctx = WorkerContext(report=trial.report_hook("val/f1", then=ray_report), ...)
        posttune(config, checkpoint, context=ctx)  # FINISHED on return, FAILED with the error on raise
    tracking.finish_run(parent, tracking_uri=uri)  # after tuner.fit(); leftover RUNNING children -> KILLED

``trial_logger`` returns the same run for the same ``trial_key`` under the same parent (a resumed
search does not duplicate runs), and a :class:`NullLogger` on ranks other than 0. Its inputs and
the logger itself are picklable (a URI string and run ids). ``start_search_run`` with a known
``search_id`` resumes the parent and closes children left RUNNING as KILLED. ``tracked_posttune``
wraps a whole post-tuning (metrics, config, curve, surrogate model) around a logger;
``tracked_compare`` records ``surrogate-search compare``; a post-tuning started on its own is a
top-level run (``start_run``); ``comparison_report`` reads a comparison back as a table.

The best learned surrogate of a comparison is an MLflow PyTorch model (``pt2`` format); its URI is
the parent run's ``best_surrogate_model_uri`` tag::

    surrogate = mlflow.pytorch.load_model(uri)
    estimated_metric = surrogate(predictions, targets)   # one value per item

It is also registered (``register_surrogate``): a new version of ``<experiment>-<method>-surrogate``,
given the ``champion`` alias when it beats the champion's validation metric (never when its run kept
the base model); ``fetch_surrogate``
reads one back, weights only, to start a post-tuning from (``models:/<name>@champion``).
"""

from surrogate_search.tracking.model_registry import Registration, fetch_surrogate, register_surrogate
from surrogate_search.tracking.recorder import (
    TrackedComparison,
    task_experiment_name,
    tracked_compare,
    tracked_posttune,
)
from surrogate_search.tracking.report import Report, comparison_report
from surrogate_search.tracking.runs import (
    NullLogger,
    TrialLogger,
    close_stale_runs,
    finish_run,
    start_parent_run,
    start_run,
    start_search_run,
    trial_logger,
)
from surrogate_search.tracking.store import (
    TrackingUnavailableError,
    check_tracking_store,
    resolve_tracking_uri,
)

__all__ = [
    "NullLogger",
    "Registration",
    "Report",
    "TrackedComparison",
    "TrackingUnavailableError",
    "TrialLogger",
    "check_tracking_store",
    "close_stale_runs",
    "comparison_report",
    "fetch_surrogate",
    "finish_run",
    "register_surrogate",
    "resolve_tracking_uri",
    "start_parent_run",
    "start_run",
    "start_search_run",
    "task_experiment_name",
    "tracked_compare",
    "tracked_posttune",
    "trial_logger",
]
