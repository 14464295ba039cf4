"""Orchestration overhead of a search: the platform's ``run_search`` (Ray Tune + OptunaSearch,
each trial inline or as a Ray Train run) against a bare in-process Optuna study.

All of them run the same N trials one at a time: the same space, the same TPE seed, the same
post-tuning call (``posttune(config, checkpoint)``, which loads its data as a trial does). No
early stopping, no MLflow, so every trial runs all its steps. Ray's start-up is timed apart
(it is paid once per search). Prints each wall time and its ratio to bare Optuna; the goal is
a ratio <= 1.1 for trials of ~10 s.

    PYTHONPATH=platform python bench/orchestration_overhead.py --trials 6 --steps 520
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "platform"))
# Token authentication on, with a throwaway token (set before Ray is imported).
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT / "platform"), os.environ.get("PYTHONPATH")) if p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=520, help="post-tuning steps per trial (~10 s here)")
    parser.add_argument("--space", default=str(REPO_ROOT / "search_spaces" / "tabular_f1_smoke.yaml"))
    parser.add_argument("--runners", default="inline,train", help="trial runners to time (budget.runner)")
    args = parser.parse_args()

    import optuna
    import torch

    from surrogate_search.posttune import posttune
    from surrogate_search.pretrain import ensure_base_checkpoint
    from surrogate_search.search import load_space
    from surrogate_search.search.tune import run_search, start_local_ray
    from surrogate_search.tasks import get_task

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_orch_"))

    def spec_for(runner: str):
        return load_space(args.space, overrides={
            "posttune.steps": args.steps, "posttune.eval_every": max(1, args.steps // 4),
            "checkpoint": str(work / "base"), "budget.trials": args.trials, "budget.concurrency": 1,
            "budget.workers_per_trial": 1, "budget.scheduler.type": "none", "budget.runner": runner})

    spec = spec_for("inline")
    task = get_task(spec.task, seed=spec.task_seed, **spec.task_options)
    checkpoint = ensure_base_checkpoint(task, spec.checkpoint)  # trained here, before any timing
    task.load_splits(None)  # fills the data cache, as a previous search would have
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    # Bare Optuna: ask/tell in this process.
    study = optuna.create_study(direction="maximize" if spec.mode == "max" else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=0))
    started = time.perf_counter()
    study.optimize(lambda trial: posttune(spec.trial_config(spec.suggest(trial)), checkpoint).val[spec.metric[4:]],
                   n_trials=args.trials)
    bare = time.perf_counter() - started

    import ray

    started = time.perf_counter()
    start_local_ray(2, log_to_driver=False)
    ray_start = time.perf_counter() - started
    timed = {}
    try:
        for runner in args.runners.split(","):
            started = time.perf_counter()
            outcome = run_search(spec_for(runner), storage=work / f"search_{runner}", verbose=0)
            timed[runner] = time.perf_counter() - started
            assert outcome.states == {"COMPLETE": args.trials}, outcome.states
    finally:
        ray.shutdown()

    print(f"trials: {args.trials} x {args.steps} post-tuning steps ({spec.task}, {spec.name}), one at a time")
    print(f"bare optuna study:               {bare:7.1f} s  ({bare / args.trials:.1f} s/trial)")
    for runner, seconds in timed.items():
        label = {"inline": "run_search, trials inline:", "train": "run_search, Ray Train trials:"}[runner]
        print(f"{label:32s} {seconds:7.1f} s  ({seconds / args.trials:.1f} s/trial)  "
              f"ratio {seconds / bare:.2f}  (+{(seconds - bare) / args.trials:.1f} s/trial)")
    print(f"ray start-up (once per search, not in the figures above): {ray_start:.1f} s;  goal: ratio <= 1.1")


if __name__ == "__main__":
    main()
