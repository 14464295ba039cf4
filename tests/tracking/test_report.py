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

    per_method: dict[str, list[float]] = {}
    for child in smoke_comparison.children:
        per_method.setdefault(child.data.tags["method"], []).append(child.data.metrics["test/f1"])
    for method, values in per_method.items():
        assert rows[method]["seeds"] == 2
        assert rows[method]["mean"] == pytest.approx(statistics.fmean(values))
        assert rows[method]["std"] == pytest.approx(statistics.stdev(values))
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
    assert markdown.splitlines()[0] == "| method | test f1 (mean ± std) | vs proxy | seeds |"
    assert f"| deep_embedding | {float(means['deep_embedding']['mean']):.4f} ± " in markdown


def test_report_names_what_exists_on_a_typo(smoke_comparison, mlflow_server, capsys) -> None:
    assert main(["report", "--experiment", "imbalanced_tabular", "--tracking-uri", mlflow_server.uri]) == 2
    err = capsys.readouterr().err
    assert "no MLflow experiment 'imbalanced_tabular'" in err and "imbalanced_tabular_breast_cancer" in err


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
    assert "<td>proxy</td>" in page and "<td>deep_embedding</td>" in page and "test f1 (mean ± std)" in page
    assert markdown.startswith(f"# {smoke_comparison.experiment}: comparison smoke-compare\n")
    assert "| proxy | " in markdown and "█ to the mean" in markdown
    for text in (page, markdown):
        images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
        assert len(images) == 2 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
        assert "comparison_bars.png" in text and "posttune_curves.png" in text
        assert "http" not in text.replace(mlflow_server.uri, "")  # self-contained: nothing to fetch
