"""A comparison as one file to share outside MLflow: the report's table, its bar chart and the
comparison run's plots (``plots/*.png``: the bars with every seed, the post-tuning curves), inlined
as base64 ``data:`` images so that the file is all there is to send.

    report = comparison_report("synthetic_text")
    write_report_file(report, "report.html", "html")       # or "markdown"

Markdown viewers differ on ``data:`` images (editors and pandoc show them; some web hosts strip
them): HTML is the safe choice for a file that must show its plots everywhere.
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from pathlib import Path

from surrogate_search.tracking.report import Report
from surrogate_search.tracking.store import resolve_tracking_uri

FILE_FORMATS = ("html", "markdown")


def comparison_plots(report: Report, tracking_uri: str | None = None) -> dict[str, bytes]:
    """The PNG plots the comparison run holds (``plots/*.png``), by file name; empty if none."""
    import mlflow.artifacts

    from surrogate_search.tracking.store import client

    uri = resolve_tracking_uri(tracking_uri)
    listed = [a.path for a in client(uri).list_artifacts(report.comparison_run_id, "plots")
              if not a.is_dir and a.path.endswith(".png")]
    plots: dict[str, bytes] = {}
    quiet = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # a bar per small file is noise on the terminal
    saved = {k: os.environ.get(k) for k in quiet}
    os.environ.update(quiet)
    try:
        with tempfile.TemporaryDirectory() as folder:
            for path in sorted(listed):
                local = mlflow.artifacts.download_artifacts(run_id=report.comparison_run_id, artifact_path=path,
                                                            dst_path=folder, tracking_uri=uri)
                plots[Path(path).name] = Path(local).read_bytes()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return plots


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _title(report: Report) -> str:
    return f"{report.experiment}: comparison {report.comparison or report.comparison_run_id}"


def _about(report: Report) -> str:
    direction = "higher is better" if report.higher_is_better else "lower is better"
    base = f"; base model (no tuning) {report.base_test:.4f}" if report.base_test is not None else ""
    failed = f"; {report.failed_runs} run(s) did not finish and are left out" if report.failed_runs else ""
    return (f"test {report.metric} ({direction}), mean ± std over seeds; MLflow run {report.comparison_run_id}"
            f"{base}{failed}")


def render_markdown(report: Report, plots: dict[str, bytes]) -> str:
    parts = [f"# {_title(report)}", "", _about(report), "", report.render("markdown"), "",
             "```", report.chart(), "```"]
    for name, png in plots.items():
        parts += ["", f"![{name}]({_data_uri(png)})"]
    return "\n".join(parts) + "\n"


def render_html(report: Report, plots: dict[str, bytes]) -> str:
    def cells(tag: str, values: list[str]) -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(v)}</{tag}>" for v in values) + "</tr>"

    # Classification: the metric at 0.5 and at the threshold each run chose on val, as the text table has it.
    tuned = report.thresholded
    at = f"test {report.metric}" + (" @0.5" if tuned else "")
    extra = [f"test {report.metric} @val thr (mean ± std)", "vs proxy", "val thr"] if tuned else []
    header = cells("th", ["method", f"{at} (mean ± std)", "vs proxy", *extra, "seeds", "kept base"])
    rows = [cells("td", [r.method, f"{r.mean:.4f} ± {r.std:.4f}", report._change(r),
                         *(report._at_threshold(r) if tuned else ()), str(r.seeds), str(r.kept_base)])
            for r in report.rows]
    if report.base_test is not None:
        base_tuned = [f"{report.base_test_at_val_threshold:.4f}", "", f"{report.base_val_threshold:.3f}"] \
            if tuned and report.base_test_at_val_threshold is not None and report.base_val_threshold is not None \
            else [""] * len(extra)
        rows.insert(0, cells("td", ["base (no tuning)", f"{report.base_test:.4f}", "", *base_tuned, "", ""]))
    note = f"<p>{html.escape(report.threshold_note())}</p>" if tuned else ""
    images = "\n".join(f'<figure><img alt="{html.escape(name)}" src="{_data_uri(png)}">'
                       f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, png in plots.items())
    title = html.escape(_title(report))
    # Block characters drift out of line in many browsers' fonts: the text chart only stands in
    # for the bar plot when the comparison run has none.
    chart = "" if "comparison_bars.png" in plots else f"<pre>{html.escape(report.chart())}</pre>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #bbb; padding: 0.3em 0.8em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
pre {{ background: #f6f6f6; padding: 0.8em; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{html.escape(_about(report))}</p>
<table>
{header}
{chr(10).join(rows)}
</table>
{note}
{chart}
{images}
</body>
</html>
"""


def write_report_file(report: Report, path: str | Path, fmt: str, *, tracking_uri: str | None = None) -> Path:
    """Write ``report`` with the comparison run's plots to ``path`` as ``html`` or ``markdown``."""
    if fmt not in FILE_FORMATS:
        raise ValueError(f"report file format must be one of {', '.join(FILE_FORMATS)}, got {fmt!r}")
    plots = comparison_plots(report, tracking_uri)
    text = render_html(report, plots) if fmt == "html" else render_markdown(report, plots)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
