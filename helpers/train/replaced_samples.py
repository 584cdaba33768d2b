"""Samples XTuner replaced during training because their image would not open.

``InternVL_V1_5_Dataset.prepare_data`` catches any error of ``Image.open(os.path.join(
image_folder, image))``, prints ``Error: <exception>`` and returns None; ``__getitem__`` then
trains on a *random other sample* instead. The run still ends normally, with every checkpoint
written. This module counts those replacements in ``train.log`` and names the records whose
image XTuner cannot open, so that :meth:`helpers.train.train_run.TrainRun.result` can say so.

Example:
    >>> replaced_sample_errors("Error: [Errno 2] No such file or directory: '/d/gone.jpg'\\n")
    ["[Errno 2] No such file or directory: '/d/gone.jpg'"]
"""
from __future__ import annotations

import os
import re

from helpers.data.pathsafe import path_form_problem, short_repr

# print(f'Error: {e}') in prepare_data: one line per replaced sample.
_PRINTED = re.compile(r"^Error: (.*)$", re.M)
# print_log(f'Error: {e}') writes the same through mmengine's logger (used when prints are lost).
_LOGGED = re.compile(r" - mmengine - \w+ - Error: (.*)$", re.M)


def replaced_sample_errors(log_text: str) -> list:
    """The error messages of the samples XTuner replaced, one per replacement, from a training log.

    Example:
        >>> replaced_sample_errors("12/07 10:00:00 - mmengine - INFO - Error: cannot identify image file 'x'")
        ["cannot identify image file 'x'"]
    """
    return _PRINTED.findall(log_text) or _LOGGED.findall(log_text)


def unopenable_records(config, decode: bool = True, limit: int | None = None) -> list:
    """Records of the config's training set whose image XTuner cannot open.

    Reads ``data_path`` and ``image_folder`` from the config (PART-1 literals) and joins them as
    XTuner does; ``decode`` also checks each image's header and completeness the way
    :func:`helpers.data.checks.check_llava` does.

    Args:
        config: an XTuner config from :func:`helpers.train.xtuner_config.write_config`.
        decode: check image contents too (else: path form and existence only; fast).
        limit: stop after this many records (None: all).

    Returns:
        ``[(index, image, reason)]``; empty when the config names no readable data file.

    Example:
        >>> unopenable_records("runs/lora/work.py")  # doctest: +SKIP
        [(3, 'gone.jpg', 'no such file: /data/images/gone.jpg')]
    """
    from helpers.data.image_checks import inspect_image
    from helpers.data.jsonio import read_json_records
    from helpers.train.xtuner_config import config_values

    try:
        values = config_values(config)
    except (OSError, SyntaxError, ValueError):
        return []
    data_path, folder = values.get("data_path"), values.get("image_folder")
    if not isinstance(data_path, str) or not isinstance(folder, str):
        return []
    records = read_json_records(data_path, [])
    out, seen = [], {}
    for i, rec in enumerate(records or []):
        image = rec.get("image") if isinstance(rec, dict) else None
        image = image[0] if isinstance(image, list) and len(image) == 1 else image
        if image is None:
            continue
        key = image if isinstance(image, str) else short_repr(image)
        if key not in seen:
            seen[key] = _open_problem(folder, image, decode, inspect_image)
        if seen[key]:
            out.append((i, key, seen[key]))
            if limit is not None and len(out) >= limit:
                break
    return out


def _open_problem(folder: str, image, decode: bool, inspect_image) -> str | None:
    form = path_form_problem(image)
    if form:
        return form[1]
    full = os.path.join(folder, image)  # as XTuner: an absolute image path replaces the folder
    if not os.path.isfile(full):
        return f"no such file: {full}"
    if decode:
        errors = [msg for _, msg, sev in inspect_image(full)["problems"] if sev == "error"]
        if errors:
            return f"{full}: {errors[0]}"
    return None
