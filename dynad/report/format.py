"""Writing tables as CSV, Markdown and LaTeX with one fixed number format, and comparing two folders of them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dynad.provenance import write_text

TABLE_SUFFIXES = (".csv", ".md", ".tex")
FLOAT_FORMAT = "%.2f"  # every number in a table: percent, two decimals


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        s = FLOAT_FORMAT % float(v)
        return "0.00" if s == "-0.00" else s
    return str(v)


def _numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def to_markdown(df: pd.DataFrame, title: str = "", note: str = "") -> str:
    """A GitHub Markdown table (no tabulate needed)."""
    cols = [str(c) for c in df.columns]
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(esc(c) for c in cols) + " |")
    lines.append("|" + "|".join("---:" if _numeric(df[c]) else "---" for c in df.columns) + "|")
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(esc(_fmt(v)) for v in row) + " |")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def to_latex(df: pd.DataFrame, caption: str = "") -> str:
    """A booktabs tabular (no jinja2 needed)."""
    def esc(s: str) -> str:
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                     ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\~{}"), ("^", r"\^{}")):  # fmt: skip
            s = s.replace(a, b) if a != "\\" else s.replace(a, "\x00")
        return s.replace("\x00", r"\textbackslash{}")

    align = "".join("r" if _numeric(df[c]) else "l" for c in df.columns)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(r"\caption{" + esc(caption) + "}")
    lines += [r"\begin{tabular}{" + align + "}", r"\toprule", " & ".join(esc(str(c)) for c in df.columns) + r" \\",
              r"\midrule"]  # fmt: skip
    for row in df.itertuples(index=False):
        lines.append(" & ".join(esc(_fmt(v)) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, folder: str | Path, name: str, title: str = "", note: str = "") -> list[Path]:
    """`folder/name.{csv,md,tex}`, every float as FLOAT_FORMAT; returns the paths."""
    folder = Path(folder)
    csv = df.copy()
    for c in csv.columns:
        if _numeric(csv[c]):
            csv[c] = pd.Series([_fmt(v) for v in csv[c]], index=csv.index, dtype=object)
    paths = [folder / f"{name}{s}" for s in TABLE_SUFFIXES]
    write_text(paths[0], csv.to_csv(index=False, lineterminator="\n"))
    write_text(paths[1], to_markdown(df, title, note))
    write_text(paths[2], to_latex(df, title))
    return paths


def compare_tables(dir_a: str | Path, dir_b: str | Path) -> list[str]:
    """Differences between the tables of two results folders (results/<preset> or its tables/): [] when identical."""
    def tables_of(d: Path) -> tuple[Path, dict[str, Path]]:
        if not d.is_dir():  # a mistyped path would otherwise list every table of the other folder as "only in"
            raise FileNotFoundError(f"results folder {d} does not exist")
        d = d / "tables" if (d / "tables").is_dir() else d
        return d, {str(p.relative_to(d)): p for p in sorted(d.rglob("*")) if p.suffix in TABLE_SUFFIXES}

    da, a = tables_of(Path(dir_a))
    db, b = tables_of(Path(dir_b))
    diffs = []
    if not a and not b:
        return [f"no tables in {da} nor in {db}"]
    if a and b and not set(a) & set(b):
        return [f"no table in common between {da} and {db}: compare two results/<preset> folders (or their tables/)"]
    for name in sorted(set(a) - set(b)):
        diffs.append(f"{name}: only in {da}")
    for name in sorted(set(b) - set(a)):
        diffs.append(f"{name}: only in {db}")
    for name in sorted(set(a) & set(b)):
        la, lb = a[name].read_text().splitlines(), b[name].read_text().splitlines()
        if la == lb:
            continue
        if len(la) != len(lb):
            diffs.append(f"{name}: {len(la)} lines vs {len(lb)} lines")
        for i, (x, y) in enumerate(zip(la, lb)):
            if x != y:
                diffs.append(f"{name}:{i + 1}: {x!r} != {y!r}")
    return diffs
