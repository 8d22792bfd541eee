"""Execute the notebooks top to bottom and save them with their outputs.

    python scripts/run_notebooks.py                                 # every notebooks/*.ipynb
    python scripts/run_notebooks.py notebooks/02_features.ipynb     # one
    OMP_NUM_THREADS=1 python scripts/run_notebooks.py --no-save     # only time them

Each notebook runs in a fresh scratch directory, so it trains and collects everything it needs
as it would from a fresh checkout, on a kernel of this interpreter. It is saved back in place
with its outputs (the plots people read on GitHub), without nbclient's per-cell timestamps, and
its wall time is printed. ``tests/test_notebooks.py`` executes the same notebooks in CI and
checks the saved outputs (executed in order, a figure, no error, small, no machine paths).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat
from ipykernel.kernelspec import write_kernel_spec

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT = 1200  # seconds


def execute(path: Path, kernel_name: str) -> tuple[nbformat.NotebookNode, float]:
    """Run ``path`` from a clean slate in an empty directory; the executed notebook and its
    wall time in seconds. Raises ``nbclient.exceptions.CellExecutionError`` naming the cell."""
    book = nbformat.read(path, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    with tempfile.TemporaryDirectory(prefix=f"{path.stem}_") as workdir:
        client = nbclient.NotebookClient(
            book,
            timeout=CELL_TIMEOUT,
            kernel_name=kernel_name,
            record_timing=False,
            resources={"metadata": {"path": workdir}},
        )
        start = time.perf_counter()
        client.execute()
        return book, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--no-save", action="store_true", help="only execute and time them")
    args = parser.parse_args()
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    with tempfile.TemporaryDirectory() as jupyter:
        # The notebooks name the "python3" kernel; this one, first on JUPYTER_PATH, is this
        # interpreter's, whatever other python3 kernel is installed.
        write_kernel_spec(Path(jupyter) / "kernels" / "python3")
        os.environ["JUPYTER_PATH"] = jupyter
        for path in paths:
            book, seconds = execute(path, "python3")
            threads = os.environ.get("OMP_NUM_THREADS", "torch default")
            load = os.getloadavg()[0]
            print(f"{path.name}: {seconds:.0f} s (threads: {threads}, load {load:.1f})", flush=True)
            if not args.no_save:
                nbformat.write(book, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
