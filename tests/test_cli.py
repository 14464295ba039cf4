from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from surrogate_search.cli import EXAMPLES, build_parser, load_config_overrides, main


def test_help_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "surrogate_search.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for command in ("tasks", "metrics", "pretrain"):
        assert command in out.stdout


def test_tasks_and_metrics_list_the_registries(capsys) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "synthetic_text" in out and "imbalanced_tabular" in out and "edit_distance" in out
    assert main(["metrics"]) == 0
    out = capsys.readouterr().out
    assert "f1" in out and "iou" in out and "lower is better" in out


def test_unknown_task_is_a_clear_error(tmp_path, capsys) -> None:
    assert main(["pretrain", "--task", "synthetic_txt", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'synthetic_txt'" in err and "Did you mean 'synthetic_text'?" in err


@pytest.mark.parametrize("argv", [
    ["posttune", "--task", "imbalanced_tabuar"],
    ["compare", "--task", "imbalanced_tabular", "--seeds", "0"],
    ["posttune", "--task", "imbalanced_tabular", "--set", "surrogate.widht=32"],
], ids=["unknown task", "no seed", "unknown key"])
def test_a_refusal_before_any_tracking_loads_neither_mlflow_nor_ray(argv) -> None:
    # Importing MLflow took 2 of the 4 s such a refusal took; a user waits on none of it.
    probe = ("import sys; from surrogate_search.cli import main; code = main(sys.argv[1:]); "
             "print('exit', code, 'loaded', sorted(m for m in ('mlflow', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
    assert "exit 2 loaded []" in out.stdout.splitlines(), out.stdout + out.stderr
    assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr


def test_bad_option_syntax(tmp_path, capsys) -> None:
    assert main(["pretrain", "--task", "imbalanced_tabular", "--out", str(tmp_path), "--option", "dataset"]) == 2
    assert "expected KEY=VALUE, got 'dataset'" in capsys.readouterr().err
    assert not (tmp_path / "model.pt").exists()


def test_set_reads_numbers_as_a_user_writes_them() -> None:
    from surrogate_search.utils import parse_assignments

    parsed = parse_assignments(["lr=3e-5", "surrogate.lr=1.0e-3", "steps=40", "sampling.strategy=local", "amp=true",
                            "name=e5"])
    assert parsed == {"lr": 3e-5, "surrogate.lr": 1e-3, "steps": 40, "sampling.strategy": "local", "amp": True,
                      "name": "e5"}
    assert isinstance(parsed["lr"], float)


def test_version_names_the_package_and_what_it_runs_on(capsys) -> None:
    from surrogate_search import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"surrogate-search {__version__} (python ") and "torch " in out and "ray " in out


@pytest.mark.parametrize("command", [c for c in EXAMPLES if c])
def test_every_help_ends_with_examples_that_parse(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    tail = capsys.readouterr().out.rstrip().split("\nexamples:\n")[-1].splitlines()
    assert 2 <= len(tail) <= 3 and tail == [f"  {line}" for line in EXAMPLES[command]]
    for line in EXAMPLES[command]:
        args = build_parser().parse_args(shlex.split(line)[1:])  # a typo in an example fails here
        assert args.command == command


def test_methods_are_listed_from_the_registry(capsys) -> None:
    from surrogate_search.surrogates import list_methods

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for method in list_methods():
        assert re.search(rf"^{method} +(learned|fixed) +tasks=", out, re.M), method
    assert re.search(r"^anyloss +fixed +tasks=imbalanced_tabular$", out, re.M)


def test_device_and_amp_flags_are_the_config_keys() -> None:
    from surrogate_search.config import PostTuneConfig
    from surrogate_search.tasks import get_task

    args = build_parser().parse_args(["posttune", "--task", "imbalanced_tabular", "--device", "cuda", "--amp"])
    config = PostTuneConfig.for_task(get_task("imbalanced_tabular"), load_config_overrides(args))
    assert (config.device, config.amp) == ("cuda", True)
    plain = build_parser().parse_args(["compare", "--task", "imbalanced_tabular", "--set", "device=cpu"])
    assert load_config_overrides(plain) == {"device": "cpu"}  # no flag: --set and the defaults decide


def test_steps_0_is_refused_not_read_as_not_given(tmp_path, capsys) -> None:
    args = build_parser().parse_args(["posttune", "--task", "imbalanced_tabular", "--steps", "0"])
    assert load_config_overrides(args)["steps"] == 0
    assert main(["posttune", "--task", "imbalanced_tabular", "--steps", "0", "--checkpoint", str(tmp_path / "base")]) == 2
    assert capsys.readouterr().err == "error: post-tuning config: steps must be an integer >= 1, got 0\n"
    assert not (tmp_path / "base").exists()  # refused before pretraining


def test_a_loss_that_diverges_is_a_failed_run_with_one_line(tabular_checkpoint, monkeypatch, capsys) -> None:
    from surrogate_search.surrogates.proxy import ProxyContinuation

    monkeypatch.setattr(ProxyContinuation, "model_loss", lambda self, outputs, batch: (outputs.sum() * float("nan"), {}))
    code = main(["posttune", "--task", "imbalanced_tabular", "--option", "dataset=breast_cancer", "--method", "proxy",
                 "--checkpoint", str(tabular_checkpoint.path.parent), "--steps", "2", "--set", "lr=0.5", "--no-track"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err  # the input was fine: the run failed
    assert err.splitlines()[-1] == ("error: post-tuning with proxy (seed 0) diverged at step 1 of 2: the proxy loss is "
                                    "not finite ([nan]); the model was not updated with it. The last finite evaluation "
                                    "was at step 0: val/f1_best_threshold 0.9412. Change the config: lower lr (now 0.5).")


def test_compare_names_the_method_and_step_that_diverged(tabular_checkpoint, monkeypatch, capsys) -> None:
    from surrogate_search.surrogates.learned import EmbeddingSurrogate

    monkeypatch.setattr(EmbeddingSurrogate, "forward",
                        lambda self, predictions, targets: predictions.sum(-1) * float("nan"))
    code = main(["compare", "--task", "imbalanced_tabular", "--option", "dataset=breast_cancer", "--methods",
                 "deep_embedding", "--seeds", "2", "--checkpoint", str(tabular_checkpoint.path.parent), "--steps", "2",
                 "--set", "surrogate.warmup_steps=0", "--set", "surrogate.lr=0.01", "--no-track"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("error: post-tuning with deep_embedding (seed 0) diverged at step 1 of 2: the deep_embedding "
                           "surrogate's training loss is not finite")
    assert ("Change the config: lower lr (now 0.0001), or lower surrogate.lr (now 0.01), or raise surrogate.grad_penalty "
            "(now 0.1), or raise surrogate.proxy_weight (now 0)") in last


def test_sync_refuses_a_folder_without_tracked_trials(tmp_path, capsys) -> None:
    assert main(["sync", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds no tracked trial" in err and str(tmp_path) in err
