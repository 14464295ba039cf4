"""Surrogate fidelity per sampling strategy, on held-out pairs.

For each sampling strategy (by default every registered one) a fresh surrogate is trained on the
base model's predictions on the tuning split (``--set data=train``: its training split) for
``--updates`` updates with the post-tuning loop's own ``surrogate_step``, then scored by the loop's
``FidelityProbe`` on ``--items`` pairs it never saw: global pairs, the base model's validation
predictions as they are (``local``) and perturbed (``local_noisy``). Pairs with errors are a small
share of local pairs, so their Spearman needs a few thousand items to be stable. Printed per pair kind:
Spearman correlation of e_hat with e, mean absolute error, Spearman on the pairs with errors only,
the most any surrogate with continuous outputs can reach there (``ceiling|e>0``: the errors with
their ties broken at random; edit distances of 1, 2, 3 tie often), and the fraction of pairs with
errors.

    python bench/fidelity.py --task synthetic_text --checkpoint runs/base_text
    python bench/fidelity.py --task imbalanced_tabular --option dataset=synthetic --method relational
"""

from __future__ import annotations

import argparse
import time

import torch

from surrogate_search.config import PostTuneConfig
from surrogate_search.fidelity import FidelityProbe, pair_fidelity, tied_ceiling
from surrogate_search.surrogate_training import surrogate_step
from surrogate_search.pretrain import ensure_base_checkpoint
from surrogate_search.sampling import create_sampler, list_strategies
from surrogate_search.surrogates import create_loss
from surrogate_search.tasks import get_task
from surrogate_search.utils import parse_assignments, seed_everything

KINDS = ("global", "local", "local_noisy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="synthetic_text")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--method", default="deep_embedding", help="deep_embedding or relational")
    parser.add_argument("--updates", type=int, default=1000, help="surrogate updates before scoring")
    parser.add_argument("--items", type=int, default=2000, help="held-out pairs of each kind")
    parser.add_argument("--strategies", default=",".join(list_strategies()), help="comma-separated sampling strategies")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="post-tuning setting")
    parser.add_argument("--seed", type=int, default=0, help="seed of the surrogate's initialisation and its pairs")
    args = parser.parse_args()

    task = get_task(args.task, **parse_assignments(args.option))
    settings = PostTuneConfig.for_task(task, {"method": args.method, **parse_assignments(args.set)})
    checkpoint = ensure_base_checkpoint(task, args.checkpoint)
    splits = task.splits()
    model = checkpoint.build_model(task).eval()
    print(f"task {task.name} {task.options or ''}  method {args.method}  {args.updates} surrogate updates each on "
          f"{settings.data} data, scored on {args.items} held-out pairs of each kind")
    print(f"{'trained on':13s} {'pairs':12s} {'spearman':>9s} {'mae':>8s} {'spearman|e>0':>13s} {'ceiling|e>0':>12s} "
          f"{'e>0':>6s}")
    for strategy in args.strategies.split(","):
        config = settings.replace({"sampling.strategy": strategy})
        seed_everything(args.seed)
        loss = create_loss(task, config)
        sampler = create_sampler(task, splits[config.data], config.sampling, config.batch_size, torch.Generator().manual_seed(args.seed), "cpu")
        optimizer = torch.optim.Adam(loss.parameters(), lr=config.surrogate.lr)
        started = time.perf_counter()
        for _ in range(args.updates):
            surrogate_step(loss, sampler, optimizer, model, config.surrogate.batch_size)
        seconds = time.perf_counter() - started
        # Held-out pairs: global ones from another seed, local ones from the validation split.
        held_out = FidelityProbe(task, splits.val, config.sampling, config.batch_size, n_items=args.items).pairs(model)
        for kind in KINDS:
            pairs, p = held_out[kind], f"fidelity/{kind}"
            scores = pair_fidelity(loss, pairs, p)
            ceiling = tied_ceiling(pairs.errors[pairs.errors > 0].cpu())
            print(f"{strategy:13s} {kind:12s} {scores[p + '_spearman']:9.3f} {scores[p + '_mae']:8.3f} "
                  f"{scores[p + '_errors_spearman']:13.3f} {ceiling:12.3f} {scores[p + '_error_fraction']:6.2f}")
        print(f"{'':13s} ({seconds:.0f}s of surrogate training)")


if __name__ == "__main__":
    main()
