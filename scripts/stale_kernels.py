"""Warn about user-level Jupyter kernels that shadow the course's per-environment ones.

Jupyter searches ``~/.local/share/jupyter/kernels`` before an environment's own prefix, so a
kernel of the same name registered there (by an older ``make kernels`` or another clone) wins.
A user-level spec whose interpreter no longer exists is removed; any other is reported.

    python scripts/stale_kernels.py internvl-xtuner internvl-lmdeploy
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def main(names) -> int:
    from jupyter_core.paths import jupyter_data_dir

    user = Path(jupyter_data_dir()) / "kernels"
    for name in names:
        spec = user / name / "kernel.json"
        if not spec.is_file():
            continue
        python = json.loads(spec.read_text(encoding="utf-8"))["argv"][0]
        if not Path(python).exists():
            shutil.rmtree(spec.parent)
            print(f"removed stale user kernel {name!r} (its interpreter {python} is gone)")
        else:
            print(f"note: user kernel {name!r} at {spec.parent} ({python}) shadows this clone's; "
                  f"remove it with `jupyter kernelspec remove {name}` to use this clone's environments")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
