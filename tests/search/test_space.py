"""Search spaces: every shipped file validates; a bad file fails with its file, key and value,
before Ray is even imported; each smoke file runs as the command in its header says (slow)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from processes import left_running
from surrogate_search.search import SpaceError, load_space

REPO_ROOT = Path(__file__).resolve().parents[2]
SPACES = sorted((REPO_ROOT / "search_spaces").glob("*.yaml"))
SMOKES = [path for path in SPACES if path.stem.endswith("_smoke")]


def run_locally(path: Path) -> list[str]:
    """The words of the ``# Run locally:`` command in a space file's header."""
    line = next(line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("# Run locally:"))
    return shlex.split(line.partition(":")[2])


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_validates_and_says_how_to_run_it(path: Path) -> None:
    spec = load_space(path)
    assert spec.params and spec.budget.trials >= 1
    header = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    text = "\n".join(header)
    assert path.read_text(encoding="utf-8").startswith("#")
    assert f"surrogate-search search search_spaces/{path.name}" in text
    assert f"ray job submit" in text and f"python jobs/search.py search_spaces/{path.name}" in text
    assert "--set " in text


def test_local_ratio_exists_only_for_the_local_global_strategy() -> None:
    import optuna

    spec = load_space(REPO_ROOT / "search_spaces" / "tabular_f1_smoke.yaml")
    study = optuna.create_study(direction="maximize")
    seen = {}
    for strategy in ("global", "local", "local_global"):
        study.enqueue_trial({"sampling.strategy": strategy})
        trial = study.ask()
        seen[strategy] = spec.suggest(trial)
    assert "sampling.local_ratio" not in seen["global"] and "sampling.local_ratio" not in seen["local"]
    assert 0.1 <= seen["local_global"]["sampling.local_ratio"] <= 0.9


def test_anyloss_amplification_is_searched_for_anyloss_only_over_the_papers_range() -> None:
    import optuna

    spec = load_space(REPO_ROOT / "search_spaces" / "tabular_f1.yaml")
    study = optuna.create_study(direction="maximize")
    seen = {}
    for method in ("deep_embedding", "anyloss"):
        study.enqueue_trial({"method": method})
        seen[method] = spec.suggest(study.ask())
    assert "anyloss.amplification" not in seen["deep_embedding"]
    assert 10.0 <= seen["anyloss"]["anyloss.amplification"] <= 73.0
    amplification = seen["anyloss"]["anyloss.amplification"]
    assert spec.trial_config(seen["anyloss"]).section("anyloss").amplification == amplification


BAD = {
    "unknown key": ({"space": {"surrogate.widht": {"type": "int", "low": 8, "high": 32}}},
                    "space.surrogate.widht", "unknown key 'surrogate.widht'; known: ["),
    "low above high": ({"space": {"lr": {"type": "float", "low": 0.1, "high": 0.001}}}, "space.lr.low", "0.1"),
    "log with low <= 0": ({"space": {"lr": {"type": "float", "low": 0.0, "high": 0.01, "log": True}}},
                          "space.lr.low", "0.0"),
    "unknown choice": ({"space": {"sampling.strategy": {"choices": ["global", "glocal"]}}},
                       "space.sampling.strategy.choices", "'glocal'"),
    "unknown pair source": ({"space": {"sampling.source": {"choices": ["fresh", "batches"]}}},
                            "space.sampling.source.choices", "'batches'"),
    "unknown top-level key": ({"budgett": {"trials": 2}}, "budgett", "{'trials': 2}"),
    "amplification outside AnyLoss's range": (
        {"space": {"anyloss.amplification": {"type": "float", "low": 10.0, "high": 100.0}}},
        "space.anyloss.amplification", "must be in [10, 73]"),
}


def write_space(tmp_path: Path, change: dict) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "search_spaces" / "tabular_f1_smoke.yaml").read_text(encoding="utf-8"))
    if "space" in change:
        raw["space"] = {**{k: v for k, v in raw["space"].items() if k != "sampling.local_ratio"}, **change["space"]}
    else:
        raw.update(change)
    path = tmp_path / "bad_space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_space_names_file_key_and_value(case: str, tmp_path: Path) -> None:
    change, key, value = BAD[case]
    path = write_space(tmp_path, change)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert str(path) in message and key in message and value in message


