from __future__ import annotations

import pickle
import shlex

import pytest
import torch

from surrogate_search.checkpoint import CheckpointError, labels_fingerprint, load_checkpoint, save_checkpoint
from surrogate_search.tasks import TASKS, get_task


@pytest.fixture()
def saved(tmp_path):
    task = get_task("imbalanced_tabular", dataset="breast_cancer", seed=4)
    model = task.build_model()
    path = save_checkpoint(tmp_path / "base", task, model, task.default_model_options(), metrics={"test": {"f1": 0.5}})
    return task, model, path


def test_round_trip_with_weights_only(saved) -> None:
    task, model, path = saved
    raw = torch.load(path, weights_only=True)  # the safe loader accepts it
    assert raw["task"] == "imbalanced_tabular"
    ckpt = load_checkpoint(path.parent, expected_task="imbalanced_tabular")
    assert ckpt.task_seed == 4 and ckpt.task_options == {"dataset": "breast_cancer"}
    assert ckpt.metrics["test"]["f1"] == 0.5
    rebuilt = ckpt.build_model()
    for (k, v), (k2, v2) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_missing_checkpoint_says_how_to_make_one(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*nowhere/model.pt .*surrogate-search pretrain"):
        load_checkpoint(tmp_path / "nowhere")


def assert_refused_safely(message: str, file) -> None:
    """What a user reads for a file that is not ours: what it is, the path, how to get a good one,
    and never torch's advice to load it with weights_only=False."""
    assert f"{file} is not a valid surrogate-search checkpoint" in message or f"{file} is not a safe checkpoint" in message
    assert "surrogate-search pretrain --task" in message
    assert "weights_only" not in message


@pytest.mark.parametrize("content", ["garbage", "empty", "truncated"])
def test_corrupt_checkpoint_is_refused_with_what_to_do(saved, tmp_path, content) -> None:
    _, _, good = saved
    data = good.read_bytes()
    bad = tmp_path / "model.pt"
    bad.write_bytes({"garbage": b"not a zip file at all", "empty": b"", "truncated": data[:len(data) // 2]}[content])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(bad, expected_task="imbalanced_tabular")
    assert_refused_safely(str(error.value), bad)
    assert "empty, truncated, damaged or not a torch checkpoint" in str(error.value)
    assert "pretrain --task imbalanced_tabular" in str(error.value)


class Malicious:
    """Unpickling this creates ``marker``: what a planted checkpoint would do with a shell command."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("layout", ["torch.save", "bare pickle", "default pickle"])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, layout) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "base" / "model.pt"
    path.parent.mkdir()
    payload = {"format": "surrogate-search/base-model/v1", "payload": Malicious(marker)}
    if layout == "torch.save":
        torch.save(payload, path)
    elif layout == "default pickle":
        # Protocol 4+: torch's unpickler stops at the frame, before the import, so the import is
        # found by reading the opcodes (pickletools, which runs nothing).
        path.write_bytes(pickle.dumps(payload))
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))  # torch's unpickler reads protocol 2 up to the import
        # The file is truly malicious: an ordinary unpickler runs it.
        control = tmp_path / "control"
        pickle.loads(pickle.dumps(Malicious(control))).close()
        assert control.exists()
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path.parent)
    assert not marker.exists()
    assert_refused_safely(str(error.value), path)
    assert f"{path} is not a safe checkpoint: it asks to import io.open, which a checkpoint never needs" in str(error.value)
    assert error.value.__cause__ is None  # no chained torch error repeating its advice in a traceback


def test_cli_refuses_a_malicious_checkpoint_with_one_line(tmp_path, capsys) -> None:
    from surrogate_search.cli import main

    marker = tmp_path / "code_ran"
    torch.save({"format": "surrogate-search/base-model/v1", "payload": Malicious(marker)}, tmp_path / "model.pt")
    code = main(["posttune", "--task", "imbalanced_tabular", "--option", "dataset=breast_cancer",
                 "--checkpoint", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert err.startswith("error: ") and "Traceback" not in err
    assert_refused_safely(err, tmp_path / "model.pt")


def test_other_format_is_named(tmp_path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="has format None, expected 'surrogate-search/base-model/v1'"):
        load_checkpoint(path)


def test_checkpoint_from_another_task_is_refused(saved) -> None:
    _, _, path = saved
    with pytest.raises(CheckpointError, match="trained for task 'imbalanced_tabular', not 'synthetic_text'"):
        load_checkpoint(path, expected_task="synthetic_text")


def test_checkpoint_of_an_older_task_version_is_refused_with_the_command_that_fixes_it(saved, monkeypatch, capsys) -> None:
    from surrogate_search.cli import main

    _, _, path = saved
    current = TASKS.get("imbalanced_tabular").version
    assert load_checkpoint(path).task_version == current
    # The task's labelling changes, and its author bumps the version as Task.version asks.
    monkeypatch.setattr(TASKS.get("imbalanced_tabular"), "version", current + 1)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, expected_task="imbalanced_tabular")
    message = str(error.value)
    assert f"checkpoint {path} was pretrained for version {current} of task 'imbalanced_tabular'" in message
    assert f"this code defines version {current + 1}" in message
    command = message.split("`")[-2]
    assert command == (f"surrogate-search pretrain --task imbalanced_tabular --option dataset=breast_cancer "
                       f"--data-seed 4 --out {path.parent}")
    # The command, run as given (with a short budget), gives a checkpoint that loads.
    assert main([*shlex.split(command)[1:], "--max-epochs", "2"]) == 0
    capsys.readouterr()
    reloaded = load_checkpoint(path, expected_task="imbalanced_tabular")
    assert reloaded.task_version == current + 1 and reloaded.task_seed == 4


def test_checkpoint_without_a_version_loads_as_version_1(saved, monkeypatch) -> None:
    _, _, path = saved
    payload = torch.load(path, weights_only=True)
    del payload["task_version"], payload["data_fingerprint"]  # as written before these fields existed
    torch.save(payload, path)
    monkeypatch.setattr(TASKS.get("imbalanced_tabular"), "version", 1)
    old = load_checkpoint(path)
    assert old.task_version == 1 and old.data_fingerprint is None
    old.check_labels([0, 1, 1])  # nothing recorded, nothing to compare
    monkeypatch.setattr(TASKS.get("imbalanced_tabular"), "version", 2)
    with pytest.raises(CheckpointError, match="pretrained for version 1 of task 'imbalanced_tabular'"):
        load_checkpoint(path)


def test_changed_validation_labels_are_refused(tmp_path) -> None:
    task = get_task("imbalanced_tabular", dataset="breast_cancer")
    labels = task.load_splits().val.labels
    path = save_checkpoint(tmp_path / "base", task, task.build_model(), task.default_model_options(),
                           data_fingerprint=labels_fingerprint(labels))
    checkpoint = load_checkpoint(path)
    checkpoint.check_labels(list(labels))  # same data: accepted
    relabelled = [1 - label for label in labels]
    with pytest.raises(CheckpointError) as error:
        checkpoint.check_labels(relabelled)
    message = str(error.value)
    assert f"checkpoint {path} was pretrained on other data than task 'imbalanced_tabular'" in message
    assert f"fingerprint {labels_fingerprint(labels)}, they have {labels_fingerprint(relabelled)}" in message
    assert f"surrogate-search pretrain --task imbalanced_tabular --option dataset=breast_cancer --out {path.parent}" in message
    with pytest.raises(CheckpointError):
        checkpoint.check_labels(labels[:-1])  # a different split size


def test_a_base_pretrained_with_other_task_options_is_replaced_only_in_a_folder_the_caller_owns(tmp_path, caplog, monkeypatch) -> None:
    import sys

    from surrogate_search.pretrain import ensure_base_checkpoint

    pretrain_module = sys.modules["surrogate_search.pretrain"]  # the package exports a function of that name

    old = get_task("imbalanced_tabular", dataset="breast_cancer")
    save_checkpoint(tmp_path / "base", old, old.build_model(), old.default_model_options())
    wanted = get_task("imbalanced_tabular", dataset="digits")
    pretrained = []
    monkeypatch.setattr(pretrain_module, "pretrain", lambda task, path, **kw: pretrained.append(task.options) or
                        save_checkpoint(path, task, task.build_model(), task.default_model_options()))

    kept = ensure_base_checkpoint(wanted, tmp_path / "base")  # a user's folder: used as it is, with a warning
    assert kept.task_options == {"dataset": "breast_cancer"} and pretrained == []
    assert "other task options than asked for (dataset: 'breast_cancer' -> 'digits')" in caplog.text

    replaced = ensure_base_checkpoint(wanted, tmp_path / "base", replace_stale=True)  # `make run`'s own folder
    assert pretrained == [{"dataset": "digits"}] and replaced.task_options == {"dataset": "digits"}


def test_a_missing_checkpoint_file_is_refused_not_pretrained_into(tmp_path, monkeypatch) -> None:
    import sys

    from surrogate_search.pretrain import ensure_base_checkpoint

    pretrained = []
    monkeypatch.setattr(sys.modules["surrogate_search.pretrain"], "pretrain", lambda *a, **kw: pretrained.append(a))
    with pytest.raises(CheckpointError, match=f"no checkpoint at {tmp_path / 'base.pt'} .*--task imbalanced_tabular"):
        ensure_base_checkpoint(get_task("imbalanced_tabular"), tmp_path / "base.pt")
    assert pretrained == [] and not (tmp_path / "base.pt").exists()


def test_each_model_family_gets_its_own_default_base_folder() -> None:
    from surrogate_search.pretrain import default_checkpoint_dir

    assert str(default_checkpoint_dir(get_task("synthetic_text"))) == "runs/base_synthetic_text_crnn"
    assert str(default_checkpoint_dir(get_task("synthetic_text", model="attention"))) == "runs/base_synthetic_text_attention"
    assert str(default_checkpoint_dir(get_task("imbalanced_tabular", dataset="digits"))) == "runs/base_imbalanced_tabular_digits"


def test_a_base_whose_data_changed_since_pretraining_is_refused_with_what_changed(tmp_path, monkeypatch, capsys) -> None:
    from surrogate_search.checkpoint import StaleCheckpointError
    from surrogate_search.cli import main
    from surrogate_search.pretrain import ensure_base_checkpoint
    from surrogate_search.tasks.imbalanced_tabular import ImbalancedTabular

    task = get_task("imbalanced_tabular", dataset="breast_cancer")
    path = save_checkpoint(tmp_path / "base", task, task.build_model(), task.default_model_options(),
                           splits=task.splits())
    recorded = torch.load(path, weights_only=True)["fingerprint"]
    assert recorded["split_sizes"] == {"train": 273, "val": 114, "test": 114, "tune": 68}
    assert recorded["classes"] == [0, 1] and recorded["data_seed"] == 0 and recorded["options"] == {"dataset": "breast_cancer"}
    assert ensure_base_checkpoint(task, tmp_path / "base").fingerprint == recorded  # the same data: accepted

    # The dataset changed under the same task name, options and seed: 30 samples fewer, the labels flipped.
    original = ImbalancedTabular.raw_data
    monkeypatch.setattr(ImbalancedTabular, "raw_data", lambda self: (lambda x, y: (x[30:], 1 - y[30:]))(*original(self)))
    with pytest.raises(StaleCheckpointError) as error:
        ensure_base_checkpoint(get_task("imbalanced_tabular", dataset="breast_cancer"), tmp_path / "base")
    message = str(error.value)
    assert f"checkpoint {path} was pretrained on other data than task 'imbalanced_tabular'" in message
    assert "split_sizes.train: 273 -> 258" in message and "labels.val: " in message
    assert f"`surrogate-search pretrain --task imbalanced_tabular --option dataset=breast_cancer --out {path.parent}`" in message
    # From the command line: refused before any work, exit 2, one line.
    code = main(["posttune", "--task", "imbalanced_tabular", "--option", "dataset=breast_cancer", "--checkpoint",
                 str(tmp_path / "base"), "--no-track"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.splitlines()[-1].startswith("error: checkpoint ")
    assert "split_sizes.train: 273 -> 258" in err.splitlines()[-1]


def test_a_base_saved_before_fingerprints_is_used_with_a_warning(tmp_path, caplog) -> None:
    import logging

    from surrogate_search.pretrain import ensure_base_checkpoint

    task = get_task("imbalanced_tabular", dataset="breast_cancer")
    path = save_checkpoint(tmp_path / "base", task, task.build_model(), task.default_model_options())
    payload = torch.load(path, weights_only=True)
    assert payload["fingerprint"] is None
    del payload["fingerprint"]  # as written before the field existed
    torch.save(payload, path)
    with caplog.at_level(logging.WARNING, logger="surrogate_search.checkpoint"):
        checkpoint = ensure_base_checkpoint(task, tmp_path / "base")
    assert checkpoint.fingerprint is None
    assert "saved without a fingerprint of its task's data" in caplog.text
    assert "surrogate-search pretrain --task imbalanced_tabular --option dataset=breast_cancer" in caplog.text
