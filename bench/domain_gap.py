"""Post-tuning under a domain gap: does a learned surrogate pay where the test images differ?

The LS-ED paper's large gains were measured on real benchmarks after training on synthetic text.
This probe keeps the base model and its tuning images (the default rendering) and renders val and
test harder (more rotation, blur, noise and clutter, less contrast): selection and report happen
in the target rendering, the updates in the source one. ``--tune-in target`` renders the tuning
images as val and test instead: labelled data from where the model is deployed, the usual
fine-tuning case. Every method gets the same base, batches and budget; printed: the base on source
and target, then test edit distance per method and seed.

    python bench/domain_gap.py --checkpoint runs/base_synthetic_text_attention --seeds 2
    python bench/domain_gap.py --checkpoint runs/base_synthetic_text_attention --tune-in target --seeds 3
"""

from __future__ import annotations

import argparse
import statistics

import torch

from surrogate_search.checkpoint import load_checkpoint
from surrogate_search.config import PostTuneConfig
from surrogate_search.posttune import posttune
from surrogate_search.tasks import Splits, get_task
from surrogate_search.utils import parse_assignments

TARGET = {"max_rotation_degrees": 6.0, "max_blur_radius": 1.6, "max_noise_std": 30.0, "clutter_lines": 5,
          "min_contrast": 30}
"""The target rendering (the defaults: 3 degrees, blur 0.8, noise 12, 2 lines, contrast 60)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/base_synthetic_text_attention")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--methods", default="proxy,deep_embedding")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="post-tuning setting")
    parser.add_argument("--tune-in", choices=("source", "target"), default="source",
                        help="render the tuning images as the base's training images (source) or as val and test (target)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    checkpoint = load_checkpoint(args.checkpoint)
    task = checkpoint.build_task()
    source = task.splits()
    target = get_task(task.name, seed=task.seed, **{**task.options, **TARGET}).load_splits()
    splits = Splits(source.train, target.val, target.test, tune=source.tune if args.tune_in == "source" else target.tune)
    base = checkpoint.build_model(task)
    metric = task.metric_name
    print(f"base {metric}: source test {task.evaluate(base, source.test)[metric]:.0f}, "
          f"target val {task.evaluate(base, target.val)[metric]:.0f}, target test {task.evaluate(base, target.test)[metric]:.0f}, "
          f"{task.evaluate(base, splits.tune)[metric]:.0f} on the {len(splits.tune)} tuning images ({args.tune_in} rendering)")
    methods = args.methods.split(",")
    results: dict[str, list[float]] = {}
    for method in methods:
        for seed in range(args.seeds):
            config = PostTuneConfig.for_task(task, {**parse_assignments(args.set), "method": method, "seed": seed})
            result = posttune(config, checkpoint, splits=splits)
            results.setdefault(method, []).append(result.test[metric])
            print(f"{method} seed {seed}: target test {result.test[metric]:.0f} (best step {result.best_step}, "
                  f"{result.seconds:.0f}s)", flush=True)
    control = statistics.fmean(results[methods[0]])
    print(f"{'method':24s} {'target test ' + metric:>24s} {'vs ' + methods[0]:>9s}")
    for method, values in results.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{method:24s} {statistics.fmean(values):>13.1f} ± {spread:<8.1f} {100 * (statistics.fmean(values) / control - 1):>+8.1f}%")


if __name__ == "__main__":
    main()
