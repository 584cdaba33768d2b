"""Checkpoints of an ``xtuner train`` work dir: which are complete, which is the newest.

Example:
    >>> checkpoint_problem("/nonexistent/iter_1.pth")
    'does not exist'
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

CKPT_RE = re.compile(r"^iter_(\d+)\.pth$")


def checkpoint_problem(path) -> str | None:
    """Why a checkpoint cannot be loaded, or None when it is complete.

    torch writes a zip archive whose directory sits at the end, so a file cut short by a
    kill during saving has no readable directory; every member's CRC is checked too.
    DeepSpeed checkpoints are directories of such files.

    Example:
        >>> checkpoint_problem("/nonexistent/iter_1.pth")
        'does not exist'
    """
    path = Path(path)
    if not path.exists():
        return "does not exist"
    files = sorted(path.glob("*.pt")) if path.is_dir() else [path]
    if not files:
        return "DeepSpeed checkpoint directory without *.pt files"
    for file in files:
        if file.stat().st_size == 0:
            return f"{file.name} is empty"
        try:
            with zipfile.ZipFile(file) as archive:
                bad = archive.testzip()
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            return f"{file.name} is truncated or corrupt ({exc})"
        if bad is not None:
            return f"{file.name}: member {bad} fails its CRC check"
        if not any(n.endswith("data.pkl") for n in names):
            return f"{file.name} is not a torch checkpoint (no data.pkl)"
    return None


def _iteration(path: Path) -> int:
    m = CKPT_RE.match(path.name)
    return int(m.group(1)) if m else -1


def last_checkpoint(work_dir, verbose: bool = True) -> Path | None:
    """The newest complete ``iter_N.pth`` in ``work_dir``; broken ones are skipped.

    Args:
        work_dir: an ``xtuner train`` work dir.
        verbose: print a line for every checkpoint skipped and why.

    Returns:
        The checkpoint path, or None when there is none.

    Example:
        >>> last_checkpoint("runs/lora")  # doctest: +SKIP
        PosixPath('runs/lora/iter_64.pth')
    """
    work_dir = Path(work_dir)
    candidates = sorted((p for p in work_dir.glob("iter_*.pth") if _iteration(p) >= 0),
                        key=_iteration, reverse=True)
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        if verbose:
            print(f"跳过检查点 {path}：{problem}（多半是运行被中断时写了一半）")
    return None
