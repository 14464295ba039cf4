from __future__ import annotations

import pytest
import torch

from surrogate_search.config import PostTuneConfig
from surrogate_search.metrics import get_metric
from surrogate_search.posttune import PostTuneDiverged, WorkerContext, posttune, tune_threshold
from surrogate_search.surrogates import SurrogateDivergedError
from surrogate_search.surrogates.learned import EmbeddingSurrogate


def tabular_config(**overrides) -> PostTuneConfig:
    from surrogate_search.tasks import get_task

    return PostTuneConfig.for_task(get_task("imbalanced_tabular"), {
        "steps": 12, "eval_every": 4, "batch_size": 64, "surrogate": {"warmup_steps": 5, "batch_size": 8},
        **overrides})


@pytest.mark.parametrize("method", ["proxy", "deep_embedding"])
def test_posttune_reports_every_evaluation_and_selects_on_validation(tabular_checkpoint, method: str) -> None:
    reports = []
    ctx = WorkerContext(report=lambda metrics, state: reports.append((metrics, state())))
    result = posttune(tabular_config(method=method), tabular_checkpoint, context=ctx)
    assert [m["step"] for m, _ in reports] == [4.0, 8.0, 12.0]
    assert reports[-1][1]["step"] == 12
    # F1 is judged at the threshold chosen on val, so the selection compares val F1 there too
    # (selection=auto); the base is a candidate as well.
    vals = [result.base_val["f1_best_threshold"], *(m["val/f1_best_threshold"] for m, _ in reports)]
    assert result.best_step == [0, 4, 8, 12][vals.index(max(vals))]
    assert result.tuned.val == pytest.approx(max(vals))
    assert all(m["val/f1_best_threshold"] >= m["val/f1"] for m, _ in reports)  # 0.5 is one candidate
    assert 0.0 <= result.test["f1"] <= 1.0 and "f1" in result.test_final
    assert result.history[0]["step"] == 0.0  # the base model, before any update
    if method == "deep_embedding":
        assert "fidelity/global_spearman" in reports[-1][0] and "surrogate/fit" in reports[-1][0]


@pytest.mark.parametrize("selection, selected", [("auto", 12), ("best_threshold", 12), ("metric", 0)])
def test_selection_compares_what_the_setting_names(tabular_checkpoint, monkeypatch, selection, selected) -> None:
    # Val F1 at its best threshold made to rise at every evaluation, while F1 at 0.5 does not:
    # a selection at the threshold picks the last step, one at 0.5 never does.
    from surrogate_search.metrics import ConfusionMatrixMetric

    calls = iter(range(1, 100))
    monkeypatch.setattr(ConfusionMatrixMetric, "best_threshold", lambda self, p, y: (0.5, next(calls) / 100))
    result = posttune(tabular_config(method="proxy", lr=1e-3, selection=selection), tabular_checkpoint)
    assert [row["val/f1_best_threshold"] for row in result.history] == [0.01, 0.02, 0.03, 0.04]
    assert result.best_step == selected
    if selection == "metric":
        at_half = [row["val/f1"] for row in result.history]
        assert result.val["f1"] == pytest.approx(max(at_half)) and at_half[-1] < max(at_half)


def test_selection_at_a_threshold_needs_a_thresholded_metric(text_checkpoint) -> None:
    from surrogate_search.tasks import get_task

    with pytest.raises(ValueError, match="selection='best_threshold'.*synthetic_text is judged by edit_distance"):
        PostTuneConfig.for_task(get_task("synthetic_text"), {"selection": "best_threshold"})
    with pytest.raises(ValueError, match="selection must be one of auto, metric, best_threshold, got 'val'"):
        PostTuneConfig.for_task(get_task("synthetic_text"), {"selection": "val"})


def test_resume_from_a_saved_state_finishes_like_an_uninterrupted_run(tabular_checkpoint) -> None:
    config = tabular_config(method="deep_embedding")
    full = posttune(config, tabular_checkpoint)
    saved = []

    class Interrupt(Exception):
        pass

    def report(metrics, state):
        saved.append(state())
        if metrics["step"] == 8.0:
            raise Interrupt

    with pytest.raises(Interrupt):
        posttune(config, tabular_checkpoint, context=WorkerContext(report=report))
    resumed = posttune(config, tabular_checkpoint, context=WorkerContext(resume_state=saved[-1]))
    assert resumed.test == pytest.approx(full.test)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in full.history]


