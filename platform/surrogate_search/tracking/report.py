"""The comparison table, read back from MLflow: method, test metric mean ± std over seeds, relative
change against proxy continuation, number of seeds; on a classification task also the test metric
at each run's val-tuned decision threshold, with its own change against proxy (the proxy +
tuned-threshold baseline). Text for people; markdown, csv, json for machines."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from surrogate_search.compare import CONTROL, THRESHOLD_NOTE, change_text, mean_std
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
    at_val_threshold_mean: float | None = None
    """Classification tasks: the test metric at each run's decision threshold chosen on val."""
    at_val_threshold_std: float | None = None
    at_val_threshold_vs_proxy_pct: float = math.nan
    val_threshold_mean: float | None = None
    last_update_mean: float = math.nan
    """The mean test metric of the model after its last update, before the best-validation selection."""


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
    base_test_at_val_threshold: float | None = None
    """The base model's test metric at its decision threshold chosen on val (classification tasks)."""
    base_val_threshold: float | None = None

    @property
    def thresholded(self) -> bool:
        """Whether the rows hold the metric at a val-tuned threshold (a classification task)."""
        return any(r.at_val_threshold_mean is not None for r in self.rows)

    def threshold_note(self) -> str:
        control = next((r for r in self.rows if r.method == CONTROL and r.at_val_threshold_mean is not None), None)
        value = f"{control.at_val_threshold_mean:.4f} ± {control.at_val_threshold_std:.4f}" if control else "—"
        return THRESHOLD_NOTE.format(metric=self.metric, control=CONTROL, value=value)

    def render(self, fmt: str = "text") -> str:
        if fmt not in FORMATS:
            raise ValueError(f"report format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        text = getattr(self, f"_{fmt}")()
        return f"{text}\n\n{self.chart()}" if fmt == "text" and self.rows else text

    def _change(self, row: ReportRow) -> str:
        return change_text(row.method, row.vs_proxy_pct)

    def _at_threshold(self, row: ReportRow) -> tuple[str, str, str]:
        """(mean ± std, change against proxy, mean threshold) at the val-tuned threshold; blank without."""
        if row.at_val_threshold_mean is None:
            return "", "", ""
        return (f"{row.at_val_threshold_mean:.4f} ± {row.at_val_threshold_std:.4f}",
                change_text(row.method, row.at_val_threshold_vs_proxy_pct), f"{row.val_threshold_mean:.3f}")

    def _text(self) -> str:
        direction = "higher is better" if self.higher_is_better else "lower is better"
        tuned = self.thresholded
        first = f"test {self.metric}" + (" @0.5" if tuned else "")
        thresholds = f" {'test ' + self.metric + ' @val thr':>22s} {'vs proxy':>9s} {'val thr':>7s}" if tuned else ""
        lines = [f"{self.experiment}: test {self.metric} ({direction}), comparison {self.comparison} "
                 f"(run {self.comparison_run_id}); mean ± std over seeds",
                 f"{'method':22s} {first:>22s} {'vs proxy':>9s}{thresholds} {'seeds':>5s} {'kept base':>9s} "
                 f"{'last update':>11s}"]
        if self.base_splits:
            where = ", ".join(f"{name} {value:.4f}" for name, value in self.base_splits.items())
            lines.insert(1, f"base model {self.metric} on splits of val's size: {where}")
        if self.base_test is not None:
            base = ""
            if tuned and self.base_test_at_val_threshold is not None and self.base_val_threshold is not None:
                base = f" {'':9s} {self.base_test_at_val_threshold:>22.4f} {'':9s} {self.base_val_threshold:>7.3f}"
            lines.append(f"{'base (no tuning)':22s} {self.base_test:>22.4f}{base}")
        for r in self.rows:
            at = ""
            if tuned:
                value, change, threshold = self._at_threshold(r)
                at = f" {value:>22s} {change:>9s} {threshold:>7s}"
            lines.append(f"{r.method:22s} {r.mean:>13.4f} ± {r.std:<6.4f} {self._change(r):>9s}{at} {r.seeds:>5d} "
                         f"{r.kept_base:>9d} {r.last_update_mean:>11.4f}")
        if tuned:
            lines.append(self.threshold_note())
        if self.failed_runs:
            lines.append(f"({self.failed_runs} run(s) did not finish and are left out)")
        return "\n".join(lines)

    def _markdown(self) -> str:
        if not self.thresholded:
            lines = [f"| method | test {self.metric} (mean ± std) | vs proxy | seeds |", "|---|---|---|---|"]
            lines += [f"| {r.method} | {r.mean:.4f} ± {r.std:.4f} | {self._change(r)} | {r.seeds} |" for r in self.rows]
            return "\n".join(lines)
        lines = [f"| method | test {self.metric} @0.5 (mean ± std) | vs proxy | test {self.metric} @val thr (mean ± std) "
                 f"| vs proxy | val thr | seeds |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r.method} | {r.mean:.4f} ± {r.std:.4f} | {self._change(r)} | {' | '.join(self._at_threshold(r))} "
                  f"| {r.seeds} |" for r in self.rows]
        return "\n".join(lines + ["", self.threshold_note()])

    def _csv(self) -> str:
        out = io.StringIO()
        fields = ["method", "mean", "std", "vs_proxy_pct", "seeds", "kept_base", "last_update_mean"]
        if self.thresholded:
            fields += ["at_val_threshold_mean", "at_val_threshold_std", "at_val_threshold_vs_proxy_pct",
                       "val_threshold_mean"]
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in asdict(r).items()})
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
        span = max(highs) - min(lows)
        if span <= 1e-9 * max(1.0, abs(max(highs))):  # all equal (up to rounding in the means)
            span = abs(max(highs)) or 1.0
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
        if not self.thresholded:  # a task without a decision threshold: no threshold keys at all
            data = {k: v for k, v in data.items() if "threshold" not in k}
            data["rows"] = [{k: v for k, v in row.items() if "threshold" not in k} for row in data["rows"]]
        for row in data["rows"]:
            for key in ("vs_proxy_pct", "at_val_threshold_vs_proxy_pct"):
                if isinstance(row.get(key), float) and math.isnan(row[key]):
                    row[key] = None
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
    at_threshold: dict[str, list[float]] = {}
    thresholds: dict[str, list[float]] = {}
    kept: dict[str, int] = {}
    last: dict[str, list[float]] = {}
    failed = 0
    for child in children:
        key = child.data.tags.get("test_metric", f"test/{metric}")
        if child.info.status != "FINISHED" or key not in child.data.metrics:
            failed += 1
            continue
        method = child.data.tags.get("method", "?")
        values.setdefault(method, []).append(child.data.metrics[key])
        kept[method] = kept.get(method, 0) + int(child.data.metrics.get("best_step", -1) == 0)
        final = key.replace("test/", "test_final/", 1)
        if final in child.data.metrics:
            last.setdefault(method, []).append(child.data.metrics[final])
        if f"{key}_at_val_threshold" in child.data.metrics:  # a classification task's val-tuned threshold
            at_threshold.setdefault(method, []).append(child.data.metrics[f"{key}_at_val_threshold"])
            thresholds.setdefault(method, []).append(child.data.metrics["val_threshold"])
    order = sorted(values, key=lambda m: m != CONTROL)  # the control first, then in run order

    def change(ours: list[float], control: list[float] | None) -> float:
        reference = mean_std(control)[0] if control else math.nan
        if not reference or math.isnan(reference):
            return math.nan
        return 100.0 * (mean_std(ours)[0] - reference) / abs(reference)

    rows = []
    for method in order:
        mean, std = mean_std(values[method])
        row = ReportRow(method, mean, std, change(values[method], values.get(CONTROL)), len(values[method]),
                        kept.get(method, 0))
        if last.get(method):
            row.last_update_mean = statistics.fmean(last[method])
        if method in at_threshold:
            row.at_val_threshold_mean, row.at_val_threshold_std = mean_std(at_threshold[method])
            row.at_val_threshold_vs_proxy_pct = change(at_threshold[method], at_threshold.get(CONTROL))
            row.val_threshold_mean = statistics.fmean(thresholds[method])
        rows.append(row)
    base_splits = {name: parent.data.metrics[f"base_{name}"] for name in ("train", "tune", "val")
                   if f"base_{name}" in parent.data.metrics}
    return Report(experiment, parent.info.run_id, tags.get("search_id", ""), metric,
                  tags.get("higher_is_better", "True") == "True", parent.data.metrics.get("base_test"), rows, failed,
                  base_splits, parent.data.metrics.get("base_test_at_val_threshold"),
                  parent.data.metrics.get("base_val_threshold"))


def report_as_dict(report: Report) -> dict[str, Any]:
    return json.loads(report.render("json"))
