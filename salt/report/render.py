"""Tables as data, written four ways: CSV (raw numbers), Markdown, LaTeX (booktabs) and HTML.

A table is built once as rows of values (numbers, labels, mean ± std statistics); each writer
decides how to show them. The CSV keeps full precision and splits a statistic into `key` and
`key_std` columns; the display formats round, scale (accuracy in %) and print "—" for a value
that does not exist, so a missing number is never confused with zero.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MISSING = "—"


@dataclass
class Stat:
    """Mean ± std over seeds ± `error`, the test set's statistical uncertainty (salt.metrics'
    "stat", averaged over the seeds), shown as "mean ± std ± error" ("mean ± — ± error" for one
    seed). `bound` is a lower bound shown as "> bound" when the mean is infinite (a rejection
    where no background jet passed in some seed)."""

    mean: float | None
    std: float | None = None
    n: int = 1
    bound: float | None = None
    error: float | None = None
    digits: int | None = None  # per-cell overrides of the column's formatting
    scale: float | None = None


class Label(str):
    """Display text with its own LaTeX spelling (kT -> $k_\\mathrm{T}$) and CSV value (the key, 'kt')."""

    latex: str
    value: str

    def __new__(cls, text: str, latex: str | None = None, value: str | None = None) -> Label:
        obj = super().__new__(cls, text)
        obj.latex = latex if latex is not None else latex_escape(text)
        obj.value = value if value is not None else text
        return obj


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    kind: str = "text"  # text | number | stat
    digits: int = 2
    scale: float = 1.0
    latex: str | None = None
    display: bool = True  # False: CSV only (raw detail such as percentiles)


@dataclass
class Table:
    """One tabular: a title, columns, rows (dicts keyed by column key) and notes.

    `context` holds values constant over the table (dataset, device, …); they become leading
    CSV columns and are named in the title instead of repeated on every displayed row."""

    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    label: str = ""


# ----------------------------------------------------------------------------- cell text

def fmt_number(value: float, digits: int) -> str:
    """Thousands separators for whole numbers (3,264), fixed decimals otherwise."""
    if digits <= 0:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def fmt_stat(stat: Stat, digits: int, scale: float) -> str:
    digits = stat.digits if stat.digits is not None else digits
    scale = stat.scale if stat.scale is not None else scale
    if stat.mean is None or stat.n == 0:
        return MISSING
    if math.isinf(stat.mean):
        return f"> {fmt_number(stat.bound * scale, digits)}" if stat.bound is not None else "∞"
    text = fmt_number(stat.mean * scale, digits)
    seeds = fmt_number(stat.std * scale, digits) if stat.n > 1 and stat.std is not None else None
    if stat.error is not None:
        error = "∞" if math.isinf(stat.error) else fmt_number(stat.error * scale, digits)
        return f"{text} ± {seeds or MISSING} ± {error}"
    return f"{text} ± {seeds}" if seeds else text


def cell_text(value: Any, col: Column) -> str:
    if value is None:
        return MISSING
    if isinstance(value, Stat):
        return fmt_stat(value, col.digits, col.scale)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return MISSING
        if isinstance(value, float) and math.isinf(value):
            return "∞"
        return fmt_number(value * col.scale, col.digits if col.kind != "text" else 0)
    return str(value)


def csv_values(value: Any) -> tuple[Any, Any, Any]:
    """(value, std, stat error) as CSV writes them: raw numbers, '' for missing, 'inf' for unbounded."""
    if value is None:
        return "", "", ""
    if isinstance(value, Label):
        return value.value, "", ""
    if isinstance(value, Stat):
        if value.mean is None or value.n == 0:
            return "", "", ""
        std = "" if value.std is None or value.n < 2 else repr(float(value.std))
        error = "" if value.error is None else repr(float(value.error))
        return _csv_number(value.mean), std, error
    if isinstance(value, float):
        return _csv_number(value), "", ""
    return value, "", ""


def _csv_number(v: float) -> str:
    v = float(v)
    if math.isnan(v):
        return ""
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


# ----------------------------------------------------------------------------- writers

def to_csv(tables: Sequence[Table]) -> str:
    """One CSV for all sections: context columns first, stat columns split into key, key_std (over
    seeds) and key_stat (the test set's statistical error)."""
    header: list[str] = []

    def add(name: str) -> None:
        if name not in header:
            header.append(name)

    for t in tables:
        for k in t.context:
            add(k)
    for t in tables:
        for c in t.columns:
            add(c.key)
            if c.kind == "stat":
                add(f"{c.key}_std")
                add(f"{c.key}_stat")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for t in tables:
        for row in t.rows:
            record: dict[str, Any] = {k: csv_values(v)[0] for k, v in t.context.items()}
            for c in t.columns:
                value, std, error = csv_values(row.get(c.key))
                record[c.key] = value
                if c.kind == "stat":
                    record[f"{c.key}_std"] = std
                    record[f"{c.key}_stat"] = error
            writer.writerow(record)
    return out.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(title: str, tables: Sequence[Table], preamble: Sequence[str] = ()) -> str:
    lines = [f"# {title}", ""]
    for p in preamble:
        lines += [p, ""]
    for t in tables:
        cols = [c for c in t.columns if c.display]
        lines += [f"## {t.title}", ""]
        if t.rows:
            lines.append("| " + " | ".join(_md_escape(c.header) for c in cols) + " |")
            lines.append("|" + "|".join(":--" if c.kind == "text" else "--:" for c in cols) + "|")
            for row in t.rows:
                lines.append("| " + " | ".join(_md_escape(cell_text(row.get(c.key), c)) for c in cols) + " |")
            lines.append("")
        for note in t.notes:
            lines += [f"*{note}*" if not t.rows else f"Note: {note}", ""]
    return "\n".join(lines).rstrip() + "\n"


_LATEX_CHARS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "—": "---", "–": "--", "∞": r"$\infty$", "Δ": r"$\Delta$", "µ": r"$\mu$",
    "μ": r"$\mu$", "≥": r"$\geq$", "≤": r"$\leq$", ">": r"$>$", "<": r"$<$", "×": r"$\times$",
    "∪": r"$\cup$", "σ": r"$\sigma$", "²": r"$^2$", "→": r"$\to$",
}


