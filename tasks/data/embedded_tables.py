"""The embedded tables: scikit-learn's bundled breast cancer and wine data, written as CSV files."""

from __future__ import annotations

import os
from pathlib import Path

from sklearn import datasets

LOADERS = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}


def write_sklearn_table(name: str, folder: Path) -> Path:
    """Write scikit-learn's ``name`` table as ``folder/{name}.csv``: its feature columns and ``label`` (class names).

    A file that already exists is kept, so a second call is cheap and changes nothing.

    Raises:
        KeyError: ``name`` is not one of ``LOADERS``.
    """
    path = folder / f"{name}.csv"
    if path.exists():
        return path
    bunch = LOADERS[name](as_frame=True)
    frame = bunch.frame.drop(columns=["target"])
    frame["label"] = [str(bunch.target_names[i]) for i in bunch.target]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)  # a crash never leaves half a table for the next run to read
    return path
