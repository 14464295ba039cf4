"""Ray Tune + Optuna over a search space: each trial is a post-tuning run, a Ray Train run for
several workers, or inline in the trial's own (reused) Tune process for one (``budget.runner``).

One search lives in one folder, ``<storage>/<space name>/`` (see :mod:`.outcome`). The Optuna study is the search's memory: ``resume=True`` reloads it, keeps every finished trial
(TPE learns from them; they are not run again), marks trials left RUNNING by an interrupted search
as FAILED and re-queues their parameters; a re-queued trial keeps its run name, so a Ray Train
trial continues from that run's last checkpoint (an inline one starts over). Trials that ASHA
stops early reach Optuna as PRUNED, never as COMPLETE with their early (worse) value.

Example::

    spec = load_space("search_spaces/tabular_f1_smoke.yaml")
    outcome = run_search(spec, storage="runs/search")
    outcome.best_config  # {"method": "deep_embedding", "surrogate": {...}, ...}
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from surrogate_search.search.outcome import (MLFLOW_RUN_KEY, RUN_KEY, STUDY_STORAGE_FILE, TRAIN_DIR, TRIAL_KEY,
                                             SearchOutcome, check_bucket_search, check_search_dir, storage_location,
                                             summarize)
from surrogate_search.search.resources import (ResourcePlan, fit_to_machine, local_cluster, plan_resources,
                                               trial_cpus, trial_resources)
from surrogate_search.search.space import SearchSpec
from surrogate_search.search.storage import Location
from surrogate_search.search.study import (check_study_storage, open_study, requeue_interrupted, searcher_class,
                                           shown_url)

if TYPE_CHECKING:  # imports Ray Train and MLflow: only when a search is tracked
    from surrogate_search.search.tracking import SearchTracking

log = logging.getLogger(__name__)

TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
"""Environment of the search's Ray workers (a value already set in this process wins). A Ray Train
controller takes in one worker report per poll, every 2 s by default: a trial's last reports,
and so its end, waited seconds on the poll."""


def trial_trainable(config: dict[str, Any], *, spec: SearchSpec, checkpoint: Any, train_dir: Location,
                    cache_dir: str | None = None, tracking: SearchTracking | None = None) -> None:
    """One Tune trial: build its post-tuning config and run it, named after the Optuna trial, as a
    Ray Train run (forwarding every evaluation to Tune with ``TuneReportCallback``) or inline (see
    ``budget.runner``); with ``tracking`` (a :class:`~surrogate_search.search.tracking.SearchTracking`),
    every evaluation also goes to the trial's MLflow run."""
    from surrogate_search.search.train import TrainPlan, run_inline, run_posttune

    sampled = {k: v for k, v in config.items() if k not in (RUN_KEY, TRIAL_KEY)}
    run = config[RUN_KEY]
    b = spec.budget
    post_config = spec.trial_config(sampled)
    with contextlib.ExitStack() as stack:
        callbacks = []
        extra: dict[str, Any] = {}
        if tracking is not None:
            mlflow_run, to_mlflow = stack.enter_context(tracking.trial(run, post_config, optuna_trial=config.get(TRIAL_KEY),
                                                                       folder=train_dir / run))
            callbacks.append(to_mlflow)
            extra[MLFLOW_RUN_KEY] = mlflow_run.run_id  # the searcher keeps it on the Optuna trial
        if b.trial_runner == "inline":
            run_inline(post_config, checkpoint, name=run, storage_path=train_dir, cache_dir=cache_dir,
                       callbacks=callbacks, report_extra=extra)
            return
        from ray.tune.integration.ray_train import TuneReportCallback

        plan = TrainPlan(num_workers=b.workers_per_trial, cpus_per_worker=b.cpus_per_worker,
                         gpus_per_worker=b.gpus_per_worker, placement=b.placement, max_failures=b.max_failures)
        run_posttune(post_config, checkpoint, name=run, storage_path=train_dir, plan=plan,
                     cache_dir=cache_dir, callbacks=[TuneReportCallback(), *callbacks], report_extra=extra)


