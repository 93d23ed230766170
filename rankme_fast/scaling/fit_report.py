"""Reading result tables (CSV or JSON, no pandas) and writing a fit's report (fit.json, fit.md,
fit.png)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from rankme_fast.scaling.fitting import Fit


def read_table(path: str | Path) -> dict[str, list[str | float]]:
    """Columns of a CSV (header row) or a JSON file (a list of records, or an object of columns)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, list):
            if not all(isinstance(record, dict) for record in data):
                raise ValueError(f"{path}: a JSON table is a list of records or an object of columns")
            names = list(dict.fromkeys(key for record in data for key in record))
            return {name: [record.get(name, "") for record in data] for name in names}
        if isinstance(data, dict) and all(isinstance(column, list) for column in data.values()):
            return data
        raise ValueError(f"{path}: a JSON table is a list of records or an object of columns")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no rows under a header")
    return {name: [row[name] for row in rows] for name in rows[0]}


def column(table: dict[str, list[str | float]], name: str, source: str | Path = "table") -> np.ndarray:
    """One column as float64, with a clear error for a missing name or a non-number."""
    if name not in table:
        raise ValueError(f"{source}: no column {name!r} (columns: {', '.join(table)})")
    try:
        return np.array([float(value) for value in table[name]], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: column {name!r} has a value that is not a number ({error})") from None


def write_report(result: Fit, out: str | Path, title: str = "Scaling-law fit") -> dict[str, Path]:
    """fit.json (everything), fit.md (the summary table) and fit.png (the plot) under `out`."""
    from matplotlib.figure import Figure  # no pyplot: writing a file leaves the user's backend alone

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "fit.json", "markdown": out / "fit.md", "plot": out / "fit.png"}
    paths["json"].write_text(result.to_json())
    paths["markdown"].write_text(f"# {title}\n\n```\n{result.summary()}\n```\n\n![fit](fit.png)\n\n"
                                 f"Form source: {result.form.source}.\n")  # fmt: skip
    figure = Figure(figsize=(6, 4.2))
    result.plot(figure.subplots())
    figure.tight_layout()
    figure.savefig(paths["plot"], dpi=120)
    return paths
