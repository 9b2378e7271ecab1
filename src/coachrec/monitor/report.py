"""The monitor report: a Markdown (and HTML) page with each column's test and the plots of the
columns that drifted (reference vs current histograms) and of the requests per day.

    write_report(Path("runs/monitor"), reference, current)   # report.md, report.html, *.png
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from coachrec.monitor.attribution import Attribution
from coachrec.monitor.drift import GROUPS, DriftReport, compare
from coachrec.monitor.windows import Window, column_kind

DAY_NS = 86_400 * 10**9


def _fmt(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.3e}"


def _plot_column(folder: Path, name: str, reference: Window, current: Window) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = reference.frame[name].drop_nulls().to_numpy().astype(np.float64)
    cur = current.frame[name].drop_nulls().to_numpy().astype(np.float64)
    fig, ax = plt.subplots(figsize=(5, 3))
    if column_kind(name) == "cat" or len(np.unique(np.concatenate([ref, cur]))) <= 5:
        keys = np.unique(np.concatenate([ref, cur]))
        width = 0.4
        x = np.arange(len(keys))
        ax.bar(x - width / 2, [np.mean(ref == k) for k in keys], width, label=f"reference (n={len(ref)})")
        ax.bar(x + width / 2, [np.mean(cur == k) for k in keys], width, label=f"current (n={len(cur)})")
        ax.set_xticks(x, [f"{k:g}" for k in keys])
        ax.set_ylabel("share")
    else:
        bins = np.histogram_bin_edges(np.concatenate([ref, cur]), bins=30)
        ax.hist(ref, bins.tolist(), alpha=0.5, density=True, label=f"reference (n={len(ref)})")
        ax.hist(cur, bins.tolist(), alpha=0.5, density=True, label=f"current (n={len(cur)})")
        ax.set_ylabel("density")
    ax.set_title(name)
    ax.legend(fontsize=7)
    fig.tight_layout()
    file = f"{name.replace('/', '_').replace('@', 'at')}.png"
    fig.savefig(folder / file, dpi=90)
    plt.close(fig)
    return file


def _plot_days(folder: Path, reference: Window, current: Window) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = np.concatenate([reference.frame["start_ns"].to_numpy(), current.frame["start_ns"].to_numpy()])
    if len(start) == 0:
        return None
    day = (start - start.min()) // DAY_NS
    n_ref = reference.n
    fig, ax = plt.subplots(figsize=(6, 2.5))
    for label, d in (("reference", day[:n_ref]), ("current", day[n_ref:])):
        keys, counts = np.unique(d, return_counts=True)
        ax.bar(keys + 1, counts, label=label)
    ax.set_xlabel("day")
    ax.set_ylabel("requests")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "requests_per_day.png", dpi=90)
    plt.close(fig)
    return "requests_per_day.png"


def render_markdown(
    report: DriftReport,
    *,
    title: str,
    plots: dict[str, str],
    attribution: Attribution | None = None,
    days: str | None = None,
) -> str:
    lines = [f"# {title}", ""]
    lines.append(
        f"Reference {report.reference_n} requests, current {report.current_n}. Tests as Evidently picks them by type "
        f"and size; a column drifts when its p-value is below the threshold or its distance reaches it; the "
        f"dataset drifts when at least half its columns do."
    )
    lines.append("")
    verdict = "DRIFT" if report.dataset_drift() else "no drift"
    lines.append(f"**Dataset: {verdict}** ({report.share():.0%} of {len(report.columns)} columns drifted)")
    lines.append("")
    if attribution is not None:
        lines.append(
            f"**Who drifted: {attribution.verdict}** (system side: "
            f"{', '.join(attribution.system.drifted_columns) or 'nothing'}; judge side: "
            f"{'drifted' if attribution.judge.drifted else 'clean'} on the anchor set)"
        )
        lines.append("")
    for group in GROUPS:
        cols = report.group(group)
        if not cols:
            continue
        lines += [
            f"## {group}: {'drift' if report.dataset_drift(group) else 'no drift'} "
            f"({report.share(group):.0%} of {len(cols)} columns)",
            "",
        ]
        lines.append("| column | test | statistic | threshold | p-value | drifted | n ref | n cur |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for c in cols:
            lines.append(
                f"| {c.column} | {c.test} | {_fmt(c.statistic)} | {c.threshold:g} | {_fmt(c.p_value)} | "
                f"{'**yes**' if c.drifted else 'no'} | {c.n_reference} | {c.n_current} |"
            )
        lines.append("")
    if report.skipped:
        lines += ["## not tested", ""] + [f"- {k}: {v}" for k, v in report.skipped.items()] + [""]
    if days:
        lines += ["## requests per day", "", f"![requests per day]({days})", ""]
    if plots:
        lines += ["## drifted columns", ""] + [f"![{name}]({file})" for name, file in plots.items()] + [""]
    return "\n".join(lines)


def write_report(
    folder: Path,
    reference: Window,
    current: Window,
    *,
    title: str = "Drift report",
    report: DriftReport | None = None,
    attribution: Attribution | None = None,
    test: str | None = None,
) -> Path:
    """Write `report.md`, `report.html` and the plots into `folder`; returns the Markdown path."""
    folder.mkdir(parents=True, exist_ok=True)
    report = report if report is not None else compare(reference, current, test=test)
    plots = {c.column: _plot_column(folder, c.column, reference, current) for c in report.drifted()}
    days = _plot_days(folder, reference, current) if "start_ns" in reference.frame.columns else None
    text = render_markdown(report, title=title, plots=plots, attribution=attribution, days=days)
    md = folder / "report.md"
    md.write_text(text)
    (folder / "report.html").write_text(_html(text, title))
    return md


def _html(markdown: str, title: str) -> str:
    """A plain HTML page of the Markdown: headings, tables, images and paragraphs."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"]
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue
            if not in_table:
                out.append("<table border='1' cellspacing='0' cellpadding='3'>")
                in_table = True
            out.append("<tr>" + "".join(f"<td>{html.escape(c).replace('**', '')}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            out.append(f"<img alt='{html.escape(alt)}' src='{html.escape(src.rstrip(')'))}'>")
        elif line.strip():
            out.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    if in_table:
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
