"""The main job (`make run`): the whole story on one machine.

1. Base models: the text CRNN (CTC) and an MLP (BCE) per tabular dataset, pretrained to a
   validation plateau the first time and reused afterwards; their validation and test metrics.
2. A short local search of the LS-ED space (search_spaces/text_edit_distance.yaml) with Ray Tune +
   Optuna (one-worker trials, so each runs inline in its Tune process), every trial recorded in MLflow.
3. Seeded comparisons from the same base checkpoints with the same extra budget: the search's
   best surrogate against CTC continuation and the expected-edit-distance (MWER) baseline on text; BCE, weighted BCE, AnyLoss and the learned
   surrogates on each tabular dataset. Each is a parent MLflow run with a child per method x seed.
4. The report table of each comparison, read back from MLflow, and the command that opens the UI.

    python jobs/main.py                                   # the laptop budget (what `make run` runs)
    python jobs/main.py --trials 16 --search-steps 300 --text-steps 600 --seeds 5
    python jobs/main.py --smoke-test --runs /tmp/smoke    # every step on tiny sizes, about a minute
    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/main.py --address auto

Bigger budgets are flags; `--help` lists them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "platform"))  # a plain folder: never a package named `platform`

from surrogate_search.pretrain import ensure_base_checkpoint  # noqa: E402
from surrogate_search.tasks import get_task  # noqa: E402

log = logging.getLogger("main")
TABULAR_DATASETS = ("breast_cancer", "digits", "synthetic")
LAPTOP_SPACE = {"space.surrogate.encoder.choices": ["conv"], "space.surrogate.steps_per_model_step.high": 2,
                "space.surrogate.pretrain_steps.choices": [0], "posttune.surrogate.warmup_steps": 50}
"""How the laptop budget narrows the LS-ED space (``--full-space`` searches the file as written):
the fastest encoder, few surrogate updates per model update, a short warm-up and no pretrained
surrogate (each trial's surrogate settings differ, so a pretrained one would be made per trial). Two one-worker
trials run at once on two cores."""


SMOKE_TEST = {"space": str(REPO_ROOT / "search_spaces" / "text_edit_distance_smoke.yaml"), "full_space": True,
              "trials": 2, "search_steps": 4, "text_steps": 4, "tabular_steps": 4, "tabular_warmup": 4, "seeds": 2,
              "text_base_epochs": 1, "datasets": "breast_cancer"}
"""``--smoke-test``: every step of the job, as tiny as it goes: the smoke space's 96-image text split,
its trials inline, one tabular dataset, two seeds of four updates."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=str(REPO_ROOT / "runs"), help="where base checkpoints and searches live")
    p.add_argument("--space", default=str(REPO_ROOT / "search_spaces" / "text_edit_distance.yaml"))
    p.add_argument("--trials", type=int, default=4, help="search trials")
    p.add_argument("--search-steps", type=int, default=30, help="model updates per search trial")
    p.add_argument("--text-steps", type=int, default=100, help="model updates per text comparison run")
    p.add_argument("--tabular-steps", type=int, default=100, help="model updates per tabular comparison run")
    p.add_argument("--tabular-warmup", type=int, default=150,
                   help="surrogate updates before the first model update in the tabular comparisons (library default 300)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per method in each comparison")
    p.add_argument("--text-base-epochs", type=int, default=8,
                   help="epochs of the text base model over its 60,000 images (it plateaus after about 22; "
                        "8 keep a fresh `make run` within 20 minutes on two cores)")
    p.add_argument("--datasets", default=",".join(TABULAR_DATASETS), help="tabular datasets to compare on")
    p.add_argument("--skip-search", action="store_true", help="compare with the space's default surrogate instead")
    p.add_argument("--full-space", action="store_true",
                   help="search the space file as it is; by default the laptop budget narrows it to the fast conv "
                        "encoder, k <= 2 and a 50-update surrogate warm-up, and runs two trials at once")
    p.add_argument("--address", default=None, help="a running Ray cluster (default: Ray in this process)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--smoke-test", action="store_true", help="every step on tiny sizes, in about a minute (for tests)")
    args = p.parse_args(argv)
    if args.smoke_test:
        vars(args).update(SMOKE_TEST)
    return args


STARTED = time.perf_counter()


def banner(text: str) -> None:
    print(f"\n=== {text} ===   [{(time.perf_counter() - STARTED) / 60:.1f} min into the job]", flush=True)


def base_models(args: argparse.Namespace) -> dict[str, object]:
    banner("1. base models (pretrained once, then reused)")
    from surrogate_search import load_space

    runs = Path(args.runs)
    space = load_space(args.space)  # the text base is the one its search starts from: the space's task
    tasks = {"synthetic_text": (get_task(space.task, seed=space.task_seed, **space.task_options), runs / "base_text")}
    for dataset in filter(None, args.datasets.split(",")):
        tasks[dataset] = (get_task("imbalanced_tabular", dataset=dataset), runs / f"base_tab_{dataset}")
    budgets = {"synthetic_text": {"max_epochs": args.text_base_epochs}}
    checkpoints = {}
    for key, (task, folder) in tasks.items():
        started = time.perf_counter()
        checkpoints[key] = ensure_base_checkpoint(task, folder, replace_stale=True,  # these folders are the job's
                                                  pretrain_options=budgets.get(key))
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        val, test = metrics.get("val", {}), metrics.get("test", {})
        print(f"{key:16s} {task.metric_name}: val {val.get(task.metric_name, float('nan')):.4f}  "
              f"test {test.get(task.metric_name, float('nan')):.4f}   ({folder}, {time.perf_counter() - started:.0f}s)")
    return checkpoints


def search(args: argparse.Namespace, text_checkpoint: object) -> dict[str, object]:
    from surrogate_search import load_space, run_search
    from surrogate_search.search.outcome import STUDY_DB

    overrides = {"budget.trials": args.trials, "posttune.steps": args.search_steps,
                 "posttune.eval_every": max(1, args.search_steps // 2),
                 "checkpoint": str(Path(text_checkpoint.path))}
    if args.smoke_test:
        overrides["budget.workers_per_trial"] = 1  # inline trials: no Ray Train start-up per trial
    if not args.full_space:
        # One deep_embedding step on one core (bench/posttune_step.py, text, k=1): 216 ms with the
        # conv encoder, 389 ms with conv_lstm, 463 ms with lstm; a CTC step is ~115 ms.
        overrides.update(LAPTOP_SPACE)
    spec = load_space(args.space, overrides)
    if args.skip_search:
        return spec.trial_config({}).to_dict()
    banner(f"2. search: {Path(args.space).name}, {args.trials} trials x {args.search_steps} steps (Ray Tune + Optuna)")
    storage = Path(args.runs) / "search"  # a search this job began before is continued
    outcome = run_search(spec, storage=storage, resume=(storage / spec.name / STUDY_DB).exists(), address=args.address,
                         tracking_uri=args.tracking_uri)
    print(outcome.summary())
    print(f"its trials, live or finished: .venv/bin/surrogate-search dashboard {outcome.search_dir}  "
          f"(plots: search_plots/ on MLflow run {outcome.mlflow.get('run_id', '-')})")
    if outcome.best_value is None:
        print("no trial finished: comparing the space's default settings instead")
        return spec.trial_config({}).to_dict()
    return outcome.best_config


def comparisons(args: argparse.Namespace, checkpoints: dict[str, object], best: dict[str, object]) -> list[object]:
    from surrogate_search import compare

    seeds = range(args.seeds)
    done = []
    banner(f"3. comparisons: same base checkpoint, same budget, {args.seeds} seeds, test split")
    text_config = {**best, "steps": args.text_steps, "eval_every": max(1, args.text_steps // 2)}
    print(f"synthetic_text: {best['method']} (best of the search) vs proxy (CTC continuation) and "
          f"expected_edit_distance (MWER), {args.text_steps} steps")
    done.append(compare(checkpoints["synthetic_text"], text_config,
                        methods=["proxy", "expected_edit_distance", str(best["method"])],
                        seeds=seeds, tracking_uri=args.tracking_uri))
    for key, checkpoint in checkpoints.items():
        if key == "synthetic_text":
            continue
        print(f"imbalanced_tabular/{key}: every method, {args.tabular_steps} steps; F1 at 0.5 and at each run's "
              f"threshold chosen on val")
        config = {"steps": args.tabular_steps, "eval_every": max(1, args.tabular_steps // 4),
                  "surrogate.warmup_steps": args.tabular_warmup}
        done.append(compare(checkpoint, config, seeds=seeds, tracking_uri=args.tracking_uri))
    return done


def report(done: list[object]) -> None:
    from surrogate_search.tracking.report import comparison_report

    banner("4. report (read back from MLflow)")
    for comparison in done:
        where = comparison.mlflow
        print(f"\nexperiment {where['experiment']}, comparison run {where['run_id']}")
        print(comparison_report(where["experiment"], run_id=where["run_id"], tracking_uri=where["tracking_uri"]).render("text"))
    first = done[0].mlflow
    print(f"\nbrowse the runs (prints the compare view of the latest comparison):\n"
          f"  .venv/bin/surrogate-search ui --tracking-uri {first['tracking_uri']} --experiment {first['experiment']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from surrogate_search.progress import configure_logging

    # Never silent for long: the library's own lines (pretraining epochs, the search's resources and
    # MLflow run, each comparison run) and progress (a bar on a terminal; elsewhere a line at least
    # every 30 s of a long step, with its validation metric and an ETA). Other libraries: warnings.
    configure_logging(logging.WARNING)
    logging.getLogger("surrogate_search").setLevel(logging.INFO)
    logging.getLogger("surrogate_search.posttune").setLevel(logging.WARNING)  # per-evaluation lines: progress says it
    from surrogate_search.tracking import check_tracking_store, resolve_tracking_uri

    # One absolute URI for every step, checked before any training: a server that is down fails here.
    args.tracking_uri = resolve_tracking_uri(args.tracking_uri)
    check_tracking_store(args.tracking_uri)
    checkpoints = base_models(args)
    best = search(args, checkpoints["synthetic_text"])
    done = comparisons(args, checkpoints, best)
    report(done)
    print(f"\nmain job finished in {(time.perf_counter() - STARTED) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
