"""Fine-tuning runs on disk: one folder per run, a record of it, and a pointer to the latest.

Notebook 05 trains into a new folder every time it runs, so re-running never overwrites a
trained or converted model; notebook 06 evaluates and serves the latest *finished* run::

    <runs_dir>/finetune/
        lora-20261126-031500/      one run
            work.py                the XTuner config (``finetune.write_config``)
            work/                  xtuner train work dir: iter_N.pth, logs
            merged/                the converted model (``finetune.convert``)
            run.json               what was trained, from what, how long, the result
        latest.json                {"run_dir": ...}: the last run that recorded a merged model

Example:
    >>> from helpers.settings import get_settings
    >>> run_dir = new_run_dir(get_settings())            # doctest: +SKIP
    >>> record_run(run_dir, merged=str(run_dir / "merged"), train_s=312.0)   # doctest: +SKIP
    >>> latest_run(get_settings())["merged"]             # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

RUN_RECORD = "run.json"
LATEST = "latest.json"


def finetune_root(settings) -> Path:
    """``<runs_dir>/finetune``: where notebook 05's runs live."""
    return Path(settings.runs_dir) / "finetune"


def new_run_dir(settings, prefix: str = "lora") -> Path:
    """Create a fresh, empty run folder named after the time (never an existing one).

    Args:
        settings: a Settings (uses ``runs_dir``).
        prefix: name prefix.

    Returns:
        The new folder, e.g. ``runs/tiny/finetune/lora-20261126-031500``.

    Example:
        >>> new_run_dir(S).name.startswith("lora-")   # doctest: +SKIP
        True
    """
    root = finetune_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = root / (f"{prefix}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"could not create a new run folder under {root}")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)  # readers never see a half-written file


def record_run(run_dir, **info) -> dict:
    """Add ``info`` to ``run_dir/run.json``; when it names a merged model, make the run the latest.

    Args:
        run_dir: a folder from :func:`new_run_dir`.
        **info: JSON-able facts (config, checkpoint, merged, train_s, final_loss, recipe, ...).

    Returns:
        The whole record.

    Raises:
        FileNotFoundError: ``merged`` is given but holds no ``config.json``.
    """
    run_dir = Path(run_dir).resolve()  # the record is read from other working directories (notebooks/)
    if info.get("merged") and not (Path(info["merged"]) / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir}: merged model {info['merged']} has no config.json")
    path = run_dir / RUN_RECORD
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"run_dir": str(run_dir)}
    record.update(info)
    record["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    _write_json(path, record)
    if info.get("merged"):  # only a new model moves the pointer, not a note added to an older run
        _write_json(run_dir.parent / LATEST, {"run_dir": str(run_dir)})
    return record


def latest_run(settings) -> dict:
    """The record of the last run that produced a merged model.

    Returns:
        The run's ``run.json`` contents (``merged`` is the model directory).

    Raises:
        FileNotFoundError: no finished run yet (run notebook 05), or its files are gone.

    Example:
        >>> latest_run(S)["merged"]   # doctest: +SKIP
        '.../runs/tiny/finetune/lora-20261126-031500/merged'
    """
    root = finetune_root(settings)
    pointer = root / LATEST
    if not pointer.is_file():
        raise FileNotFoundError(f"no fine-tuned model yet ({pointer} is missing): run notebook 05 first")
    run_dir = Path(json.loads(pointer.read_text(encoding="utf-8"))["run_dir"])
    record_path = run_dir / RUN_RECORD
    if not record_path.is_file():
        raise FileNotFoundError(f"{pointer} points at {run_dir}, which has no {RUN_RECORD}: run notebook 05 again")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    if not (Path(record.get("merged", "")) / "config.json").is_file():
        raise FileNotFoundError(f"{record_path}: merged model {record.get('merged')!r} is missing")
    return record


def list_runs(settings) -> list:
    """Every run record under :func:`finetune_root`, oldest first."""
    root = finetune_root(settings)
    records = []
    for path in sorted(root.glob(f"*/{RUN_RECORD}")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except ValueError:
            print(f"{path}: unreadable run record, skipped")
    return records
