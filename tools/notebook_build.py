"""Shared by the ``tools/make_notebook_NN.py`` scripts: execute a notebook's cells in a fresh
kernel and write it under ``notebooks/`` with volatile metadata stripped (atomically)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import List

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def write_executed(cells: List, filename: str, *, drop_widget_state: bool = False,
                   timeout: int = 600) -> Path:
    """Run ``cells`` top to bottom (working directory ``notebooks/``) and write the result.

    Args:
        cells: nbformat v4 cells.
        filename: e.g. ``"01_quickstart.ipynb"``.
        drop_widget_state: drop the saved ipywidgets state (megabytes of PNGs, stale without a
            kernel); the widget outputs themselves stay.
    """
    nb = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    })
    out = NOTEBOOKS / filename
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(out.parent)}}).execute()
    if drop_widget_state:
        nb.metadata.pop("widgets", None)
    for i, cell in enumerate(nb.cells):  # strip volatile metadata: execution times, output metadata
        cell["id"] = f"cell-{i:02d}"  # stable ids: a rebuilt notebook differs only where outputs do
        cell.metadata.pop("execution", None)
        for o in cell.get("outputs", []):
            if isinstance(o.get("metadata"), dict):
                o["metadata"].clear()
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".ipynb.tmp")
    os.close(fd)
    try:
        nbformat.write(nb, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print("wrote", out, file=sys.stderr)
    return out
