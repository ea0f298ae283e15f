"""Cohort tables: many workflow results plus a clinical CSV -> one row per case; Table 1 by group.

A case's results are found by its ``case_id``: the name of the folder holding its ``result.json``
(``RESULTS/<case_id>/result.json``), or ``extra.case_id`` in the result. Each scalar quantity of
the result becomes a column (named as in result.json; booleans as 0/1), prefixed by the workflow
when results of several workflows are joined. The clinical CSV needs a ``case_id`` column.

Table 1 uses ``tableone`` (Pollard et al., JAMIA Open 2018): counts (%) for categorical
variables, mean (SD) or median [Q1,Q3] for continuous ones, with P values from chi-square (Fisher
exact for 2x2 tables with small expected counts), one-way ANOVA (t-test for two groups) and
Kruskal-Wallis (for two groups equivalent to Mann-Whitney U) for variables listed as non-normal,
as the ICH study reports its Table 1 (PAPERS.md D4).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from neurorad.errors import InputError

__all__ = ["read_results", "build_cohort", "table1"]


def _flatten(doc: dict) -> dict[str, object]:
    row: dict[str, object] = {}
    for q in doc.get("quantities") or []:
        v = q.get("value")
        if isinstance(v, bool):
            v = int(v)
        if isinstance(v, (int, float, str)) or v is None:
            row[str(q["name"])] = v
    return row


def read_results(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per result.json (a file, a result folder, or a folder of result folders)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif (p / "result.json").exists():
            files.append(p / "result.json")
        elif p.is_dir():
            files += sorted(p.glob("*/result.json"))
        else:
            raise InputError("no result.json here", p)
    if not files:
        raise InputError("no result.json found in the given paths")
    rows = []
    workflows = set()
    for f in files:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InputError(f"not a result.json ({err})", f) from err
        if "workflow" not in doc or "quantities" not in doc:
            raise InputError("not a workflow result.json (no workflow/quantities)", f)
        workflows.add(doc["workflow"])
        rows.append({"case_id": str((doc.get("extra") or {}).get("case_id") or f.parent.name),
                     "workflow": doc["workflow"], **_flatten(doc)})
    df = pd.DataFrame(rows)
    if df["case_id"].duplicated().any() and len(workflows) == 1:
        dup = df["case_id"][df["case_id"].duplicated()].iloc[0]
        raise InputError(f"case {dup!r} has several results of one workflow; keep one per case")
    if len(workflows) > 1:  # one column per workflow and quantity
        wide = []
        for wf, part in df.groupby("workflow"):
            wide.append(part.drop(columns="workflow").set_index("case_id").add_prefix(f"{wf}."))
        return pd.concat(wide, axis=1).reset_index()
    return df.drop(columns="workflow")


def build_cohort(results: Iterable[str | Path], clinical_csv: str | Path, how: str = "inner") -> pd.DataFrame:
    """Results joined to the clinical table on ``case_id`` (``how``: inner or left)."""
    res = read_results(results)
    path = Path(clinical_csv)
    try:
        clin = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the clinical CSV ({err})", path) from err
    if "case_id" not in clin:
        raise InputError(f"the clinical CSV needs a case_id column; columns: {list(clin.columns)}", path)
    clin["case_id"] = clin["case_id"].astype(str)
    clash = (set(res.columns) & set(clin.columns)) - {"case_id"}
    if clash:
        clin = clin.rename(columns={c: f"clinical.{c}" for c in clash})
    out = res.merge(clin, on="case_id", how=how)
    if out.empty:
        raise InputError("no case_id of the results matches the clinical CSV", path)
    return out


def table1(df: pd.DataFrame, columns: list[str], groupby: str | None = None, categorical: list[str] | None = None,
           nonnormal: list[str] | None = None) -> pd.DataFrame:
    """Table 1 (module doc) as a DataFrame; P values when ``groupby`` is given."""
    from tableone import TableOne

    missing = [c for c in [*columns, *([groupby] if groupby else [])] if c not in df]
    if missing:
        raise InputError(f"cohort has no column(s) {missing}")
    cat = categorical if categorical is not None else [
        c for c in columns if not pd.api.types.is_numeric_dtype(df[c]) or set(df[c].dropna().unique()) <= {0, 1}]
    t = TableOne(df, columns=columns, categorical=cat, nonnormal=nonnormal or [], groupby=groupby,
                 pval=groupby is not None, htest_name=groupby is not None, missing=False, overall=True)
    return t.tableone
