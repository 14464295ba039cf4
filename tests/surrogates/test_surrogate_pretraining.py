"""A surrogate pretrained once per base model: cached, reused by other seeds, remade when what it
depends on changes; and the surrogate training options that steer where its gradient goes."""

from __future__ import annotations

import contextlib

import pytest
import torch

from surrogate_search.config import PostTuneConfig
from surrogate_search.posttune import posttune
from surrogate_search.sampling import Pairs
from surrogate_search.surrogates import create_loss
from surrogate_search.tasks import Split, Splits, get_task


def config(**overrides) -> PostTuneConfig:
    return PostTuneConfig.for_task(get_task("imbalanced_tabular"), {
        "method": "deep_embedding", "steps": 2, "eval_every": 2, "batch_size": 64,
        "surrogate": {"pretrain_steps": 6, "warmup_steps": 0, "steps_per_model_step": 0, "batch_size": 8},
        **overrides})


def surrogate_weights(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_a_second_seed_reuses_the_pretrained_surrogate_and_new_settings_retrain_it(tabular_checkpoint, tmp_path) -> None:
    first = posttune(config(seed=0), tabular_checkpoint, cache_dir=str(tmp_path))
    assert first.surrogate_pretraining["reused"] is False
    assert first.surrogate_pretraining["steps"] == 6
    made = surrogate_weights(first.surrogate_pretraining["path"])

    second = posttune(config(seed=1), tabular_checkpoint, cache_dir=str(tmp_path))
    assert second.surrogate_pretraining["reused"] is True
    assert second.surrogate_pretraining["path"] == first.surrogate_pretraining["path"]
    again = surrogate_weights(second.surrogate_pretraining["path"])
    assert all(torch.equal(made[k], again[k]) for k in made)  # loaded, not trained again

    # A setting that only steers model updates shares the surrogate; one that shapes it does not.
    mixed = posttune(config(seed=2, **{"surrogate.proxy_weight": 0.5}), tabular_checkpoint, cache_dir=str(tmp_path))
    assert mixed.surrogate_pretraining["reused"] is True
    wider = posttune(config(**{"surrogate.width": 16}), tabular_checkpoint, cache_dir=str(tmp_path))
    assert wider.surrogate_pretraining["reused"] is False
    assert wider.surrogate_pretraining["path"] != first.surrogate_pretraining["path"]
    assert len(list(tmp_path.glob("surrogates/*.pt"))) == 2


def test_other_tuning_data_passed_in_gets_a_surrogate_of_its_own(tabular_checkpoint, tmp_path) -> None:
    # posttune(splits=...) lets a caller tune on data of its own (bench/domain_gap.py renders the
    # tuning images differently): a surrogate pretrained on the task's tuning part is not for them.
    task = tabular_checkpoint.build_task()
    splits = task.splits()
    first = posttune(config(), tabular_checkpoint, splits=splits, cache_dir=str(tmp_path))
    tune = splits.tune
    shifted = Split({**tune.tensors, "features": tune.tensors["features"] + 0.5}, tune.labels)  # same labels
    other = posttune(config(), tabular_checkpoint, splits=Splits(splits.train, splits.val, splits.test, tune=shifted),
                     cache_dir=str(tmp_path))
    assert (first.surrogate_pretraining["reused"], other.surrogate_pretraining["reused"]) == (False, False)
    assert other.surrogate_pretraining["path"] != first.surrogate_pretraining["path"]
    again = posttune(config(seed=1), tabular_checkpoint, splits=splits, cache_dir=str(tmp_path))
    assert again.surrogate_pretraining["path"] == first.surrogate_pretraining["path"]


def test_a_run_goes_on_alike_whether_its_surrogate_was_pretrained_here_or_loaded(tabular_checkpoint, tmp_path) -> None:
    fresh = posttune(config(steps=4, **{"surrogate.steps_per_model_step": 1}), tabular_checkpoint,
                     cache_dir=str(tmp_path))
    loaded = posttune(config(steps=4, **{"surrogate.steps_per_model_step": 1}), tabular_checkpoint,
                      cache_dir=str(tmp_path))
    assert (fresh.surrogate_pretraining["reused"], loaded.surrogate_pretraining["reused"]) == (False, True)
    assert [row["val/f1"] for row in loaded.history] == [row["val/f1"] for row in fresh.history]
    assert loaded.test == fresh.test


def test_without_pretraining_nothing_is_cached(tabular_checkpoint, tmp_path) -> None:
    result = posttune(config(**{"surrogate.pretrain_steps": 0, "surrogate.warmup_steps": 2}), tabular_checkpoint,
                      cache_dir=str(tmp_path))
    assert result.surrogate_pretraining == {}
    assert not (tmp_path / "surrogates").exists()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("surrogate.penalty_scope", "wrong", r"surrogate.penalty_scope must be one of all, errors, got 'wrong'"),
    ("surrogate.fit", "huber", r"surrogate.fit must be one of squared, l1, got 'huber'"),
    ("surrogate.pretrain_steps", -1, r"pretrain_steps"),
])
def test_bad_surrogate_training_settings_are_named(key: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(**{key: value})


def test_penalty_scope_errors_leaves_items_without_errors_out_of_the_penalty() -> None:
    task = get_task("imbalanced_tabular")
    torch.manual_seed(0)
    predictions = torch.rand(6, 8)
    targets = (torch.rand(6, 8) > 0.5).float()
    perfect = Pairs(predictions, targets, torch.zeros(6))
    penalties = {}
    for scope in ("all", "errors"):
        cfg = config(**{"surrogate.penalty_scope": scope, "surrogate.grad_penalty": 1.0,
                        "surrogate.encoder": "deepsets"})
        torch.manual_seed(1)
        loss = create_loss(task, cfg)
        penalties[scope] = loss.fit(perfect)[1]["surrogate/grad_penalty"]
    assert penalties["all"] > 0.0
    assert penalties["errors"] == 0.0  # no pair has an error: nothing is pushed toward unit gradients


def test_l1_fit_is_the_mean_absolute_error() -> None:
    task = get_task("imbalanced_tabular")
    loss = create_loss(task, config(**{"surrogate.fit": "l1"}))
    estimates, errors = torch.tensor([0.0, 1.0, 3.0]), torch.tensor([1.0, 1.0, 1.0])
    assert float(loss.fit_loss(estimates, errors)) == pytest.approx(1.0)


def test_a_tracked_comparison_records_which_runs_made_and_which_reused_the_pretrained_surrogate(tabular_checkpoint, tmp_path, capsys) -> None:
    import mlflow

    from surrogate_search.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["-q", "compare", "--task", "imbalanced_tabular", "--option", "dataset=breast_cancer",
                 "--checkpoint", str(tabular_checkpoint.path.parent), "--seeds", "2", "--methods", "deep_embedding",
                 "--steps", "2", "--set", "eval_every=2", "--set", "surrogate.pretrain_steps=4",
                 "--set", "surrogate.warmup_steps=0", "--set", "surrogate.batch_size=8", "--tracking-uri", uri])
    assert code == 0, capsys.readouterr().err
    runs = mlflow.MlflowClient(uri).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(uri).search_experiments()],
        filter_string="tags.method = 'deep_embedding'")
    by_seed = {r.data.params["seed"]: r for r in runs}
    assert by_seed["0"].data.tags["surrogate_pretraining_reused"] == "false"
    assert by_seed["1"].data.tags["surrogate_pretraining_reused"] == "true"
    assert by_seed["0"].data.tags["surrogate_pretrained"] == by_seed["1"].data.tags["surrogate_pretrained"]
    assert by_seed["0"].data.metrics["surrogate_pretraining/steps"] == 4
    assert "surrogate_pretraining/after/fidelity/local_noisy_spearman" in by_seed["0"].data.metrics


