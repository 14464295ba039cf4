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