def latex_escape(text: str) -> str:
    """Plain text -> LaTeX text mode, one character at a time (so escapes never double)."""
    return "".join(_LATEX_CHARS.get(ch, ch) for ch in str(text))


def _latex_cell(value: Any, col: Column) -> str:
    if isinstance(value, Label):
        return value.latex
    return latex_escape(cell_text(value, col))


def to_latex(title: str, tables: Sequence[Table]) -> str:
    """Booktabs tables, one `table` float per section; needs \\usepackage{booktabs}."""
    parts = [f"% {title}", "% Generated by `salt report tables`; needs \\usepackage{booktabs}.", ""]
    for t in tables:
        cols = [c for c in t.columns if c.display]
        parts.append(r"\begin{table}[htbp]")
        parts.append(r"\centering")
        parts.append(r"\caption{" + latex_escape(t.title) + "}")
        if t.label:
            parts.append(r"\label{tab:" + t.label + "}")
        parts.append(r"\begin{tabular}{" + "".join("l" if c.kind == "text" else "r" for c in cols) + "}")
        parts.append(r"\toprule")
        parts.append(" & ".join(c.latex or latex_escape(c.header) for c in cols) + r" \\")
        parts.append(r"\midrule")
        if t.rows:
            for row in t.rows:
                parts.append(" & ".join(_latex_cell(row.get(c.key), c) for c in cols) + r" \\")
        else:
            note = t.notes[0] if t.notes else "no data"
            parts.append(r"\multicolumn{" + str(len(cols)) + "}{c}{" + latex_escape(note) + r"} \\")
        parts.append(r"\bottomrule")
        parts.append(r"\end{tabular}")
        notes = t.notes if t.rows else t.notes[1:]
        if notes:
            parts.append(r"\par\smallskip{\footnotesize " + " ".join(latex_escape(n) for n in notes) + "}")
        parts.append(r"\end{table}")
        parts.append("")
    return "\n".join(parts)


_HTML_STYLE = """
body { font-family: sans-serif; margin: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em 0; }
caption { text-align: left; font-weight: bold; padding-bottom: 0.3em; }
th, td { padding: 0.2em 0.7em; }
thead th { border-top: 2px solid #333; border-bottom: 1px solid #333; }
tbody tr:last-child td { border-bottom: 2px solid #333; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.note { font-size: 0.85em; color: #444; max-width: 60em; }
"""


def to_html(title: str, tables: Sequence[Table], preamble: Sequence[str] = ()) -> str:
    """A standalone page, so `snakemake --report` shows the table itself rather than a download link."""
    out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
           f"<style>{_HTML_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    out += [f'<p class="note">{html.escape(p)}</p>' for p in preamble]
    for t in tables:
        cols = [c for c in t.columns if c.display]
        out.append("<table>")
        out.append(f"<caption>{html.escape(t.title)}</caption>")
        out.append("<thead><tr>" + "".join(f"<th>{html.escape(c.header)}</th>" for c in cols) + "</tr></thead>")
        out.append("<tbody>")
        for row in t.rows:
            cells = []
            for c in cols:
                cls = "" if c.kind == "text" else ' class="num"'
                cells.append(f"<td{cls}>{html.escape(cell_text(row.get(c.key), c))}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
        out += [f'<p class="note">{html.escape(n)}</p>' for n in t.notes]
    out.append("</body></html>")
    return "\n".join(out) + "\n"