def test_batch_source_fine_tunes_on_the_updates_own_forward_pass_and_shares_the_pretrained_surrogate(
        text_checkpoint, tmp_path, monkeypatch) -> None:
    task_class = type(text_checkpoint.build_task())
    forward = task_class.forward
    calls: list[int] = []

    def counted(self, model, batch):
        calls.append(len(batch))
        return forward(self, model, batch)

    monkeypatch.setattr(task_class, "forward", counted)
    settings = {"method": "deep_embedding", "steps": 4, "eval_every": 4, "batch_size": 8,
                "surrogate": {"pretrain_steps": 3, "warmup_steps": 0, "steps_per_model_step": 1,
                              "batch_size": 8, "width": 16}}
    made = posttune(PostTuneConfig.from_dotted(settings), text_checkpoint, cache_dir=str(tmp_path))
    runs, forwards = {}, {}
    for source in ("fresh", "batch"):
        calls.clear()
        runs[source] = posttune(PostTuneConfig.from_dotted({**settings, "sampling.source": source}), text_checkpoint,
                                cache_dir=str(tmp_path))
        forwards[source] = len(calls)
    # pretraining draws fresh pairs either way: both runs load the surrogate the first one made
    assert made.surrogate_pretraining["reused"] is False
    assert runs["fresh"].surrogate_pretraining["reused"] and runs["batch"].surrogate_pretraining["reused"]
    # the same model updates on the same batches, one forward pass fewer per update with "batch"
    assert runs["fresh"].batches_digest == runs["batch"].batches_digest
    assert runs["fresh"].model_updates == runs["batch"].model_updates == 4
    assert forwards["fresh"] - forwards["batch"] == 4
    # and the surrogate is still fine-tuned between model updates, on other pairs than fresh draws
    assert runs["batch"].history[-1]["surrogate/fit"] != runs["fresh"].history[-1]["surrogate/fit"]
    assert runs["fresh"].final_weights != runs["batch"].final_weights


def test_a_model_update_does_not_train_the_surrogate(text_checkpoint) -> None:
    from surrogate_search.posttune import model_step

    task = text_checkpoint.build_task()
    model = text_checkpoint.build_model(task)
    loss = create_loss(task, PostTuneConfig.from_dotted({"method": "deep_embedding", "surrogate.width": 16,
                                                          "surrogate.proxy_weight": 0.0}))
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    batch = task.load_splits().train.subset(range(8))
    model_step(task, model, loss, torch.optim.SGD(model.parameters(), lr=0.1), batch, contextlib.nullcontext())
    assert all(p.grad is None for p in loss.parameters())  # no gradient was even computed for it
    assert all(p.requires_grad for p in loss.parameters())  # and it is trainable again afterwards
    assert all(torch.equal(before[k], v) for k, v in loss.state_dict().items())
    assert any(not torch.equal(weights[k], v) for k, v in model.state_dict().items())  # the model moved
