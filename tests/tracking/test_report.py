"""`surrogate-search report` reads the comparison back from MLflow and gives the logged numbers."""

from __future__ import annotations

import csv
import io
import json
import statistics

import pytest

from surrogate_search.cli import main


def report(capsys, *args: str) -> str:
    assert main(["report", *args]) == 0
    return capsys.readouterr().out


def test_report_reproduces_the_logged_numbers(smoke_comparison, mlflow_server, tracking_client, tmp_path, capsys) -> None:
    parent = smoke_comparison.parent.info.run_id
    data = json.loads(report(capsys, "--experiment", smoke_comparison.experiment, "--run-id", parent,
                             "--format", "json", "--tracking-uri", mlflow_server.uri))
    assert data["comparison_run_id"] == parent and data["metric"] == "f1" and data["higher_is_better"] is True
    rows = {r["method"]: r for r in data["rows"]}
    assert list(rows) == ["proxy", "deep_embedding"]

    logged_rows = {r["method"]: r for r in json.load(open(tracking_client.download_artifacts(
        parent, "comparison.json", str(tmp_path / "logged"))))["rows"]}
    per_method: dict[str, list[float]] = {}
    for child in smoke_comparison.children:
        per_method.setdefault(child.data.tags["method"], []).append(child.data.metrics["test/f1"])
    for method, values in per_method.items():
        assert rows[method]["seeds"] == 2
        assert rows[method]["mean"] == pytest.approx(statistics.fmean(values))
        assert rows[method]["std"] == pytest.approx(statistics.stdev(values))
        finals = [c.data.metrics["test_final/f1"] for c in smoke_comparison.children if c.data.tags["method"] == method]
        assert rows[method]["last_update_mean"] == pytest.approx(statistics.fmean(finals))
        assert rows[method]["last_update_mean"] == pytest.approx(logged_rows[method]["last_update_mean"])
    control = rows["proxy"]["mean"]
    assert rows["deep_embedding"]["vs_proxy_pct"] == pytest.approx(100 * (rows["deep_embedding"]["mean"] - control) / control)

    # the same numbers the comparison itself logged when it ran
    logged = json.load(open(tracking_client.download_artifacts(parent, "comparison.json", str(tmp_path))))
    for row in logged["rows"]:
        assert rows[row["method"]]["mean"] == pytest.approx(row["mean"])
        assert rows[row["method"]]["std"] == pytest.approx(row["std"])
    assert data["base_test"] == pytest.approx(logged["base_test"])


def test_report_formats(smoke_comparison, mlflow_server, capsys) -> None:
    common = ["--experiment", smoke_comparison.experiment, "--tracking-uri", mlflow_server.uri]
    text = report(capsys, *common)  # the latest finished comparison by default
    assert smoke_comparison.parent.info.run_id in text and "higher is better" in text
    means = {row["method"]: row for row in csv.DictReader(io.StringIO(report(capsys, *common, "--format", "csv")))}
    proxy = float(means["proxy"]["mean"])
    assert "proxy" in text and f"{proxy:.4f} ±" in text
    markdown = report(capsys, *common, "--format", "markdown")
    assert markdown.splitlines()[0] == ("| method | test f1 @0.5 (mean ± std) | vs proxy | test f1 @val thr (mean ± std) "
                                        "| vs proxy | val thr | seeds |")
    assert f"| deep_embedding | {float(means['deep_embedding']['mean']):.4f} ± " in markdown


def test_report_names_what_exists_on_a_typo(smoke_comparison, mlflow_server, capsys) -> None:
    assert main(["report", "--experiment", "imbalanced_tabular", "--tracking-uri", mlflow_server.uri]) == 2
    err = capsys.readouterr().err
    assert "no MLflow experiment 'imbalanced_tabular'" in err and "imbalanced_tabular_breast_cancer" in err


def test_child_runs_hold_the_threshold_chosen_on_val_and_the_report_shows_it(smoke_comparison, mlflow_server,
                                                                              capsys) -> None:
    at_threshold: dict[str, list[float]] = {}
    for child in smoke_comparison.children:
        metrics = child.data.metrics
        assert 0.0 < metrics["val_threshold"] < 1.0
        assert metrics["best_val/f1_at_val_threshold"] >= metrics["best_val/f1"]  # 0.5 was a candidate on val
        assert 0.0 <= metrics["test/f1_at_val_threshold"] <= 1.0
        at_threshold.setdefault(child.data.tags["method"], []).append(metrics["test/f1_at_val_threshold"])
    parent = smoke_comparison.parent.data.metrics
    assert 0.0 < parent["base_val_threshold"] < 1.0 and 0.0 <= parent["base_test_at_val_threshold"] <= 1.0

    common = ["--experiment", smoke_comparison.experiment, "--run-id", smoke_comparison.parent.info.run_id,
              "--tracking-uri", mlflow_server.uri]
    data = json.loads(report(capsys, *common, "--format", "json"))
    rows = {r["method"]: r for r in data["rows"]}
    for method, values in at_threshold.items():
        assert rows[method]["at_val_threshold_mean"] == pytest.approx(statistics.fmean(values))
        assert rows[method]["at_val_threshold_std"] == pytest.approx(statistics.stdev(values))
    control, learned = rows["proxy"]["at_val_threshold_mean"], rows["deep_embedding"]["at_val_threshold_mean"]
    if control:
        assert rows["deep_embedding"]["at_val_threshold_vs_proxy_pct"] == pytest.approx(100 * (learned - control) / control)
    assert data["base_test_at_val_threshold"] == pytest.approx(parent["base_test_at_val_threshold"])

    text = report(capsys, *common)
    assert "test f1 @val thr" in text and f"{learned:.4f} ± " in text
    assert f"proxy @val thr = {control:.4f} ± " in text and "baseline practitioners try first" in text
    base = next(line for line in text.splitlines() if line.startswith("base (no tuning)"))
    assert f"{parent['base_test_at_val_threshold']:.4f}" in base
    csv_rows = list(csv.DictReader(io.StringIO(report(capsys, *common, "--format", "csv"))))
    assert float(csv_rows[0]["at_val_threshold_mean"]) == pytest.approx(control)


