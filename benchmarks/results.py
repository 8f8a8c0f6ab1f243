"""The one results writer: rows to CSV as they come, runs merged, markdown tables."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from benchmarks.scoring import HEADER, row_cells


class Rows:
    """Rows of one benchmark, written to ``path`` (CSV) as they come and kept for the table."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path, self.columns, self.rows = path, list(columns), []
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as handle:
            csv.writer(handle).writerow(self.columns)

    def add(self, key: Sequence, method: str, seed: int, values: dict, seconds: float) -> None:
        """One row per metric of ``values``: ``(*key, method, seed, metric, value, seconds)``."""
        new = [
            [*key, method, seed, metric, float(value), round(seconds, 2)]
            for metric, value in values.items()
        ]
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerows(new)
        self.rows += new

    def frame(self) -> pd.DataFrame:
        """Everything added so far."""
        return pd.DataFrame(self.rows, columns=self.columns)


def merge_runs(paths: list[str], keys: list[str], out: Path) -> pd.DataFrame:
    """Several runs' CSVs as one, written to ``out``; a later file's row replaces an earlier's."""
    frame = pd.concat([pd.read_csv(path) for path in paths], ignore_index=True)
    frame = frame.drop_duplicates(keys, keep="last")
    frame.to_csv(out, index=False)
    return frame


def markdown(header: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
    """A markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]


def method_tables(
    wide: pd.DataFrame, seconds: pd.Series, group: str, average_title: str
) -> list[str]:
    """Metrics and seconds per group and method (``wide``: means over seeds), then averaged."""
    header = [group, "method", *HEADER, "s"]
    per_group = [
        [g, method, *row_cells(row), f"{seconds[g, method]:.0f}"]
        for (g, method), row in wide.iterrows()
    ]
    average = wide.groupby(level="method").mean()
    overall = [["all", method, *row_cells(row), ""] for method, row in average.iterrows()]
    return [*markdown(header, per_group), "", average_title, "", *markdown(header, overall)]
