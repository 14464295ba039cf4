"""What MLflow logging costs a post-tuning run: the same run (same seed, same steps) without and with
tracking, interleaved ``--repeats`` times (default 1; which goes first alternates, after one untimed
warm-up run); prints wall times and the ratio (goal: <= 1.02).

    python bench/logging_overhead.py                       # breast cancer, deep_embedding, 200 updates
    python bench/logging_overhead.py --method relational --steps 400 --eval-every 20 --repeats 3

"tracked" is everything a recorded run does: parameters, metrics at every evaluation, the config,
the fidelity scatter and the surrogate's weights and ``surrogate.json`` (a local SQLite store
in a temporary folder unless ``--tracking-uri`` is given). "loop" is the post-tuning loop alone,
so the per-evaluation logging and the one-off artifacts at the end can be told apart. "cpu" is the
CPU time of this process (all its threads, MLflow's sending included): on a machine shared with
other work, wall times swing by 10x, CPU times far less.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from surrogate_search.config import PostTuneConfig
from surrogate_search.posttune import posttune
from surrogate_search.pretrain import ensure_base_checkpoint
from surrogate_search.tasks import get_task
from surrogate_search.tracking import resolve_tracking_uri, start_run, task_experiment_name, tracked_posttune
from surrogate_search.tracking.recorder import run_tags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="imbalanced_tabular")
    parser.add_argument("--dataset", default="breast_cancer", help="imbalanced_tabular's dataset option")
    parser.add_argument("--checkpoint", default=None, help="base checkpoint (default runs/base_<task>, pretrained if missing)")
    parser.add_argument("--method", default="deep_embedding")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tracking-uri", default=None, help="default: a fresh SQLite store in a temporary folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    options = {"dataset": args.dataset} if args.task == "imbalanced_tabular" else {}
    task = get_task(args.task, **options)
    checkpoint = ensure_base_checkpoint(task, args.checkpoint)
    splits = task.splits()
    config = PostTuneConfig.for_task(task, {"method": args.method, "steps": args.steps, "eval_every": args.eval_every,
                                            "seed": args.seed})
    folder = tempfile.mkdtemp(prefix="logging_overhead_")
    uri = resolve_tracking_uri(args.tracking_uri or f"sqlite:///{Path(folder) / 'mlflow.db'}")
    experiment = f"{task_experiment_name(task)}_bench"
    start_run(experiment, {"warmup": 1}, tracking_uri=uri).finish()  # create the store outside the timings

    plain, tracked, plain_loop, tracked_loop, plain_cpu, tracked_cpu = [], [], [], [], [], []

    def run_plain() -> None:
        started, cpu = time.perf_counter(), time.process_time()
        result = posttune(config, checkpoint, splits=splits)
        plain.append(time.perf_counter() - started)
        plain_cpu.append(time.process_time() - cpu)
        plain_loop.append(result.seconds)

    def run_tracked() -> None:
        started, cpu = time.perf_counter(), time.process_time()
        logger = start_run(experiment, config.params(), run_tags(task, config), tracking_uri=uri)
        with logger:
            recorded = tracked_posttune(config, checkpoint, logger, splits=splits)
        tracked.append(time.perf_counter() - started)
        tracked_cpu.append(time.process_time() - cpu)
        tracked_loop.append(recorded.result.seconds)

    run_plain()  # untimed: the process's first run pays one-off imports and caches
    plain.clear(), plain_cpu.clear(), plain_loop.clear()
    for repeat in range(args.repeats):
        # Alternate which goes first, so that a machine drifting within a repeat favours neither.
        for run in (run_plain, run_tracked) if repeat % 2 == 0 else (run_tracked, run_plain):
            run()
        print(f"repeat {repeat + 1}: without {plain[-1]:.2f} s (cpu {plain_cpu[-1]:.2f} s), "
              f"with {tracked[-1]:.2f} s (cpu {tracked_cpu[-1]:.2f} s)", flush=True)

    evaluations = args.steps // args.eval_every
    print(f"{task_experiment_name(task)}, {config.method}, seed {config.seed}: {config.steps} model updates, "
          f"{evaluations} evaluations logged; {args.repeats} interleaved repeat(s), median shown; store {uri}")
    print(f"without MLflow : {statistics.median(plain):7.2f} s   (loop {statistics.median(plain_loop):7.2f} s)")
    print(f"with MLflow    : {statistics.median(tracked):7.2f} s   (loop {statistics.median(tracked_loop):7.2f} s, "
          f"artifacts at the end {statistics.median(tracked) - statistics.median(tracked_loop):5.2f} s)")
    print(f"ratio, whole run : {statistics.median(tracked) / statistics.median(plain):.3f}   (goal <= 1.02)")
    print(f"ratio, loop only : {statistics.median(tracked_loop) / statistics.median(plain_loop):.3f}")
    print(f"ratio, cpu time  : {statistics.median(tracked_cpu) / statistics.median(plain_cpu):.3f}   "
          f"(without {statistics.median(plain_cpu):.2f} s, with {statistics.median(tracked_cpu):.2f} s)")
    print("all runs (s): without " + ", ".join(f"{t:.2f}" for t in plain) + "; with " + ", ".join(f"{t:.2f}" for t in tracked))


if __name__ == "__main__":
    main()
