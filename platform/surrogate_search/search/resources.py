"""How many trials of a search fit the cluster at once, and what each one holds."""

from __future__ import annotations

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


