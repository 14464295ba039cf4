"""Orchestration overhead of Ray Tune + OptunaSearch against a bare in-process Optuna study.

Both run the same N smoke trials one at a time: the same space, the same TPE seed, the same
post-tuning function (in-process, one worker, so only the orchestration differs). Prints both
wall times and their ratio; the goal is a ratio <= 1.1.

    PYTHONPATH=platform python bench/orchestration_overhead.py --trials 6 --steps 240
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
    parser.add_argument("--steps", type=int, default=240, help="post-tuning steps per trial (~10 s here)")
    parser.add_argument("--space", default=str(REPO_ROOT / "search_spaces" / "tabular_f1_smoke.yaml"))
    args = parser.parse_args()

    import optuna
    import torch

    from surrogate_search.compare import ensure_base_checkpoint
    from surrogate_search.posttune import WorkerContext, posttune
    from surrogate_search.search import load_space
    from surrogate_search.tasks import get_task

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_orch_"))
    spec = load_space(args.space, overrides={"posttune.steps": args.steps, "posttune.eval_every": max(1, args.steps // 4),
                                             "checkpoint": str(work / "base")})
    task = get_task(spec.task, seed=spec.task_seed, **spec.task_options)
    checkpoint = ensure_base_checkpoint(task, spec.checkpoint)
    splits = task.load_splits(None)
    metric, mode = spec.metric, spec.mode

    def run_trial(sampled: dict, report) -> float:
        result = posttune(spec.trial_config(sampled), checkpoint, splits=splits,
                          context=WorkerContext(report=lambda metrics, state_fn: report(metrics)))
        return result.val[metric[4:]]

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    # Bare Optuna: ask/tell in this process.
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=0))
    started = time.perf_counter()
    study.optimize(lambda trial: run_trial(spec.suggest(trial), lambda metrics: None), n_trials=args.trials)
    bare = time.perf_counter() - started

    # Ray Tune + OptunaSearch, one trial at a time, same function.
    import ray
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started

    def trainable(config: dict) -> None:
        torch.set_num_threads(1)
        value = run_trial(config, lambda metrics: tune.report({**metrics, "final": 0.0}))
        tune.report({metric: value, "final": 1.0})

    searcher = ConcurrencyLimiter(OptunaSearch(space=spec.suggest, metric=metric, mode=mode,
                                               sampler=optuna.samplers.TPESampler(seed=0)), max_concurrent=1)
    tuner = tune.Tuner(tune.with_resources(trainable, {"CPU": 1}),
                       tune_config=tune.TuneConfig(search_alg=searcher, num_samples=args.trials, reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=str(work / "tune"), verbose=0))
    started = time.perf_counter()
    results = tuner.fit()
    tuned = time.perf_counter() - started
    ray.shutdown()
    assert not results.errors, results.errors

    print(f"trials: {args.trials} x {args.steps} post-tuning steps ({spec.task}, {spec.name}), one at a time")
    print(f"bare optuna study:        {bare:7.1f} s  ({bare / args.trials:.1f} s/trial)")
    print(f"ray tune + OptunaSearch:  {tuned:7.1f} s  ({tuned / args.trials:.1f} s/trial; ray.init {ray_start:.1f} s not included)")
    print(f"ratio tune / bare:        {tuned / bare:7.2f}  (goal <= 1.1)")


if __name__ == "__main__":
    main()
