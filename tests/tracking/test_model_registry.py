"""The model registry as a user meets it: ``compare`` registers its best learned surrogate as the
champion, ``posttune --surrogate models:/<name>@champion`` post-tunes from those weights without
learning a surrogate of its own, and a model that is missing or does not fit is a clear error."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import mlflow.artifacts
import pytest
import torch
from mlflow.tracking import MlflowClient

from surrogate_search.cli import main
from surrogate_search.tracking.model_registry import CHAMPION, fetch_surrogate, register_surrogate
from surrogate_search.tracking.store import use_tracking_uri

NAME = "imbalanced_tabular_breast_cancer-deep_embedding-surrogate"
TASK = ["--task", "imbalanced_tabular", "--option", "dataset=breast_cancer"]
TINY = ["--steps", "4", "--set", "eval_every=2", "--set", "surrogate.warmup_steps=2", "--set", "surrogate.batch_size=8"]
# A comparison whose learned run moves past the base on val (with TINY's 4 updates it keeps the base,
# and such a surrogate never becomes the champion): 12 updates at lr 1e-3, checked with one and two
# torch threads.
MOVES = ["--steps", "12", "--set", "lr=1e-3", *TINY[2:]]


@dataclass
class Registered:
    uri: str
    client: MlflowClient
    output: str
    cache: Path
    checkpoint: str


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, tabular_checkpoint) -> Registered:
    """``surrogate-search compare`` (proxy vs deep_embedding, 1 seed, 12 updates) into its own SQLite store."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cache = tmp_path_factory.getbasetemp() / "state" / "cache"
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.chdir(folder)  # MLflow puts a SQLite store's artifacts in ./mlruns
        mp.setenv("SURROGATE_SEARCH_CACHE", str(cache))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{cache.parent / 'mlflow.db'}")  # not the store compare writes to
        code = main(["-q", "compare", *TASK, "--checkpoint", str(tabular_checkpoint.path.parent), "--methods",
                     "deep_embedding", "--seeds", "1", "--tracking-uri", uri, *MOVES])
    assert code == 0, out.getvalue()
    return Registered(uri, MlflowClient(uri), out.getvalue(), cache, str(tabular_checkpoint.path.parent))


def test_compare_registers_its_best_surrogate_as_the_champion(registered) -> None:
    client = registered.client
    # Judged as the comparison selects on F1 tasks: val F1 at the threshold chosen on val.
    assert f"registered surrogate {NAME} version 1 (val f1_at_val_threshold " in registered.output
    assert f"now @{CHAMPION} (the first)" in registered.output
    assert f"--surrogate models:/{NAME}@{CHAMPION}" in registered.output
    assert client.get_registered_model(NAME).aliases == {CHAMPION: 1}
    version = client.get_model_version_by_alias(NAME, CHAMPION)
    (parent,) = client.search_runs([client.get_experiment_by_name("imbalanced_tabular_breast_cancer").experiment_id],
                                   filter_string="tags.run_kind = 'comparison'")
    best_run = client.get_run(parent.data.tags["best_surrogate_run_id"])
    assert version.run_id == best_run.info.run_id and version.tags["method"] == "deep_embedding"
    assert (version.tags["metric"], version.tags["split"], version.tags["kept_base"]) == ("f1_at_val_threshold", "val",
                                                                                          "false")
    assert float(version.tags["value"]) == pytest.approx(best_run.data.metrics["best_val/f1_at_val_threshold"])
    assert parent.data.tags["registered_surrogate"] == f"models:/{NAME}/1"


