"""Ray Tune + Optuna searches, run for real on an in-process Ray with token authentication:
resource planning, a smoke search, ASHA-stopped trials reaching Optuna as PRUNED, resume,
``compare --from-search``, and what a user sees of a search: its plots on the MLflow parent run,
Optuna trials and MLflow runs naming each other, and optuna-dashboard in a real browser (here, to
reuse the smoke searches; ``tests/search/test_dashboard.py`` has the rest of the dashboard)."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest

from surrogate_search.search import load_space
from surrogate_search.search.train import read_metrics_log
from surrogate_search.search.outcome import BEST_CONFIG, STUDY_DB, StorageError, check_search_dir, load_best_config
from surrogate_search.search.resources import (ResourceError, driver_resources, fit_to_machine, plan_resources,
                                               trial_resources)
from surrogate_search.search.tune import run_search

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE = REPO_ROOT / "search_spaces" / "tabular_f1_smoke.yaml"
GOOD = {"method": "deep_embedding", "surrogate.encoder": "deepsets", "surrogate.width": 16,
        "surrogate.grad_penalty": 0.1, "surrogate.proxy_weight": 1.0, "lr": 1.0e-5, "sampling.strategy": "global"}
# A learning rate this large wrecks the model within 4 updates: ASHA stops it at its first rung.
BAD = {**GOOD, "surrogate.proxy_weight": 0.0, "lr": 0.2}


@pytest.fixture(scope="module")
def base_checkpoint_dir(tabular_checkpoint) -> str:
    return str(tabular_checkpoint.path.parent)


def smoke_spec(checkpoint: str, **overrides):
    # Two Ray Train workers per trial, one trial at a time (so ASHA's decisions do not depend on timing).
    return load_space(SMOKE, overrides={"checkpoint": checkpoint, "posttune.steps": 8, "budget.concurrency": 1,
                                        "space.lr.high": 0.5, **overrides})


def test_plan_picks_a_concurrency_that_fits() -> None:
    spec = load_space(SMOKE, overrides={"budget.concurrency": 4})
    plan = plan_resources(spec, {"CPU": 7.0})
    assert (plan.cpus_per_trial, plan.concurrency) == (3.0, 2)
    assert "2 trial(s) at a time" in plan.describe()


def test_a_driver_without_a_cpu_lets_two_one_worker_trials_share_two_cores() -> None:
    spec = load_space(SMOKE, overrides={"budget.driver_cpus": 0, "budget.workers_per_trial": 1, "budget.concurrency": 4,
                                        "budget.runner": "train"})
    plan = plan_resources(spec, {"CPU": 2.0})
    assert (plan.cpus_per_trial, plan.concurrency) == (1.0, 2)
    # Tune refuses an all-zero resource request: such a driver asks for a sliver of memory instead.
    assert driver_resources(0) == {"CPU": 0, "memory": float(1 << 20)} and driver_resources(1.0) == {"CPU": 1.0}


def test_one_worker_trials_run_inline_holding_only_their_worker() -> None:
    spec = load_space(SMOKE, overrides={"budget.workers_per_trial": 1, "budget.concurrency": 4})
    assert spec.budget.runner == "auto" and spec.budget.trial_runner == "inline"
    plan = plan_resources(spec, {"CPU": 2.0})
    assert (plan.cpus_per_trial, plan.concurrency) == (1.0, 2)
    assert "each post-tuning in the trial's own process (inline)" in plan.describe()
    assert trial_resources(spec.budget) == {"CPU": 1.0}
    # Two workers per trial (the smoke file's setting) is a Ray Train run.
    assert load_space(SMOKE).budget.trial_runner == "train"


def test_local_mode_fits_a_trial_to_the_machine_driver_first_then_workers() -> None:
    spec = load_space(SMOKE)  # a driver CPU + 2 workers x 1 CPU: 3 CPUs
    fitted, changes = fit_to_machine(spec, {"CPU": 2.0, "GPU": 0.0})
    assert (fitted.budget.driver_cpus, fitted.budget.workers_per_trial, fitted.budget.trial_runner) == (0.0, 2, "train")
    assert changes == ["budget.driver_cpus 1 -> 0 (the trial's driver only waits on its workers)"]
    assert spec.budget.driver_cpus == 1.0  # the file's spec is not changed
    assert plan_resources(fitted, {"CPU": 2.0}).concurrency == 1

    one_core, changes = fit_to_machine(spec, {"CPU": 1.0})
    assert (one_core.budget.workers_per_trial, one_core.budget.trial_runner) == (1, "inline")
    assert changes[1] == "budget.workers_per_trial 2 -> 1 (each update now sees 1 x batch_size samples, not 2 x)"
    wide = load_space(SMOKE, overrides={"budget.workers_per_trial": 1, "budget.cpus_per_worker": 4})
    assert fit_to_machine(wide, {"CPU": 2.0})[0].budget.cpus_per_worker == 2.0
    assert fit_to_machine(spec, {"CPU": 3.0}) == (spec, [])  # fits as written: untouched


def test_local_mode_never_makes_a_gpu_up() -> None:
    spec = load_space(SMOKE, overrides={"budget.gpus_per_worker": 1})
    assert fit_to_machine(spec, {"CPU": 8.0, "GPU": 1.0})[0].budget.workers_per_trial == 1
    unplaceable, changes = fit_to_machine(spec, {"CPU": 8.0, "GPU": 0.0})
    assert changes == []
    with pytest.raises(ResourceError, match=r"2 workers x 1 GPUs = 2 GPUs, but the cluster has 0 GPUs\. Lower budget"):
        plan_resources(unplaceable, {"CPU": 8.0, "GPU": 0.0})


def test_the_search_folder_is_checked_before_anything_is_made(tmp_path) -> None:
    with pytest.raises(StorageError, match=r"--resume: there is no search to resume at .*searches: none"):
        check_search_dir(tmp_path / "searches" / "tabular_f1_smoke", resume=True)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(StorageError, match=r"a_file is a file, not a folder; pass another --storage"):
        check_search_dir(tmp_path / "a_file" / "tabular_f1_smoke", resume=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing made


def test_a_trial_that_can_never_fit_fails_at_once_with_the_arithmetic(ray_token, base_checkpoint_dir, tmp_path) -> None:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(ResourceError) as info:
            run_search(smoke_spec(base_checkpoint_dir), storage=tmp_path)
    finally:
        ray.shutdown()
    message = str(info.value)
    assert "1 driver CPU + 2 workers x 1 CPUs = 3 CPUs" in message and "the cluster has 2 CPUs" in message
    assert not list((tmp_path / "tabular_f1_smoke").glob("tune_*"))


@pytest.fixture(scope="module")
def searched(ray_token, base_checkpoint_dir, tmp_path_factory):
    storage = tmp_path_factory.mktemp("searches")
    outcome = run_search(smoke_spec(base_checkpoint_dir, **{"budget.trials": 2}), storage=storage, num_cpus=3,
                         points_to_evaluate=[GOOD, BAD], verbose=0, tracking_uri=tracking_uri(storage))
    return outcome, storage / "tabular_f1_smoke"


def tracking_uri(storage: Path) -> str:
    return f"sqlite:///{storage / 'mlflow.db'}"


def study_of(search_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="tabular_f1_smoke", storage=f"sqlite:///{search_dir / STUDY_DB}")


def test_smoke_search_finds_a_best_trial_and_saves_its_configuration(searched) -> None:
    outcome, search_dir = searched
    assert outcome.best_value is not None and outcome.best_run == "trial_0000"
    best = load_best_config(search_dir)
    assert best["posttune"]["lr"] == GOOD["lr"] and best["posttune"]["surrogate"]["width"] == 16
    assert best["checkpoint"] and best["task"]["name"] == "imbalanced_tabular"
    rows = read_metrics_log(search_dir / "train" / "trial_0000")
    final = [r for r in rows if r["final"]]
    assert len(final) == 1 and final[0]["workers"] == 2.0
    assert best["objective"]["value"] == pytest.approx(final[0]["val/f1"])


def test_trial_stopped_by_asha_reaches_optuna_as_pruned(searched) -> None:
    _, search_dir = searched
    trials = study_of(search_dir).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert trials[1].params["lr"] == BAD["lr"]
    # Optuna holds the value it was stopped at (as an intermediate value), not a final one. The
    # metrics log may go further: the workers do not wait for the scheduler's decision, and a trial
    # of 8 updates can finish before the stop reaches it (seen on a loaded machine: rows at steps
    # 4, 8 and the final one). What the scheduler decided is what Optuna records.
    pruned_rows = read_metrics_log(search_dir / "train" / "trial_0001")
    assert pruned_rows[0]["step"] == 4 and not pruned_rows[0]["final"]
    assert trials[1].intermediate_values == {1: pytest.approx(pruned_rows[0]["val/f1"])}


def test_resume_keeps_finished_trials_and_requeues_a_stuck_running_one(searched, base_checkpoint_dir, caplog) -> None:
    outcome, search_dir = searched
    spec = smoke_spec(base_checkpoint_dir, **{"budget.trials": 3})
    # What a killed search leaves behind: a trial Optuna handed out but never heard back about.
    stuck = study_of(search_dir).ask()
    spec.suggest(stuck)
    stuck.set_user_attr("train_run", f"trial_{stuck.number:04d}")
    before = {run: read_metrics_log(search_dir / "train" / run) for run in ("trial_0000", "trial_0001")}

    with caplog.at_level(logging.INFO, logger="surrogate_search.search.tune"):
        resumed = run_search(spec, storage=search_dir.parent, resume=True, num_cpus=3, verbose=0,
                             tracking_uri=tracking_uri(search_dir.parent))

    printed = caplog.text
    assert f"trial {stuck.number} was RUNNING when the search stopped: marked FAILED" in printed
    assert "2 finished trial(s) kept, 1 to run" in printed
    assert resumed.requeued == [stuck.number]
    trials = study_of(search_dir).get_trials()
    assert [t.state.name for t in trials[:3]] == ["COMPLETE", "PRUNED", "FAIL"]
    assert len(trials) == 4 and trials[3].state.name in ("COMPLETE", "PRUNED")
    # The re-queued trial ran under the stuck trial's Ray Train run name, with its parameters.
    assert trials[3].user_attrs["train_run"] == "trial_0002" and trials[3].params == stuck.params
    assert read_metrics_log(search_dir / "train" / "trial_0002")
    # Finished trials were not run again; the resumed Tune experiment ran exactly one trial.
    for run, rows in before.items():
        assert read_metrics_log(search_dir / "train" / run) == rows
    assert len([p for p in (search_dir / "tune_1").iterdir() if p.is_dir() and p.name.startswith("trial_trainable")]) == 1
    assert resumed.states == {"COMPLETE": resumed.states["COMPLETE"], "PRUNED": resumed.states["PRUNED"], "FAIL": 1}


def test_search_is_one_mlflow_parent_run_with_a_child_per_trial_across_a_resume(searched) -> None:
    from mlflow.tracking import MlflowClient

    # Runs after the resume test: the search ran twice in the same folder.
    _, search_dir = searched
    client = MlflowClient(tracking_uri(search_dir.parent))
    experiment = client.get_experiment_by_name("imbalanced_tabular_breast_cancer")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("run_kind") == "search"]
    assert len(parents) == 1, "a resumed search reopens its parent run instead of starting another"
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "search tabular_f1_smoke"
    child_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    # Counted as a list: a trial recorded twice (a resume that started a second run) shows here.
    assert sorted(r.data.tags["trial_key"] for r in child_runs) == ["trial_0000", "trial_0001", "trial_0002"]
    children = {r.data.tags["trial_key"]: r for r in child_runs}
    complete, pruned = children["trial_0000"], children["trial_0001"]
    assert complete.info.status == "FINISHED" and complete.data.tags["optuna_state"] == "COMPLETE"
    assert pruned.info.status == "KILLED" and pruned.data.tags["optuna_state"] == "PRUNED"
    assert complete.data.params["lr"] == str(GOOD["lr"]) and complete.data.tags["method"] == "deep_embedding"
    # Every evaluation of rank 0 is one step; the objective is the search's metric.
    objective = client.get_metric_history(complete.info.run_id, "objective")
    rows = [r for r in read_metrics_log(search_dir / "train" / "trial_0000") if not r["final"]]
    assert [m.step for m in objective][:len(rows)] == [int(r["step"]) for r in rows]
    assert objective[0].value == pytest.approx(rows[0]["val/f1"])
    assert "test/f1" in complete.data.metrics and "fidelity/local_spearman" in complete.data.metrics
    assert parent.data.tags["best_trial_run_id"] in {r.info.run_id for r in children.values()}
    assert "best_config.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]


def test_a_new_search_refuses_to_overwrite_an_existing_one(searched, base_checkpoint_dir) -> None:
    _, search_dir = searched
    with pytest.raises(FileExistsError, match="--resume"):
        run_search(smoke_spec(base_checkpoint_dir), storage=search_dir.parent)


def test_compare_from_search_runs_the_best_configuration(searched, capsys) -> None:
    from surrogate_search.cli import main

    _, search_dir = searched
    assert main(["compare", "--from-search", str(search_dir / BEST_CONFIG), "--methods", "deep_embedding",
                 "--seeds", "1", "--steps", "4"]) == 0
    out = capsys.readouterr().out
    # The best trial so far (the resume test, when it ran first, may have found a better one).
    best = load_best_config(search_dir)
    assert f"best configuration of search tabular_f1_smoke (trial {best['trial']}, val/f1 " in out
    assert "imbalanced_tabular: test f1" in out and "deep_embedding" in out and "proxy" in out


@pytest.fixture(scope="module")
def searched_inline(ray_token, base_checkpoint_dir, tmp_path_factory):
    storage = tmp_path_factory.mktemp("searches_inline")
    # The pruned trial is not the last: its Tune process is reused by the next trial.
    spec = smoke_spec(base_checkpoint_dir, **{"budget.trials": 3, "budget.workers_per_trial": 1})
    outcome = run_search(spec, storage=storage, num_cpus=2, points_to_evaluate=[GOOD, BAD, {**GOOD, "lr": 2.0e-5}],
                         verbose=0, tracking_uri=tracking_uri(storage))
    return outcome, storage / "tabular_f1_smoke"


def test_inline_search_records_trials_like_ray_train_ones(searched_inline) -> None:
    from mlflow.tracking import MlflowClient

    outcome, search_dir = searched_inline
    assert outcome.states == {"COMPLETE": 2, "PRUNED": 1}
    rows = read_metrics_log(search_dir / "train" / "trial_0000")
    final = [r for r in rows if r["final"]]
    assert len(final) == 1 and final[0]["workers"] == 1.0
    best_final = [r for r in read_metrics_log(search_dir / "train" / outcome.best_run) if r["final"]]
    assert outcome.best_value == pytest.approx(best_final[0]["val/f1"])
    # No Ray Train run: its checkpoints would be in the run's folder.
    assert not list((search_dir / "train" / "trial_0000").glob("checkpoint_*"))
    pruned = read_metrics_log(search_dir / "train" / "trial_0001")
    assert pruned and not any(r["final"] for r in pruned)
    assert study_of(search_dir).get_trials()[1].intermediate_values == {1: pytest.approx(pruned[0]["val/f1"])}

    client = MlflowClient(tracking_uri(search_dir.parent))
    runs = client.search_runs([client.get_experiment_by_name("imbalanced_tabular_breast_cancer").experiment_id])
    child_runs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["trial_key"] for r in child_runs) == ["trial_0000", "trial_0001", "trial_0002"]
    children = {r.data.tags["trial_key"]: r for r in child_runs}
    # The pruned trial's run is KILLED, not FAILED by the exit with which Tune stops its process.
    assert [children[f"trial_000{i}"].info.status for i in range(3)] == ["FINISHED", "KILLED", "FINISHED"]
    assert children["trial_0001"].data.tags["optuna_state"] == "PRUNED" and "error" not in children["trial_0001"].data.tags
    objective = client.get_metric_history(children["trial_0000"].info.run_id, "objective")
    assert [m.step for m in objective][:2] == [int(r["step"]) for r in rows if not r["final"]][:2]


def test_search_plots_are_on_the_mlflow_parent_run(searched_inline) -> None:
    from mlflow.tracking import MlflowClient

    outcome, search_dir = searched_inline
    client = MlflowClient(outcome.mlflow["tracking_uri"])
    listed = {a.path: a.file_size for a in client.list_artifacts(outcome.mlflow["run_id"], "search_plots")}
    print("search plots on the parent run:", sorted(listed))
    assert sorted(listed) == [f"search_plots/{name}.png" for name in
                              ("intermediate_values", "optimization_history", "parallel_coordinate",
                               "param_importances", "timeline")]
    assert all(size > 5000 for size in listed.values())  # pictures, not empty frames
    folder = Path(client.download_artifacts(outcome.mlflow["run_id"], "search_plots/intermediate_values.png",
                                            str(search_dir)))
    assert folder.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("which", ["searched", "searched_inline"])
def test_optuna_trials_and_mlflow_runs_name_each_other(which, request) -> None:
    from mlflow.tracking import MlflowClient

    from surrogate_search.search.outcome import train_run_name

    outcome, search_dir = request.getfixturevalue(which)
    client = MlflowClient(tracking_uri(search_dir.parent))
    child_runs = client.search_runs(
        [client.get_experiment_by_name("imbalanced_tabular_breast_cancer").experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{outcome.mlflow['run_id']}'")
    runs = {r.data.tags["trial_key"]: r for r in child_runs}
    ran = [t for t in study_of(search_dir).get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(child_runs) == len(runs) == len({train_run_name(t) for t in ran})  # one run per trial, no duplicate
    assert {t.state.name for t in ran} == {"COMPLETE", "PRUNED"}
    for trial in ran:
        run = runs[train_run_name(trial)]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id  # Optuna -> MLflow
        assert run.data.tags["optuna_trial"] == str(trial.number)  # MLflow -> Optuna


@pytest.mark.slow
def test_dashboard_shows_the_trials_of_a_finished_search_in_a_browser(searched_inline, open_page, tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys

    artifacts = REPO_ROOT / "tests" / "artifacts"  # screenshots, kept (ignored by git)
    _, search_dir = searched_inline
    trials = study_of(search_dir).get_trials()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-m", "surrogate_search.cli", "dashboard", str(search_dir),
                                "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    try:
        lines = []
        while not any("Ctrl-C" in line for line in lines):
            line = process.stdout.readline()  # type: ignore[union-attr]
            assert line, "".join(lines)
            lines.append(line)
        address = lines[0].split()[2]
        assert lines[0].startswith("Optuna dashboard: http://127.0.0.1:"), lines
        study_line = next(line for line in lines if line.startswith("study tabular_f1_smoke "))
        assert f"({len(trials)} trials): {address}/dashboard/studies/" in study_line
        text = open_page(study_line.split()[-1] + "/trials", artifacts / "optuna_dashboard_trials.png")
        assert f"{len(trials)} Trials" in text
        for trial in trials:
            assert f"Trial {trial.number} {trial.state.name.capitalize()}" in text
        # The selected (first) trial shows its parameters and the MLflow run it was recorded in.
        assert f"mlflow_run_id {trials[0].user_attrs['mlflow_run_id']}" in text and "surrogate.width" in text
        assert (artifacts / "optuna_dashboard_trials.png").read_bytes()[:4] == b"\x89PNG"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.mark.slow
def test_killed_inline_trial_resumes_from_its_tune_checkpoint(ray_token, base_checkpoint_dir, tmp_path) -> None:
    import os
    import signal
    import threading
    import time

    spec = smoke_spec(base_checkpoint_dir, **{"budget.trials": 1, "budget.workers_per_trial": 1,
                                              "budget.scheduler.type": "none", "posttune.steps": 400,
                                              "posttune.eval_every": 50})
    run_dir = tmp_path / "tabular_f1_smoke" / "train" / "trial_0000"
    killed: list[tuple[int, int]] = []
    done = threading.Event()

    def kill_after_second_report() -> None:
        while not done.is_set() and not killed:
            rows = read_metrics_log(run_dir)
            if len(rows) >= 2 and not rows[-1]["final"]:
                killed.append((int(rows[-1]["step"]), rows[-1]["pids"][0]))
                os.kill(killed[0][1], signal.SIGKILL)  # the trial's own process, mid-run
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_after_second_report)
    watcher.start()
    try:
        outcome = run_search(spec, storage=tmp_path, num_cpus=2, points_to_evaluate=[GOOD], verbose=0)
    finally:
        done.set()
        watcher.join()
    assert killed, "the trial finished before its process could be killed"
    assert outcome.states == {"COMPLETE": 1}
    rows = read_metrics_log(run_dir)
    steps = [int(r["step"]) for r in rows if not r["final"]]
    # Restarted from a checkpoint, not from scratch: the first report after the kill continues
    # from step 100 (or repeats it, when Tune had not yet registered that report's checkpoint).
    assert steps[:2] == [50, 100] and steps[2] in (100, 150)
    assert sorted(set(steps)) == list(range(50, 401, 50)) and len(steps) <= 9
    assert rows[-1]["final"] and len([r for r in rows if r["final"]]) == 1
    assert killed[0][1] not in rows[-1]["pids"]