def test_a_task_without_a_threshold_reports_no_threshold_column() -> None:
    from surrogate_search.tracking.report import Report, ReportRow

    rows = [ReportRow("proxy", 410.0, 5.0, 0.0, 3), ReportRow("deep_embedding", 400.0, 4.0, -2.4, 3)]
    edit_distance = Report("synthetic_text", "run", "compare-1", "edit_distance", False, 420.0, rows, 0)
    for fmt in ("text", "markdown", "csv"):
        assert "thr" not in edit_distance.render(fmt) and "threshold" not in edit_distance.render(fmt), fmt
    assert "threshold" not in edit_distance.render("json")


def test_comparison_child_runs_log_the_metric_they_are_judged_by(smoke_comparison) -> None:
    # What MLflow's compare views (parallel coordinates, box plots) can plot: the report's own numbers.
    for child in smoke_comparison.children:
        assert child.data.tags["test_metric"] == "test/f1" and "test/f1" in child.data.metrics


def test_report_draws_a_bar_per_method(smoke_comparison, mlflow_server, capsys) -> None:
    common = ["--experiment", smoke_comparison.experiment, "--tracking-uri", mlflow_server.uri]
    rows = {row["method"]: row for row in csv.DictReader(io.StringIO(report(capsys, *common, "--format", "csv")))}
    chart = report(capsys, *common).rstrip().split("\n\n")[-1].splitlines()
    assert chart[0].startswith("test f1 (higher is better): █ to the mean, ▓─┤ ± one std over seeds; axis ")
    bars = {}
    for line in chart[1:]:
        name = line[:22].strip()
        bars[name] = line[23:63].count("█") + line[23:63].count("▓")  # cells up to the mean
        if name in rows:
            assert line.endswith(f"{float(rows[name]['mean']):.4f} ± {float(rows[name]['std']):.4f}")
    assert list(bars) == ["base (no tuning)", "proxy", "deep_embedding"]
    means = {name: float(row["mean"]) for name, row in rows.items()}
    if means["proxy"] != means["deep_embedding"]:
        higher = max(means, key=means.get)
        assert bars[higher] >= bars[min(means, key=means.get)]


def test_report_writes_html_and_markdown_files_with_the_plots(smoke_comparison, mlflow_server, tmp_path, capsys) -> None:
    import base64
    import re

    out = report(capsys, "--experiment", smoke_comparison.experiment, "--tracking-uri", mlflow_server.uri,
                 "--html", str(tmp_path / "r.html"), "--markdown", str(tmp_path / "shared" / "r.md"))
    assert f"wrote {tmp_path / 'r.html'}" in out and f"wrote {tmp_path / 'shared' / 'r.md'}" in out
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    markdown = (tmp_path / "shared" / "r.md").read_text(encoding="utf-8")
    assert "<td>proxy</td>" in page and "<td>deep_embedding</td>" in page and "<th>test f1 @0.5 (mean ± std)</th>" in page
    assert markdown.startswith(f"# {smoke_comparison.experiment}: comparison smoke-compare\n")
    assert "| proxy | " in markdown and "█ to the mean" in markdown
    for text in (page, markdown):
        images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
        assert len(images) == 2 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
        assert "comparison_bars.png" in text and "posttune_curves.png" in text
        assert "http" not in text.replace(mlflow_server.uri, "")  # self-contained: nothing to fetch


def test_the_html_file_has_the_threshold_columns_of_a_classification_report(smoke_comparison, mlflow_server,
                                                                             tmp_path, capsys) -> None:
    report(capsys, "--experiment", smoke_comparison.experiment, "--tracking-uri", mlflow_server.uri,
           "--html", str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<th>test f1 @0.5 (mean ± std)</th>" in page and "<th>test f1 @val thr (mean ± std)</th>" in page
    assert page.count("<tr>") == 1 + 3  # header, base, proxy, deep_embedding
    assert all(row.count("<td>") == 8 for row in page.split("<tr>")[2:])


def test_chart_of_methods_that_all_tie_draws_equal_bars() -> None:
    from surrogate_search.tracking.report import Report, ReportRow

    tie = 0.2  # its mean over 3 seeds is 0.2 + 2.8e-17
    rows = [ReportRow(method, sum([tie] * 3) / 3, 0.0, 0.0, 3) for method in ("proxy", "anyloss")]  # mean of equal values
    chart = Report("e", "r", "c", "f1", True, tie, rows, 0).chart().splitlines()
    bars = [line[23:63] for line in chart[1:]]
    assert len(set(bars)) == 1 and bars[0].strip() != ""  # base and both methods: one full, equal bar
