"""Run notebooks in order and show progress in the terminal: notebook i of N, cell j of M, elapsed.

``make course`` used to run ``jupyter nbconvert --execute`` per notebook, which prints nothing for
minutes. This runner executes each notebook with nbclient (the library nbconvert uses, same
kernels from each notebook's metadata), prints one line when a code cell starts and a summary when
the notebook ends, and writes the executed copy to ``--out``.

Usage:
    .venv-lmdeploy/bin/python scripts/run_notebooks.py --out artifacts/executed notebooks/0*.ipynb

Args (command line):
    notebooks: the .ipynb files, run in the order given.
    --out: folder for the executed copies (default artifacts/executed).
    --timeout: seconds one cell may run (default 1800).

Exit status: 0 when every notebook ran; 1 at the first failing notebook (its partial copy is written).

Example:
    >>> fmt_seconds(75.2)
    '1:15'
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def fmt_seconds(s: float) -> str:
    """``m:ss`` for a duration in seconds."""
    s = int(round(s))
    return f"{s // 60}:{s % 60:02d}"


def first_line(source: str, width: int = 60) -> str:
    """The first non-blank, non-comment line of a cell, cut to ``width``."""
    for line in source.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line if len(line) <= width else line[:width - 1] + "…"
    return "(comment only)"


def run_one(path: Path, out_dir: Path, timeout: int, index: int, total: int) -> bool:
    """Execute one notebook, printing a line per code cell; write the executed copy. True on success."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    order = {id(c): i + 1 for i, c in enumerate(code)}
    start = time.time()
    tag = f"[{index}/{total}] {path.name}"

    def on_cell_start(cell, cell_index):
        if cell.cell_type == "code":
            print(f"{tag}  cell {order.get(id(cell), '?')}/{len(code)}  {fmt_seconds(time.time() - start)}  "
                  f"{first_line(cell.source)}", flush=True)

    client = NotebookClient(nb, timeout=timeout, kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
                            resources={"metadata": {"path": str(path.parent)}}, on_cell_start=on_cell_start)
    ok = True
    try:
        client.execute()
    except CellExecutionError as exc:
        ok = False
        print(f"{tag}  FAILED after {fmt_seconds(time.time() - start)}\n{str(exc)[-2000:]}", file=sys.stderr, flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    if ok:
        print(f"{tag}  done: {len(code)} code cells in {fmt_seconds(time.time() - start)}", flush=True)
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("notebooks", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("artifacts/executed"))
    p.add_argument("--timeout", type=int, default=1800)
    a = p.parse_args(argv)
    t0 = time.time()
    for i, path in enumerate(a.notebooks, 1):
        if not run_one(path, a.out, a.timeout, i, len(a.notebooks)):
            return 1
    print(f"all {len(a.notebooks)} notebooks ran in {fmt_seconds(time.time() - t0)}; executed copies in {a.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
