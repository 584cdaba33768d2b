"""Where the troubleshooting lab works: the tiny model, the course data and a git-ignored folder.

Example:
    >>> lab = prepare_lab(get_settings())   # doctest: +SKIP
    >>> lab["work"].name                    # doctest: +SKIP
    'troubleshoot'
"""
from __future__ import annotations

import json


def prepare_lab(settings) -> dict:
    """Build what notebook 07 needs when it is missing, on a fresh clone too.

    Args:
        settings: course settings (``runs_dir``, ``llava_dir``, the synthetic data's fields).

    Returns:
        ``{"tiny": tiny checkpoint dir, "work": the folder this notebook writes to (under runs_dir,
        git-ignored), "records": the LLaVA training records}``.

    Example:
        >>> prepare_lab(get_settings())["records"][0]["image"]  # doctest: +SKIP
        'images/...jpeg'
    """
    from helpers.data.prepare import ensure_data
    from helpers.models import build_tiny

    tiny = build_tiny()  # idempotent: built only when missing or outdated (make tiny)
    paths = ensure_data(settings)  # make data: drawn and converted once
    work = settings.runs_dir / "troubleshoot"
    work.mkdir(parents=True, exist_ok=True)
    records = json.loads(paths["train"].read_text(encoding="utf-8"))
    return {"tiny": tiny, "work": work, "records": records}
