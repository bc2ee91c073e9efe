"""The comparison table: one row per model (and dataset, and protocol where several), mean ± std over seeds.

The numbers live in a pandas frame (``Table.rows``: ``<key> mean``, ``<key> std``, ``<key> n``) so tests and
other writers can check them; ``cell`` turns them into the text both the markdown and the HTML show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aebench.report import keys as K
from aebench.report.results import Results

if TYPE_CHECKING:
    import pandas as pd

NOT_APPLICABLE = "n/a"
MISSING = "–"


@dataclass
class Table:
    rows: pd.DataFrame
    keys: list[str]
    group: list[str]  # identity columns, in display order
    best: dict[str, set[int]] = field(default_factory=dict)  # key -> row positions holding the best mean
    na: dict[tuple[int, str], str] = field(default_factory=dict)  # (row, key) -> why the metric does not apply

    def cell(self, i: int, key: str) -> str:
        row = self.rows.iloc[i]
        mean, std, n = row[f"{key} mean"], row[f"{key} std"], row[f"{key} n"]
        if n == 0 or mean is None or (isinstance(mean, float) and math.isnan(mean)):
            return NOT_APPLICABLE if (i, key) in self.na else MISSING
        text = fmt(mean)
        if n > 1 and std is not None and not math.isnan(std):
            text += f" ± {fmt(std, 2)}"
        return text

    def header(self, key: str) -> str:
        a = K.arrow(key)
        return f"{key} {a}" if a else key

    def identity(self, i: int) -> list[str]:
        row = self.rows.iloc[i]
        return [str(row[c]) for c in self.group] + [str(int(row["seeds"]))]

    def column_name(self, i: int) -> str:
        """A row's identity in one string, for the transposed table's column headers."""
        row = self.rows.iloc[i]
        extra = [str(row[c]) for c in self.group if c != "label"]
        return f"{row['label']} ({', '.join(extra)})" if extra else str(row["label"])

    @property
    def identity_headers(self) -> list[str]:
        names = {"label": "model"}
        return [names.get(c, c) for c in self.group] + ["seeds"]


def fmt(x: float, digits: int = 4) -> str:
    """Four significant digits: enough to rank, few enough to read."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def build_table(res: Results, keys: list[str]) -> Table:
    """The done jobs over seeds (``res.aggregate()``); the best mean per column marked per dataset and protocol."""
    import pandas as pd

    group = res.group_columns
    display = [c for c in group if c != "dataset"] if res.done["dataset"].nunique() <= 1 else list(group)
    if "label" in display:  # the model first, then the dataset, then the protocol
        display = ["label"] + [c for c in display if c != "label"]
    out = []
    na: dict[tuple[int, str], str] = {}
    for i, grp in enumerate(res.aggregate()):
        row: dict = {"dataset": grp.dataset, "label": grp.label, "protocol": grp.protocol, "seeds": len(grp.job_ids)}
        for key in keys:
            st = grp.stat(key)
            row[f"{key} mean"], row[f"{key} std"], row[f"{key} n"] = st.mean, st.sd, st.n
            if st.n == 0:
                reasons = [res.not_applicable(j).get(K.metric_of(key)) for j in grp.job_ids]
                if reasons and all(reasons):
                    na[(i, key)] = "; ".join(dict.fromkeys(reasons))
        out.append(row)
    rows = pd.DataFrame(out)
    table = Table(rows, list(keys), display, na=na)
    for key in keys:
        d = K.direction(key)
        if d not in ("min", "max") or rows.empty:
            continue
        col = rows[f"{key} mean"]
        best: set[int] = set()
        for _, blk in rows.groupby(["dataset", "protocol"], sort=False, dropna=False):
            vals = col.loc[blk.index].dropna()
            if len(vals) < 2:
                continue
            target = vals.min() if d == "min" else vals.max()
            best |= {int(rows.index.get_loc(ix)) for ix, v in vals.items() if v == target}
        table.best[key] = best
    return table