def test_posttune_starts_from_the_champion_without_learning_a_surrogate(registered, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SURROGATE_SEARCH_CACHE", str(registered.cache))
    surrogates = registered.cache / "surrogates"
    cached_before = set(surrogates.glob("*.pt")) if surrogates.exists() else set()
    # Pretraining asked for, and no surrogate update in the run: the surrogate it logs at the end is
    # the one it started from, unless it pretrained or learned one after all. No --method: the model's.
    code = main(["-q", "posttune", *TASK, "--checkpoint", registered.checkpoint, "--surrogate",
                 f"models:/{NAME}@{CHAMPION}", "--tracking-uri", registered.uri, "--experiment", "from-champion",
                 *TINY, "--set", "surrogate.pretrain_steps=5", "--set", "surrogate.warmup_steps=0",
                 "--set", "surrogate.steps_per_model_step=0"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"started from the surrogate models:/{NAME}@{CHAMPION} (models:/{NAME}/1)" in out
    client = registered.client
    (run,) = client.search_runs([client.get_experiment_by_name("from-champion").experiment_id])
    tags = run.data.tags
    assert tags["method"] == "deep_embedding"
    assert tags["surrogate_source"] == f"models:/{NAME}@{CHAMPION}"
    assert tags["surrogate_source_version"] == f"models:/{NAME}/1"
    assert "surrogate_pretrained" not in tags  # no pretraining step ran
    assert (set(surrogates.glob("*.pt")) if surrogates.exists() else set()) == cached_before
    assert math.isfinite(run.data.metrics["test/f1"])

    # The run logged the surrogate it selected (weights and surrogate.json, no MLflow model of its own),
    # by run URI as its tag names it, and as a downloaded folder.
    champion = fetch_surrogate(f"models:/{NAME}@{CHAMPION}", tracking_uri=registered.uri)
    assert tags["surrogate_uri"] == f"runs:/{run.info.run_id}/surrogate" and "surrogate_model_uri" not in tags
    by_run = fetch_surrogate(tags["surrogate_uri"], tracking_uri=registered.uri)
    with use_tracking_uri(registered.uri):
        folder = mlflow.artifacts.download_artifacts(artifact_uri=tags["surrogate_uri"])
    for used in (by_run, fetch_surrogate(folder)):
        assert used.about == champion.about
        assert champion.state.keys() == used.state.keys()
        assert all(torch.equal(champion.state[k], used.state[k]) for k in champion.state)


def test_the_printed_posttune_command_runs_from_the_champion(registered, tmp_path, monkeypatch, capsys) -> None:
    """The command ``compare`` prints after registering runs as printed: on the comparison's base model,
    with the registry it registered in, not the one MLFLOW_TRACKING_URI names in this shell."""
    import shlex

    (line,) = [line for line in registered.output.splitlines() if line.startswith("post-tune from it: ")]
    words = shlex.split(line.removeprefix("post-tune from it: "))
    assert words[:2] == ["surrogate-search", "posttune"]
    # The task's options that are not defaults, and no more.
    assert words.count("--option") == 1 and "dataset=breast_cancer" in words
    monkeypatch.setenv("SURROGATE_SEARCH_CACHE", str(registered.cache))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    code = main(["-q", *words[1:], "--experiment", "printed", *TINY])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"started from the surrogate models:/{NAME}@{CHAMPION} (models:/{NAME}/1)" in out
    (run,) = registered.client.search_runs([registered.client.get_experiment_by_name("printed").experiment_id])
    assert run.data.tags["checkpoint"] == str(Path(registered.checkpoint) / "model.pt")


@pytest.mark.parametrize("surrogate, extra, message", [
    ("models:/no-such-surrogate@champion", [], f"no registered model 'no-such-surrogate' in sqlite:///.* "
                                               f"\\(registered there: {NAME}\\)"),
    (f"models:/{NAME}/7", [], f"registered model '{NAME}' has no version 7 \\(versions: 1"),
    ("runs:/0123456789abcdef0123456789abcdef/surrogate", [], "no surrogate at runs:/0123456789abcdef0123456789abcdef/"
                                                           "surrogate in sqlite:///.*surrogate_uri"),
    (f"models:/{NAME}@champion", ["--method", "relational"],
     "was learned by method 'deep_embedding'; the post-tuning asks for method 'relational'"),
    (f"models:/{NAME}@champion", ["--set", "surrogate.width=32"],
     "was learned with surrogate.width=64; the post-tuning asks for surrogate.width=32"),
])
def test_a_missing_or_mismatched_model_is_a_clear_error(registered, capsys, surrogate, extra, message) -> None:
    code = main(["-q", "posttune", *TASK, "--checkpoint", registered.checkpoint, "--surrogate", surrogate, *extra,
                 "--tracking-uri", registered.uri, "--experiment", "refused", *TINY])
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert registered.client.get_experiment_by_name("refused") is None  # refused before any run started


def test_the_champion_alias_moves_only_to_a_better_version(registered) -> None:
    first = registered.client.get_model_version(NAME, "1")
    value, metric = float(first.tags["value"]), first.tags["metric"]
    worse = register_surrogate(first.source, NAME, metric=metric, value=value - 0.1, higher_is_better=True,
                               tracking_uri=registered.uri)
    assert (worse.version, worse.champion, worse.previous_version) == ("2", False, "1")
    assert registered.client.get_registered_model(NAME).aliases[CHAMPION] == 1
    assert worse.summary().endswith(f"@{CHAMPION} stays version 1, val {metric} {value:.4f}")
    better = register_surrogate(first.source, NAME, metric=metric, value=value + 0.01, higher_is_better=True,
                                tracking_uri=registered.uri)
    assert better.champion and registered.client.get_registered_model(NAME).aliases[CHAMPION] == 3
    assert f"now @{CHAMPION} (was version 1" in better.summary()
    # A version measured on another metric cannot be compared: the alias stays.
    other = register_surrogate(first.source, NAME, metric="g_mean", value=1.0, higher_is_better=True,
                               tracking_uri=registered.uri)
    assert not other.champion and "has no val g_mean to compare with" in other.summary()


def test_a_surrogate_whose_run_kept_the_base_never_becomes_the_champion(registered) -> None:
    # Its value is the base model's (no update beat the base on val), which says nothing of the surrogate.
    first = registered.client.get_model_version(NAME, "1")
    champion = registered.client.get_registered_model(NAME).aliases[CHAMPION]
    value, metric = float(registered.client.get_model_version(NAME, str(champion)).tags["value"]), first.tags["metric"]
    kept = register_surrogate(first.source, NAME, metric=metric, value=value + 0.05, higher_is_better=True,
                              tracking_uri=registered.uri, kept_base=True)
    assert not kept.champion and registered.client.get_registered_model(NAME).aliases[CHAMPION] == champion
    assert registered.client.get_model_version(NAME, kept.version).tags["kept_base"] == "true"
    assert kept.summary().endswith(f"@{CHAMPION} stays version {champion}, val {metric} {value:.4f} "
                                   "(its run kept the base model: no update beat the base on val)")
    # Through compare: updates too small to change the model (lr 1e-9), so every run hands the base back.
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["-q", "compare", *TASK, "--checkpoint", registered.checkpoint, "--methods", "deep_embedding",
                     "--seeds", "1", "--tracking-uri", registered.uri, "--registered-model-name", "kept-base-only",
                     *TINY, "--set", "lr=1e-9"])
    assert code == 0, out.getvalue()
    assert re.search(r"^deep_embedding .* 1 +1 ", out.getvalue(), re.M), out.getvalue()  # seeds 1, kept base 1
    assert f"no @{CHAMPION} yet (its run kept the base model: no update beat the base on val)" in out.getvalue()
    assert registered.client.get_registered_model("kept-base-only").aliases == {}
    assert registered.client.get_model_version("kept-base-only", "1").tags["kept_base"] == "true"