def run_search(spec: SearchSpec, *, storage: str | Path | Location = "runs/search", resume: bool = False,
               address: str | None = None, num_cpus: int | None = None, cache_dir: str | None = None,
               seed: int = 0, points_to_evaluate: list[dict[str, Any]] | None = None,
               verbose: int = 1, study_storage: str | None = None,
               tracking_uri: str | None = None, experiment: str | None = None) -> SearchOutcome:
    """Search ``spec`` with Ray Tune (OptunaSearch/TPE under a ConcurrencyLimiter, ASHA) until the
    study holds ``spec.budget.trials`` finished (complete or pruned) trials.

    ``address``: a running cluster (``"auto"``, ``"ray://..."``, or ``RAY_ADDRESS``); ``None``
    starts Ray in this process with ``num_cpus`` logical CPUs (default: this machine's cores), and a
    trial that needs more than that is made to fit (see :func:`.resources.fit_to_machine`; logged).
    Nothing is created and Ray is not started until the folder, the tracking store, the trial's
    resources and the base checkpoint have passed their checks.
    ``storage``: a folder, or a URI Ray accepts (``s3://bucket/searches``, ``gs://...``,
    ``file://...``), given to Ray unchanged; the search's own files go there too (see :mod:`.storage`).
    ``points_to_evaluate``: parameter sets to try first (Optuna's enqueued trials).
    ``study_storage``: a database URL for the Optuna study (e.g. ``postgresql://user@host/optuna``,
    which every node of a cluster reaches); default: ``optuna.db`` in the search's folder, which
    a bucket cannot hold (there it is required).
    ``tracking_uri``: record the search in MLflow (a parent run, a child run per trial; see
    :mod:`surrogate_search.search.tracking`) in ``experiment`` (default: the task's); ``None``
    records nothing. The store is checked before Ray starts.
    """
    # Everything that can be checked is checked before any work: the search's folder (nothing is
    # created yet), the tracking store, whether a trial fits, the base checkpoint; then Ray starts.
    search_dir = storage_location(storage) / spec.name
    if search_dir.is_local:
        check_search_dir(search_dir.local, resume, study_in_folder=study_storage is None)
    else:
        check_bucket_search(search_dir, resume, study_storage)
    if study_storage is not None:
        check_study_storage(spec.name, study_storage, resume)
    if tracking_uri is not None:
        from surrogate_search.tracking import check_tracking_store, resolve_tracking_uri

        tracking_uri = resolve_tracking_uri(tracking_uri)  # absolute: Tune changes trials' directories
        check_tracking_store(tracking_uri)

    import optuna
    import ray
    from optuna.trial import TrialState
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from surrogate_search.pretrain import ensure_base_checkpoint
    from surrogate_search.tasks import get_task

    address = address or os.environ.get("RAY_ADDRESS")
    local = not ray.is_initialized() and not address
    if local:  # this machine alone: a trial larger than it is made to fit (a cluster's budget is kept)
        machine = local_cluster(num_cpus)
        num_cpus = int(machine["CPU"])  # what Ray is started with below
        written = spec.budget
        spec, changes = fit_to_machine(spec, machine)
        if changes:
            log.info("local mode: a trial of %s needs %g CPUs and %g GPUs, this machine has %g and %g; for this "
                     "run: %s", spec.path.name, trial_cpus(written), written.workers_per_trial * written.gpus_per_worker,
                     machine["CPU"], machine["GPU"], "; ".join(changes))
        plan_resources(spec, machine)
    started_ray = False
    try:
        if not local and not ray.is_initialized():
            # Ship this library to every node (merged with a job's own runtime env, e.g. its
            # working_dir): cluster nodes then need only the dependencies, not this repo.
            package = Path(__file__).resolve().parents[1]  # .../surrogate_search
            ray.init(address=address, runtime_env={"py_modules": [str(package)], "env_vars": worker_env()})
            started_ray = True
        if not local:
            plan = plan_resources(spec, ray.cluster_resources())
        task = get_task(spec.task, seed=spec.task_seed, **spec.task_options)
        checkpoint = ensure_base_checkpoint(task, spec.checkpoint, cache_dir=cache_dir,
                                            pretrain_if_missing=spec.pretrain_if_missing)
        if local:  # started once the base checkpoint is there: pretraining runs without Ray beside it
            start_local_ray(num_cpus)
            started_ray = True
            plan = plan_resources(spec, ray.cluster_resources())  # what Ray found
        log.info("resources: %s", plan.describe())
        search_dir.mkdir()
        if study_storage is not None:  # for `surrogate-search sync`, which reads the trials' states
            (search_dir / STUDY_STORAGE_FILE).write_text(shown_url(study_storage) + "\n")

        tracking = None
        if tracking_uri is not None:
            from surrogate_search.search.tracking import SearchTracking

            tracking = SearchTracking.start(spec, task, search_dir, tracking_uri, experiment, study_storage)
            log.info("MLflow: experiment %r, search run %s in %s", tracking.experiment, tracking.parent_run_id,
                     tracking_uri)

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study, rdb = open_study(spec, search_dir, study_storage)
        requeued = requeue_interrupted(study) if resume else []
        for number in requeued:
            log.info("resume: trial %d was RUNNING when the search stopped: marked FAILED, its parameters re-queued",
                     number)
        finished = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        remaining = spec.budget.trials - len(finished)
        if resume:
            log.info("resume: %d finished trial(s) kept, %d to run", len(finished), max(0, remaining))
        if remaining > 0:
            _tune(spec, plan, rdb, search_dir, checkpoint, remaining, cache_dir=cache_dir, seed=seed,
                  points=points_to_evaluate, verbose=verbose,
                  tune=tune, schedulers=(ASHAScheduler, FIFOScheduler), limiter=ConcurrencyLimiter,
                  tracking=tracking)
        outcome = summarize(spec, study, search_dir)
        outcome.requeued = requeued
        if tracking is not None:
            tracking.finish(study, outcome, study_storage)
            outcome.mlflow = {"experiment": tracking.experiment, "run_id": tracking.parent_run_id,
                              "tracking_uri": tracking.tracking_uri}
    finally:
        if started_ray:
            ray.shutdown()
    return outcome


