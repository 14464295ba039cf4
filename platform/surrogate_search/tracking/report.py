"""The comparison table, read back from MLflow: method, test metric mean ± std over seeds, relative
change against proxy continuation, number of seeds. Text for people; markdown, csv, json for
machines."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from surrogate_search.tracking.runs import KIND_TAG, PARENT_TAG
from surrogate_search.tracking.store import client, resolve_tracking_uri

FORMATS = ("text", "markdown", "csv", "json")


@dataclass
class ReportRow:
    method: str
    mean: float
    std: float
    vs_proxy_pct: float
    seeds: int
    kept_base: int = 0
    """Seeds whose best validation model was the base itself."""


@dataclass
class Report:
    experiment: str
    comparison_run_id: str
    comparison: str
    metric: str
    higher_is_better: bool
    base_test: float | None
    rows: list[ReportRow]
    failed_runs: int
    base_splits: dict[str, float] = field(default_factory=dict)
    """The base model's metric on train, tune and val (as many samples of each as val has)."""

    def render(self, fmt: str = "text") -> str:
        if fmt not in FORMATS:
            raise ValueError(f"report format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        text = getattr(self, f"_{fmt}")()
        return f"{text}\n\n{self.chart()}" if fmt == "text" and self.rows else text

    def _change(self, row: ReportRow) -> str:
        return "—" if row.method == "proxy" or math.isnan(row.vs_proxy_pct) else f"{row.vs_proxy_pct:+.1f}%"

    def _text(self) -> str:
        direction = "higher is better" if self.higher_is_better else "lower is better"
        lines = [f"{self.experiment}: test {self.metric} ({direction}), comparison {self.comparison} "
                 f"(run {self.comparison_run_id}); mean ± std over seeds",
                 f"{'method':22s} {'test ' + self.metric:>22s} {'vs proxy':>9s} {'seeds':>5s} {'kept base':>9s}"]
        if self.base_splits:
            where = ", ".join(f"{name} {value:.4f}" for name, value in self.base_splits.items())
            lines.insert(1, f"base model {self.metric} on splits of val's size: {where}")
        if self.base_test is not None:
            lines.append(f"{'base (no tuning)':22s} {self.base_test:>22.4f}")
        lines += [f"{r.method:22s} {r.mean:>13.4f} ± {r.std:<6.4f} {self._change(r):>9s} {r.seeds:>5d} {r.kept_base:>9d}"
                  for r in self.rows]
        if self.failed_runs:
            lines.append(f"({self.failed_runs} run(s) did not finish and are left out)")
        return "\n".join(lines)

    def _markdown(self) -> str:
        lines = [f"| method | test {self.metric} (mean ± std) | vs proxy | seeds |", "|---|---|---|---|"]
        lines += [f"| {r.method} | {r.mean:.4f} ± {r.std:.4f} | {self._change(r)} | {r.seeds} |" for r in self.rows]
        return "\n".join(lines)

    def _csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["method", "mean", "std", "vs_proxy_pct", "seeds", "kept_base"], lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({**asdict(r), "mean": repr(r.mean), "std": repr(r.std), "vs_proxy_pct": repr(r.vs_proxy_pct)})
        return out.getvalue().rstrip("\n")

    def chart(self, width: int = 40) -> str:
        """A bar per method in the terminal: solid to the mean, ``▓─┤`` spanning one standard
        deviation either side of it; the axis starts near the smallest value, not at 0, since
        the differences between methods are small."""
        rows = [(r.method, r.mean, r.std) for r in self.rows]
        if self.base_test is not None:
            rows.insert(0, ("base (no tuning)", self.base_test, 0.0))
        lows = [m - s for _, m, s in rows]
        highs = [m + s for _, m, s in rows]
        span = (max(highs) - min(lows)) or abs(max(highs)) or 1.0
        lo, hi = min(lows) - 0.1 * span, max(highs) + 0.05 * span

        def cell(value: float) -> int:
            return max(0, min(width, round((value - lo) / (hi - lo) * width)))

        direction = "higher is better" if self.higher_is_better else "lower is better"
        lines = [f"test {self.metric} ({direction}): █ to the mean, ▓─┤ ± one std over seeds; "
                 f"axis {lo:.4f} .. {hi:.4f}"]
        for name, mean, std in rows:
            a, m, b = cell(mean - std), cell(mean), cell(mean + std)
            bar = "█" * a + "▓" * (m - a) + "─" * max(b - m - 1, 0) + ("┤" if b > m else "")
            value = f"{mean:.4f}" if name == "base (no tuning)" else f"{mean:.4f} ± {std:.4f}"
            lines.append(f"{name:22s} {bar:<{width}s} {value}")
        return "\n".join(lines)

    def _json(self) -> str:
        data = asdict(self)
        for row in data["rows"]:
            if math.isnan(row["vs_proxy_pct"]):
                row["vs_proxy_pct"] = None
        return json.dumps(data, indent=2)


def comparison_report(experiment: str, *, run_id: str | None = None, tracking_uri: str | None = None) -> Report:
    """The table of comparison ``run_id`` (default: the latest finished comparison in ``experiment``)."""
    uri = resolve_tracking_uri(tracking_uri)
    found = client(uri).get_experiment_by_name(experiment)
    if found is None:
        known = sorted(e.name for e in client(uri).search_experiments())
        raise ValueError(f"no MLflow experiment {experiment!r} in {uri}; experiments there: {', '.join(known) or 'none'}")
    mlflow_client = client(uri)
    if run_id is None:
        parents = mlflow_client.search_runs([found.experiment_id], filter_string=f"tags.{KIND_TAG} = 'comparison' and attributes.status = 'FINISHED'",
                                            order_by=["attributes.start_time DESC"], max_results=1)
        if not parents:
            raise ValueError(f"experiment {experiment!r} holds no finished comparison run; run `surrogate-search compare` first")
        parent = parents[0]
    else:
        parent = mlflow_client.get_run(run_id)
        if parent.info.experiment_id != found.experiment_id:
            raise ValueError(f"run {run_id} belongs to another experiment than {experiment!r}")
    children = mlflow_client.search_runs([found.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
                                         order_by=["attributes.start_time ASC"])
    tags = parent.data.tags
    metric = tags.get("metric", "")
    values: dict[str, list[float]] = {}
    kept: dict[str, int] = {}
    failed = 0
    for child in children:
        key = child.data.tags.get("test_metric", f"test/{metric}")
        if child.info.status != "FINISHED" or key not in child.data.metrics:
            failed += 1
            continue
        method = child.data.tags.get("method", "?")
        values.setdefault(method, []).append(child.data.metrics[key])
        kept[method] = kept.get(method, 0) + int(child.data.metrics.get("best_step", -1) == 0)
    order = sorted(values, key=lambda m: m != "proxy")  # the control first, then in run order
    control = statistics.fmean(values["proxy"]) if "proxy" in values else math.nan
    rows = []
    for method in order:
        mean = statistics.fmean(values[method])
        std = statistics.stdev(values[method]) if len(values[method]) > 1 else 0.0
        change = 100.0 * (mean - control) / abs(control) if control and not math.isnan(control) else math.nan
        rows.append(ReportRow(method, mean, std, change, len(values[method]), kept.get(method, 0)))
    base_splits = {name: parent.data.metrics[f"base_{name}"] for name in ("train", "tune", "val")
                   if f"base_{name}" in parent.data.metrics}
    return Report(experiment, parent.info.run_id, tags.get("search_id", ""), metric,
                  tags.get("higher_is_better", "True") == "True", parent.data.metrics.get("base_test"), rows, failed,
                  base_splits)


def report_as_dict(report: Report) -> dict[str, Any]:
    return json.loads(report.render("json"))