def test_the_seed_decides_a_run_and_the_same_seed_repeats_it(tabular_checkpoint) -> None:
    config = tabular_config(method="deep_embedding", steps=4, eval_every=2, lr=1e-3, surrogate={"warmup_steps": 2})
    first, again, other = (posttune(config.replace(seed=seed), tabular_checkpoint) for seed in (0, 0, 1))

    def trace(result):  # every evaluation's figures, the clock aside
        return [{k: v for k, v in row.items() if k != "seconds"} for row in result.history]

    assert (again.final_weights, again.batches_digest, trace(again)) == (first.final_weights, first.batches_digest,
                                                                         trace(first))
    assert other.initial_weights == first.initial_weights  # the same base
    assert other.batches_digest != first.batches_digest and other.final_weights != first.final_weights
    assert [row["loss"] for row in trace(other)[1:]] != [row["loss"] for row in trace(first)[1:]]


def test_nan_surrogate_stops_the_run_before_the_model_changes(tabular_checkpoint, monkeypatch) -> None:
    seen = {}

    def keep(model):
        seen["model"] = model
        seen["before"] = {k: v.clone() for k, v in model.state_dict().items()}
        return model

    def nan_forward(self, predictions, targets):
        return torch.full(predictions.shape[:1], float("nan"), requires_grad=True) * predictions.sum(-1)

    monkeypatch.setattr(EmbeddingSurrogate, "forward", nan_forward)
    config = tabular_config(method="deep_embedding", surrogate={"warmup_steps": 0})
    with pytest.raises(SurrogateDivergedError, match="not finite .* the model was not updated") as raised:
        posttune(config, tabular_checkpoint, context=WorkerContext(prepare_model=keep))
    after = seen["model"].state_dict()
    # Ended at once, at the first model update, with the last finite evaluation (the base's) and the reason.
    diverged = raised.value
    assert isinstance(diverged, PostTuneDiverged)
    assert (diverged.method, diverged.seed, diverged.step) == ("deep_embedding", 0, 1)
    assert diverged.last_evaluation["step"] == 0.0 and "val/f1" in diverged.last_evaluation
    assert "deep_embedding surrogate's training loss is not finite" in str(diverged)
    assert "surrogate.lr (now 0.001)" in str(diverged) and "lr (now 0.0001)" in str(diverged)
    assert all(torch.equal(seen["before"][k], after[k]) for k in after)


def test_text_posttune_runs_with_each_learned_surrogate(text_checkpoint) -> None:
    for method in ("deep_embedding", "relational"):
        config = PostTuneConfig.from_dotted({"method": method, "steps": 2, "eval_every": 2, "batch_size": 8,
                                           "surrogate": {"proxy_weight": 0.5, "warmup_steps": 2, "batch_size": 8,
                                                                              "width": 16, "filter_threshold": 2.0}})
        result = posttune(config, text_checkpoint)
        assert result.steps == 2 and "edit_distance" in result.test
        assert "surrogate/kept_fraction" in result.history[-1]


def test_config_errors_name_the_key_and_value() -> None:
    with pytest.raises(ValueError, match=r"unknown key 'surrogate.widht'; known: \[.*'surrogate.width'.*\]\. "
                                         r"Did you mean 'surrogate.width'\?"):
        PostTuneConfig.from_dotted({"surrogate": {"widht": 3}})
    with pytest.raises(ValueError, match="'proxy_weight' is now 'surrogate.proxy_weight'"):
        PostTuneConfig.from_dotted({"proxy_weight": 0.5})
    with pytest.raises(ValueError, match="'surrogate.rank_temperature' is now 'relational.rank_temperature'"):
        PostTuneConfig.from_dotted({"surrogate": {"rank_temperature": 0.5}})
    with pytest.raises(ValueError, match=r"anyloss.amplification must be in \[10, 73\] .*, got 0.0"):
        PostTuneConfig.from_dotted({"anyloss.amplification": 0}).validate()
    with pytest.raises(KeyError, match="unknown method 'relatonal'.*Did you mean 'relational'"):
        PostTuneConfig.from_dotted({"method": "relatonal"}).validate()
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got -3"):
        PostTuneConfig.from_dotted({"steps": -3}).validate()
    with pytest.raises(ValueError, match=r"^post-tuning config: lr must be in \(0, 1\] .*, got 1e\+30$"):
        PostTuneConfig.from_dotted({"lr": 1e30}).validate()
    with pytest.raises(ValueError, match=r"surrogate.lr must be in \(0, 1\] .*, got -0.001"):
        PostTuneConfig.from_dotted({"surrogate.lr": -1e-3}).validate()
    with pytest.raises(ValueError, match="lr must be a number, got 'fast'"):
        PostTuneConfig.from_dotted({"lr": "fast"})
    with pytest.raises(ValueError, match="sampling.local_ratio must be in \\[0, 1\\], got 1.5"):
        PostTuneConfig.from_dotted({"sampling.local_ratio": 1.5}).validate()
    with pytest.raises(ValueError, match="surrogate.width must be an integer, got 'wide'"):
        PostTuneConfig.from_dotted({"surrogate.width": "wide"})
    assert PostTuneConfig.from_dotted({"surrogate.width": 32.0, "lr": 1}).surrogate.width == 32