def _tune(spec: SearchSpec, plan: ResourcePlan, rdb: Any, search_dir: Location, checkpoint: Any, samples: int, *,
          cache_dir: str | None, seed: int, points: list[dict[str, Any]] | None,
          verbose: int, tune: Any, schedulers: tuple, limiter: Any,
          tracking: SearchTracking | None = None) -> None:
    import optuna

    searcher = searcher_class()(space=spec.suggest, metric=spec.metric, mode=spec.mode, study_name=spec.name,
                                 storage=rdb, sampler=optuna.samplers.TPESampler(seed=seed),
                                 points_to_evaluate=points)
    asha, fifo = schedulers
    s = spec.budget.scheduler
    # One training_iteration per evaluation, plus the final row. max_t lies one past the final row:
    # ASHA must never be the one that ends a trial which is finishing anyway, since a stopped
    # trial's Ray Train run is torn down from outside instead of returning.
    defaults = spec.trial_config({})
    reports = math.ceil(defaults.steps / defaults.eval_every) + 1
    scheduler = (asha(time_attr="training_iteration", max_t=reports + 1, grace_period=min(s.grace_period, reports),
                      reduction_factor=s.reduction_factor) if s.type == "asha" else fifo())
    restarts = len(search_dir.glob("tune_*"))
    # Inline trials report a Tune checkpoint per evaluation and only the last two are kept, so
    # Tune snapshots its experiment state often (a few ms here) and warns about it at every one.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    trainable = tune.with_parameters(trial_trainable, spec=spec, checkpoint=checkpoint,
                                     train_dir=search_dir / TRAIN_DIR, cache_dir=cache_dir,
                                     tracking=tracking)
    # With tracking, the search's plots on its MLflow parent run are redrawn as trials end.
    callbacks = [tracking.plot_refresher(spec.name, rdb.url)] if tracking is not None else []
    tuner = tune.Tuner(
        tune.with_resources(trainable, trial_resources(spec.budget)),
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, num_samples=samples, scheduler=scheduler,
                                    search_alg=limiter(searcher, max_concurrent=plan.concurrency),
                                    # an inline trial's process runs the next trial: no new process,
                                    # no second import of torch and this library. Not for Ray Train
                                    # trials: a pruned one is still tearing its run down when Tune
                                    # tries to reuse its process (2 s), and Tune then fails the next trial.
                                    reuse_actors=spec.budget.trial_runner == "inline"),
        run_config=tune.RunConfig(name=f"tune_{restarts}", storage_path=search_dir.uri, verbose=verbose,
                                  callbacks=callbacks,
                                  # a trial whose Train run fails for good is retried once; its Train
                                  # run (same name) resumes from its last checkpoint; an inline
                                  # trial resumes from its last Tune checkpoint
                                  failure_config=tune.FailureConfig(max_failures=1),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
    tuner.fit()


def worker_env() -> dict[str, str]:
    return {key: os.environ.get(key, value) for key, value in TRAIN_ENV.items()}


def start_local_ray(num_cpus: int | None = None, **kwargs: Any) -> None:
    """Start Ray in this process as a search does (local mode, dashboard on 127.0.0.1)."""
    import ray

    # The dashboard serves the State API, through which Ray Train removes the placement
    # group of a run whose trial ASHA stopped; without it those CPUs stay held.
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             runtime_env={"env_vars": worker_env()}, **kwargs)