@pytest.mark.parametrize("case", ["low above high", "unknown choice"])
def test_cli_rejects_a_bad_space_without_starting_ray(case: str, tmp_path: Path) -> None:
    change, key, value = BAD[case]
    path = write_space(tmp_path, change)
    probe = ("import sys; from surrogate_search.cli import main; rc = main(['search', sys.argv[1]]); "
             "print('ray imported:', 'ray' in sys.modules); sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "platform")}
    done = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert str(path) in done.stderr and key in done.stderr and value in done.stderr
    assert "ray imported: False" in done.stdout


def test_a_yaml_syntax_error_is_one_line_with_where_it_is(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\ntask: {name: imbalanced_tabular\nspace:\n  lr: [1e-4, 1e-2\n", encoding="utf-8")
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(info.value) == (f"{path}: not valid YAML at line 3, column 6: expected ',' or '}}', but got ':' "
                               f"(while parsing a flow mapping that starts at line 2, column 7)")


def test_override_reaches_budget_and_space(tmp_path: Path) -> None:
    spec = load_space(REPO_ROOT / "search_spaces" / "tabular_f1_smoke.yaml",
                      overrides={"budget.trials": 5, "space.lr.high": 0.5, "posttune.steps": 8})
    assert spec.budget.trials == 5
    assert next(p for p in spec.params if p.key == "lr").high == 0.5
    assert spec.trial_config({}).steps == 8
    with pytest.raises(SpaceError, match=r"budget\.trials = 0"):
        load_space(REPO_ROOT / "search_spaces" / "tabular_f1_smoke.yaml", overrides={"budget.trials": 0})


@pytest.mark.slow
@pytest.mark.parametrize("path", SMOKES, ids=lambda p: p.name)
def test_each_smoke_space_runs_as_its_header_says(path: Path, tmp_path: Path, ray_token: str) -> None:
    """The header's local command, as written, with the file's own budget, in a fresh folder (its
    runs/, a throwaway MLflow store): it pretrains the base, starts Ray and runs every trial (two Ray
    Train trials of two workers, ~20 s each, mostly process start-ups). On an otherwise idle 2-core
    machine: tabular_f1_smoke 59 s, text_edit_distance_smoke 63 s (up to 7 min while other work held
    the cores). A trial larger than the machine is fitted to it, with a log line."""
    from surrogate_search.search.resources import local_cluster, trial_cpus

    words = run_locally(path)
    assert words[:2] == ["surrogate-search", "search"] and words[2] == f"search_spaces/{path.name}"
    shutil.copytree(REPO_ROOT / "search_spaces", tmp_path / "search_spaces")  # the command's relative path
    marker = f"smoke-{tmp_path.name}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "SMOKE_TEST_RUN": marker,
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT / "platform"), os.environ.get("PYTHONPATH")) if p)}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "surrogate_search.cli", *words[1:]], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=540)  # inside pytest's 600 s, so a stuck search shows its output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
    finally:
        left = left_running(marker)  # Ray's agents outlive a killed driver
    print(f"{' '.join(words)}: {time.perf_counter() - started:.0f} s")
    assert process.returncode == 0, (out + err)[-4000:]
    assert left == [], "the search left processes running"
    spec = load_space(path)
    search_dir = tmp_path / "runs" / "search" / spec.name
    found = re.search(rf"^search {re.escape(str(search_dir))}: (.*)$", out, re.M)
    assert found, out[-2000:]
    states = dict((state, int(n)) for n, state in re.findall(r"(\d+) (\w+)", found.group(1)))
    assert states.get("complete", 0) >= 1 and states.get("complete", 0) + states.get("pruned", 0) == spec.budget.trials
    assert (search_dir / "best_config.yaml").exists() and "best trial trial_" in out
    fitted = "local mode: a trial of " in out
    assert fitted == (trial_cpus(spec.budget) > local_cluster()["CPU"])