def test_the_base_is_kept_when_no_update_beats_it_on_validation(tabular_checkpoint) -> None:
    # A learning rate this large wrecks the model at once: every later evaluation is worse.
    result = posttune(tabular_config(method="proxy", lr=1.0), tabular_checkpoint)
    assert result.best_step == 0
    assert result.val["f1"] == pytest.approx(result.base_val["f1"])
    assert result.history[-1]["val/f1"] < result.base_val["f1"]


def test_expected_edit_distance_post_tunes_a_text_model(text_checkpoint) -> None:
    config = PostTuneConfig.for_task(text_checkpoint.build_task(), {
        "method": "expected_edit_distance", "steps": 2, "eval_every": 2, "batch_size": 8,
        "expected_edit_distance.samples": 4})
    result = posttune(config, text_checkpoint)
    assert result.steps == 2 and "mwer/expected_edit_distance" in result.history[-1]
    with pytest.raises(ValueError, match="expected_edit_distance.samples must be >= 2, got 1"):
        config.replace({"expected_edit_distance.samples": 1})


@pytest.mark.parametrize(("schedule", "halfway", "last"), [("constant", 1e-3, 1e-3), ("cosine", 5e-4, 0.0)])
def test_lr_schedule_sets_the_step_size_of_each_model_update(tabular_checkpoint, schedule, halfway, last) -> None:
    seen = []
    ctx = WorkerContext(report=lambda metrics, state: seen.append(state()["optimizer"]["param_groups"][0]["lr"]))
    posttune(tabular_config(method="proxy", lr=1e-3, lr_schedule=schedule, steps=8, eval_every=4), tabular_checkpoint,
             context=ctx)
    assert seen == pytest.approx([halfway, last], abs=1e-12)


def test_an_unknown_lr_schedule_is_named() -> None:
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine, got 'linear'"):
        tabular_config(lr_schedule="linear")


class ProbabilityIsTheFeature(torch.nn.Module):
    """A "model" whose positive-class probability is its input's one feature."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(x[:, 0].double()).float()


def probability_split(probabilities: list[float], labels: list[int]):
    from surrogate_search.tasks import Split

    return Split({"features": torch.tensor(probabilities).view(-1, 1), "targets": torch.tensor(labels).float()}, labels)


def test_the_threshold_is_chosen_on_val_never_on_test() -> None:
    from surrogate_search.tasks import Splits, get_task

    probabilities = [0.1, 0.2, 0.35, 0.45, 0.6, 0.9]
    # On val every sample from 0.35 up is positive: the best threshold lies between 0.2 and 0.35.
    # On test only 0.6 and 0.9 are: its best threshold (0.525) would give a perfect test F1.
    val = probability_split(probabilities, [0, 0, 1, 1, 1, 1])
    test = probability_split(probabilities, [0, 0, 0, 0, 1, 1])
    splits = Splits(train=val, val=val, test=test)
    tuned = tune_threshold(get_task("imbalanced_tabular"), ProbabilityIsTheFeature(), splits)
    assert tuned is not None
    assert tuned.threshold == pytest.approx(0.275) and tuned.val == 1.0
    assert tuned.test == pytest.approx(2 / 3)  # 2 true and 2 false positives on test at val's threshold
    assert get_metric("f1").best_threshold(probabilities, test.labels) == (pytest.approx(0.525), 1.0)


def test_posttune_reports_the_metric_at_the_threshold_chosen_on_val(tabular_checkpoint) -> None:
    # lr 1.0 wrecks every update, so the selected model is the base: its probabilities are known here.
    result = posttune(tabular_config(method="proxy", lr=1.0), tabular_checkpoint)
    assert result.best_step == 0 and result.tuned is not None
    task = tabular_checkpoint.build_task()
    model, splits, f1 = tabular_checkpoint.build_model(task), task.splits(), get_metric("f1")
    val_p, test_p = (task.predict_split(model, split).numpy() for split in (splits.val, splits.test))
    threshold, val_value = f1.best_threshold(val_p, splits.val.labels)
    assert result.tuned.threshold == pytest.approx(threshold) and result.tuned.val == pytest.approx(val_value)
    assert result.tuned.test == pytest.approx(f1.at_threshold(test_p, splits.test.labels, threshold))
    assert result.tuned.val >= result.val["f1"]  # 0.5 is one of the thresholds val chose among
    assert f1.at_threshold(test_p, splits.test.labels, 0.5) == pytest.approx(result.test["f1"])


def test_tasks_without_a_confusion_matrix_metric_have_no_threshold(text_checkpoint) -> None:
    config = PostTuneConfig.for_task(text_checkpoint.build_task(), {"method": "proxy", "steps": 1, "eval_every": 1,
                                                                    "batch_size": 8})
    assert posttune(config, text_checkpoint).tuned is None
