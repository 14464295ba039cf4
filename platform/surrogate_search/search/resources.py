"""How many trials of a search fit the cluster at once, and what each one holds."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from surrogate_search.search.space import Budget, SearchSpec


class ResourceError(ValueError):
    """A trial can never fit the cluster; the message shows the arithmetic."""


@dataclass
class ResourcePlan:
    cpus_per_trial: float
    gpus_per_trial: float
    cluster_cpus: float
    cluster_gpus: float
    concurrency: int
    runner: str = "train"

    def describe(self) -> str:
        gpus = f", {self.gpus_per_trial:g} GPUs" if self.gpus_per_trial else ""
        how = "a Ray Train run" if self.runner == "train" else "post-tuning in the trial's own process (inline)"
        return (f"{self.concurrency} trial(s) at a time, each {how}: each needs {self.cpus_per_trial:g} CPUs{gpus}; "
                f"the cluster has {self.cluster_cpus:g} CPUs, {self.cluster_gpus:g} GPUs")


def plan_resources(spec: SearchSpec, cluster: dict[str, float]) -> ResourcePlan:
    """How many trials run at once. A Ray Train trial holds ``driver_cpus`` for its Tune driver
    plus ``workers_per_trial x cpus_per_worker`` (and GPUs) for its Ray Train workers, which Tune
    does not see: without this limit, concurrent trials could each hold a driver and wait forever
    for workers. An inline trial is its own single worker. Fails at once when a single trial can
    never fit."""
    b = spec.budget
    driver = b.driver_cpus if b.trial_runner == "train" else 0.0
    cpus = trial_cpus(b)
    gpus = b.workers_per_trial * b.gpus_per_worker
    have_cpus, have_gpus = float(cluster.get("CPU", 0.0)), float(cluster.get("GPU", 0.0))
    arithmetic = (f"a trial needs {driver:g} driver CPU + {b.workers_per_trial} workers x "
                  f"{b.cpus_per_worker:g} CPUs = {cpus:g} CPUs")
    if cpus > have_cpus + 1e-9:
        raise ResourceError(f"{spec.path}: {arithmetic}, but the cluster has {have_cpus:g} CPUs, so no trial can "
                            f"ever start. Lower budget.workers_per_trial or budget.cpus_per_worker, or add nodes.")
    if gpus > have_gpus + 1e-9:
        raise ResourceError(f"{spec.path}: a trial needs {b.workers_per_trial} workers x {b.gpus_per_worker:g} GPUs = "
                            f"{gpus:g} GPUs, but the cluster has {have_gpus:g} GPUs. Lower budget.gpus_per_worker "
                            f"(0 runs on CPUs) or add GPU nodes.")
    fits = math.floor(have_cpus / cpus + 1e-9)
    if gpus:
        fits = min(fits, math.floor(have_gpus / gpus + 1e-9))
    return ResourcePlan(cpus, gpus, have_cpus, have_gpus, max(1, min(b.concurrency, fits)), b.trial_runner)


def trial_cpus(budget: Budget) -> float:
    """CPUs one trial holds: its driver's (a Ray Train trial) and its workers'."""
    driver = budget.driver_cpus if budget.trial_runner == "train" else 0.0
    return driver + budget.workers_per_trial * budget.cpus_per_worker


def local_cluster(num_cpus: int | None = None) -> dict[str, float]:
    """What Ray started in this process holds: ``num_cpus`` (default: the CPUs Ray detects, a
    container's limit included) and the GPUs torch sees. Known before Ray starts, so a trial that
    does not fit costs no Ray start-up."""
    import torch

    if num_cpus is None:
        try:
            from ray._private.utils import get_num_cpus  # Ray's own count: what ray.init would find

            num_cpus = int(get_num_cpus())
        except ImportError:
            num_cpus = os.cpu_count() or 1
    return {"CPU": float(num_cpus), "GPU": float(torch.cuda.device_count())}


def fit_to_machine(spec: SearchSpec, cluster: dict[str, float]) -> tuple[SearchSpec, list[str]]:
    """For a search on this machine alone (local mode): a trial that needs more CPUs or GPUs than the
    machine has is made smaller, in this order, until it fits: its Ray Train driver holds no CPU (it
    only waits on its workers; results are unchanged), fewer workers (each worker post-tunes on its
    own batches of ``batch_size``, so fewer samples per update), each worker at most the machine's
    CPUs. Returns the spec to run and what changed (empty when the file's budget fits as written).
    A trial that still cannot fit (a GPU the machine lacks) is left for :func:`plan_resources` to
    refuse. On a cluster, a budget is never changed: nodes can be added."""
    b = spec.budget
    have_cpus, have_gpus = float(cluster.get("CPU", 0.0)), float(cluster.get("GPU", 0.0))
    fitted = dataclasses.replace(b)
    changes: list[str] = []
    if trial_cpus(fitted) > have_cpus + 1e-9 and fitted.trial_runner == "train" and fitted.driver_cpus > 0:
        fitted.driver_cpus = 0.0
        changes.append(f"budget.driver_cpus {b.driver_cpus:g} -> 0 (the trial's driver only waits on its workers)")
    gpus_short = fitted.gpus_per_worker and fitted.workers_per_trial * fitted.gpus_per_worker > have_gpus + 1e-9
    if trial_cpus(fitted) > have_cpus + 1e-9 or gpus_short:
        workers = math.floor(have_cpus / fitted.cpus_per_worker + 1e-9)
        if fitted.gpus_per_worker:
            workers = min(workers, math.floor(have_gpus / fitted.gpus_per_worker + 1e-9))
        if (workers >= 1 or not gpus_short) and max(1, workers) < fitted.workers_per_trial:
            fitted.workers_per_trial = max(1, workers)
            changes.append(f"budget.workers_per_trial {b.workers_per_trial} -> {fitted.workers_per_trial} "
                           f"(each update now sees {fitted.workers_per_trial} x batch_size samples, not "
                           f"{b.workers_per_trial} x)")
    others = trial_cpus(fitted) - fitted.cpus_per_worker  # a driver's CPUs, when it kept them
    if trial_cpus(fitted) > have_cpus + 1e-9 and fitted.workers_per_trial == 1 and have_cpus - others > 0:
        fitted.cpus_per_worker = have_cpus - others
        changes.append(f"budget.cpus_per_worker {b.cpus_per_worker:g} -> {fitted.cpus_per_worker:g}")
    if not changes:
        return spec, []
    return dataclasses.replace(spec, budget=fitted), changes


def trial_resources(budget: Budget) -> dict[str, float]:
    """What a trial's Tune process holds: an inline trial, its one worker's CPUs and GPUs; a Ray
    Train trial, its driver's (the workers are Ray Train's, in their own placement group)."""
    if budget.trial_runner == "inline":
        return {"CPU": budget.cpus_per_worker, **({"GPU": budget.gpus_per_worker} if budget.gpus_per_worker else {})}
    return driver_resources(budget.driver_cpus)


def driver_resources(cpus: float) -> dict[str, float]:
    """What a trial's Tune driver holds. A driver only waits on its Ray Train run, so
    ``driver_cpus: 0`` is allowed; Tune refuses an all-zero request, so such a driver holds 1 MiB
    of memory instead of a CPU."""
    return {"CPU": cpus} if cpus > 0 else {"CPU": 0, "memory": float(1 << 20)}


