from __future__ import annotations

import statistics

import pytest

from surrogate_search.cli import main
from surrogate_search.compare import change_text, check_seeds, compare
from surrogate_search.registry import UnknownNameError
from surrogate_search.surrogate_training import weights_digest


def test_compare_gives_every_method_the_same_budget_and_reports_spread(tabular_checkpoint) -> None:
    config = {"steps": 6, "eval_every": 3, "surrogate": {"warmup_steps": 3, "batch_size": 8}}
    result = compare(tabular_checkpoint, config, methods=["anyloss", "deep_embedding"], seeds=[0, 1])
    rows = {r["method"]: r for r in result.rows()}
    assert list(rows) == ["proxy", "anyloss", "deep_embedding"]  # the control is always there, first
    assert all(r["seeds"] == 2 for r in rows.values())
    assert {(r.method, r.seed, r.steps) for r in result.runs} == {(m, s, 6) for m in rows for s in (0, 1)}
    # The same budget, from what each run did: per seed, every method made as many model updates, on
    # the same batches, from the same base weights; another seed draws other batches.
    for seed in (0, 1):
        done = {(r.model_updates, r.batches_digest, r.initial_weights) for r in result.runs if r.seed == seed}
        assert len(done) == 1, f"seed {seed}: the methods' budgets differ: {done}"
        updates, batches, weights = done.pop()
        assert updates == 6 and batches and weights == weights_digest(tabular_checkpoint.state_dict)
    assert len({r.batches_digest for r in result.runs}) == 2
    proxy, anyloss = rows["proxy"], rows["anyloss"]
    assert anyloss["vs_proxy_pct"] == pytest.approx(100 * (anyloss["mean"] - proxy["mean"]) / proxy["mean"])
    table = result.table()
    assert "test f1 (higher is better)" in table and "base (no tuning)" in table and "±" in table
    assert "6 model updates x batch 128" in table
    # Beside the selected model's figure, what each loss left after its last update.
    for method, row in rows.items():
        final = statistics.fmean(r.test_final["f1"] for r in result.runs if r.method == method)
        line = next(line for line in table.splitlines() if line.startswith(method + " "))
        assert row["last_update_mean"] == pytest.approx(final) and line.split()[-1] == f"{final:.4f}"
    assert "last update" in next(line for line in table.splitlines() if line.startswith("method"))


def test_classification_table_reports_f1_at_the_val_tuned_threshold_too(tabular_checkpoint) -> None:
    config = {"steps": 4, "eval_every": 2}
    result = compare(tabular_checkpoint, config, methods=["weighted_proxy"], seeds=[0, 1])
    rows = {r["method"]: r for r in result.rows()}
    for method, row in rows.items():
        tuned = [r.tuned for r in result.runs if r.method == method]
        assert row["at_val_threshold_mean"] == pytest.approx(statistics.fmean(t.test for t in tuned))
        assert row["val_threshold_mean"] == pytest.approx(statistics.fmean(t.threshold for t in tuned))
    proxy, weighted = rows["proxy"], rows["weighted_proxy"]
    assert weighted["at_val_threshold_vs_proxy_pct"] == pytest.approx(
        100 * (weighted["at_val_threshold_mean"] - proxy["at_val_threshold_mean"]) / proxy["at_val_threshold_mean"])

    lines = result.table().splitlines()
    header = next(line for line in lines if line.startswith("method"))
    assert "test f1 @0.5" in header and "test f1 @val thr" in header and header.count("vs proxy") == 2
    base = next(line for line in lines if line.startswith("base (no tuning)"))
    assert base.split()[3:] == [f"{result.base_test:.4f}", f"{result.base_tuned.test:.4f}",
                                f"{result.base_tuned.threshold:.3f}"]
    row = next(line for line in lines if line.startswith("weighted_proxy"))
    assert f"{weighted['at_val_threshold_mean']:.4f} ± {weighted['at_val_threshold_std']:.4f}" in row
    assert change_text("weighted_proxy", weighted["at_val_threshold_vs_proxy_pct"]) in row
    # The baseline practitioners try first is named under the table, with its value.
    assert any("baseline practitioners try first" in line and
               f"proxy @val thr = {proxy['at_val_threshold_mean']:.4f} ± {proxy['at_val_threshold_std']:.4f}" in line
               for line in lines[lines.index(row):])


def test_compare_skips_methods_that_do_not_apply(text_checkpoint, capsys) -> None:
    config = {"steps": 2, "eval_every": 2, "batch_size": 8,
              "surrogate": {"warmup_steps": 1, "pretrain_steps": 4, "batch_size": 4, "width": 8}}
    result = compare(text_checkpoint, config, seeds=[0])
    assert [s.method for s in result.summaries] == ["proxy", "expected_edit_distance", "deep_embedding", "relational"]
    assert result.rows()[0]["vs_proxy_pct"] == 0.0  # the control against itself
    # Edit distance has no decision threshold: no threshold column, no threshold keys.
    assert "@val thr" not in result.table() and "@0.5" not in result.table() and result.base_tuned is None
    assert not any("threshold" in key for row in result.rows() for key in row)


def test_compare_unknown_method_is_named(tabular_checkpoint) -> None:
    with pytest.raises(UnknownNameError, match="unknown method 'ls_ed'; known methods: anyloss, deep_embedding"):
        compare(tabular_checkpoint, {}, methods=["ls_ed"])


def test_cli_compare_prints_the_table(tabular_checkpoint, capsys) -> None:
    code = main(["-q", "compare", "--task", "imbalanced_tabular", "--option", "dataset=breast_cancer",
                 "--checkpoint", str(tabular_checkpoint.path.parent), "--seeds", "2", "--methods", "weighted_proxy",
                 "--steps", "4", "--set", "eval_every=2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "weighted_proxy" in out and "proxy" in out and "vs proxy" in out


def test_seeds_are_checked_before_anything_runs(tmp_path, capsys) -> None:
    assert check_seeds(range(3)) == [0, 1, 2]
    with pytest.raises(ValueError, match="seeds must name at least one seed, got none .*--seeds N .* must be >= 1"):
        check_seeds(range(0))
    with pytest.raises(ValueError, match="seeds must be distinct, got 1 twice"):
        check_seeds([0, 1, 1])
    with pytest.raises(ValueError, match="seeds must be integers, got '2'"):
        check_seeds([0, "2"])
    # On the command line, before a base model is pretrained (there is none here) or a run started.
    assert main(["compare", "--task", "imbalanced_tabular", "--seeds", "0", "--checkpoint", str(tmp_path / "base")]) == 2
    assert capsys.readouterr().err.startswith("error: compare: seeds must name at least one seed")
    assert not (tmp_path / "base").exists()


def test_the_change_against_proxy_is_signed_and_keeps_small_changes_visible() -> None:
    assert change_text("giou", 3.14159) == "+3.1%" and change_text("giou", -15.24) == "-15.2%"
    assert change_text("giou", 0.0459) == "+0.05%" and change_text("giou", -0.4) == "-0.40%"
    assert change_text("proxy", 2.0) == "—" and change_text("giou", float("nan")) == "—"
