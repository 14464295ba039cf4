"""Orchestration overhead of a search: the platform's ``run_search`` (Ray Tune + OptunaSearch,
each trial inline or as a Ray Train run) against a bare Optuna study.

All of them run the same N trials one at a time: the same space, the same TPE seed, the same
post-tuning call (``posttune(config, checkpoint)``, which loads its data as a trial does). No
early stopping, no MLflow, so every trial runs all its steps. Ray's start-up is timed apart
(it is paid once per search).

The ratio's reference is a bare Optuna script run as a user runs one: a fresh Python process,
timed from its start, so it imports torch and this library and builds its first optimiser (which
imports ``torch._dynamo``) inside the clock, as ``run_search``'s trial process does. The same loop
in this bench's own process, where all of that was paid while the base model trained, is timed
too ("warm") and printed with its ratio. ``--repeats`` alternates which of bare and search goes
first in each round and prints medians.

    PYTHONPATH=platform python bench/orchestration_overhead.py --trials 6 --steps 520
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import statistics
import subprocess
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


def bare_study(spec, checkpoint, trials: int) -> None:
    """The reference: an in-process Optuna study over the same post-tuning, TPE seed 0."""
    import optuna

    from surrogate_search.posttune import posttune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if spec.mode == "max" else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(lambda trial: posttune(spec.trial_config(spec.suggest(trial)), checkpoint).val[spec.metric[4:]],
                   n_trials=trials)


def load_spec(args: argparse.Namespace, work: Path, runner: str = "inline"):
    from surrogate_search.search import load_space

    return load_space(args.space, overrides={
        "posttune.steps": args.steps, "posttune.eval_every": max(1, args.steps // 4),
        "checkpoint": str(work / "base"), "budget.trials": args.trials, "budget.concurrency": 1,
        "budget.workers_per_trial": 1, "budget.scheduler.type": "none", "budget.runner": runner})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=520, help="post-tuning steps per trial (~10 s here)")
    parser.add_argument("--space", default=str(REPO_ROOT / "search_spaces" / "tabular_f1_smoke.yaml"))
    parser.add_argument("--runners", default="inline,train", help="trial runners to time (budget.runner)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds; each alternates which goes first")
    parser.add_argument("--bare-child", metavar="WORK", help=argparse.SUPPRESS)  # the fresh-process reference
    args = parser.parse_args()

    if args.bare_child:  # everything from here on is inside the parent's clock
        import torch

        from surrogate_search.pretrain import ensure_base_checkpoint
        from surrogate_search.tasks import get_task

        torch.set_num_threads(1)
        spec = load_spec(args, Path(args.bare_child))
        task = get_task(spec.task, seed=spec.task_seed, **spec.task_options)
        bare_study(spec, ensure_base_checkpoint(task, spec.checkpoint, pretrain_if_missing=False), args.trials)
        return

    import torch

    from surrogate_search.pretrain import ensure_base_checkpoint
    from surrogate_search.search.tune import run_search, start_local_ray
    from surrogate_search.tasks import get_task

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_orch_"))
    spec = load_spec(args, work)
    task = get_task(spec.task, seed=spec.task_seed, **spec.task_options)
    checkpoint = ensure_base_checkpoint(task, spec.checkpoint)  # trained here, before any timing
    task.load_splits(None)  # fills the data cache, as a previous search would have

    def fresh_bare() -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--bare-child", str(work), "--trials", str(args.trials),
                        "--steps", str(args.steps), "--space", args.space], check=True)
        return time.perf_counter() - started

    def warm_bare() -> float:
        started = time.perf_counter()
        bare_study(spec, checkpoint, args.trials)
        return time.perf_counter() - started

    import ray

    started = time.perf_counter()
    start_local_ray(2, log_to_driver=False)
    ray_start = time.perf_counter() - started
    searches = 0

    def search(runner: str) -> float:
        nonlocal searches
        searches += 1
        started = time.perf_counter()
        outcome = run_search(load_spec(args, work, runner), storage=work / f"search_{runner}_{searches}", verbose=0)
        assert outcome.states == {"COMPLETE": args.trials}, outcome.states
        return time.perf_counter() - started

    timed: dict[str, list[float]] = {}
    jobs = {"bare": fresh_bare, "warm": warm_bare,
            **{runner: functools.partial(search, runner) for runner in args.runners.split(",")}}
    try:
        for round_ in range(args.repeats):
            names = list(jobs) if round_ % 2 == 0 else list(reversed(jobs))
            for name in names:
                timed.setdefault(name, []).append(jobs[name]())
    finally:
        ray.shutdown()

    median = {name: statistics.median(values) for name, values in timed.items()}
    bare = median["bare"]
    shown = lambda name: " / ".join(f"{v:.1f}" for v in timed[name])  # noqa: E731
    print(f"trials: {args.trials} x {args.steps} post-tuning steps ({spec.task}, {spec.name}), one at a time; "
          f"{args.repeats} round(s), medians")
    print(f"bare optuna, a fresh process:    {bare:7.1f} s  ({bare / args.trials:.1f} s/trial)  [{shown('bare')}]")
    print(f"bare optuna, this warm process:  {median['warm']:7.1f} s  ({median['warm'] / args.trials:.1f} s/trial)  "
          f"[{shown('warm')}]  imports and first optimiser already paid")
    for runner in args.runners.split(","):
        seconds = median[runner]
        label = {"inline": "run_search, trials inline:", "train": "run_search, Ray Train trials:"}[runner]
        print(f"{label:32s} {seconds:7.1f} s  ({seconds / args.trials:.1f} s/trial)  [{shown(runner)}]  "
              f"ratio {seconds / bare:.3f}  (vs warm {seconds / median['warm']:.3f}; "
              f"+{(seconds - bare) / args.trials:.2f} s/trial)")
    print(f"ray start-up (once per search, not in the figures above): {ray_start:.1f} s;  goal: ratio <= 1.05")


if __name__ == "__main__":
    main()
