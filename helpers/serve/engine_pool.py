"""What the web UI serves: example images, one engine per model loaded on first use, and labels."""
from __future__ import annotations

import logging

import json
import os
import threading
from pathlib import Path

from helpers.settings import get_settings


log = logging.getLogger("helpers.serve.webui")

def example_images(settings=None, limit: int = 8) -> list:
    """Food photos to offer as clickable examples: one per dish from the data root.

    Args:
        settings: a Settings (default: ``get_settings()``); uses ``data_root``.
        limit: most examples.

    Returns:
        ``[(path, caption), ...]``; empty when the data set is not there.
    """
    S = settings or get_settings()
    root = Path(S.data_root)
    found, seen = [], set()
    if S.sivqa_file.is_file():
        try:
            records = json.loads(S.sivqa_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("examples: cannot read %s: %s", S.sivqa_file, exc)
            records = []
        for rec in records if isinstance(records, list) else []:
            meta = rec.get("food_meta") or {} if isinstance(rec, dict) else {}
            rel, dish = meta.get("food_file"), meta.get("food_name") or rec.get("food_name")
            if not rel or dish in seen:
                continue
            for candidate in (root / rel, root / "images" / rel):
                if candidate.is_file():
                    found.append((str(candidate), str(dish)))
                    seen.add(dish)
                    break
            if len(found) >= limit:
                return found
    if not found and (root / "images").is_dir():
        for path in sorted((root / "images").rglob("*")):
            if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"):
                found.append((str(path), path.stem))
                if len(found) >= limit:
                    break
    return found


class EnginePool:
    """The models the UI can switch between, each loaded once on first use and shared by all sessions.

    Args:
        models: ``{label: engine object or checkpoint directory}`` in display order.
        engine: engine kind for directories ("lmdeploy"/"transformers"; default: settings.engine).
        settings: a Settings.
        profile: a :class:`helpers.serve.profiles.ServeProfile` (LMDeploy settings and preprocessing
            threads of the engines it loads; default: the default profile).
    """

    def __init__(self, models: dict, engine: str | None = None, settings=None, profile=None):
        from helpers.serve.profiles import get_profile

        self.settings = settings or get_settings()
        self.profile = profile or get_profile()
        self.kind = engine or self.settings.engine
        self.models = dict(models)
        self.engines: dict = {k: v for k, v in self.models.items() if not isinstance(v, (str, os.PathLike))}
        self._locks = {k: threading.Lock() for k in self.models}

    @property
    def labels(self) -> list:
        return list(self.models)

    def get(self, label: str):
        """The engine for ``label``, loading it on first use."""
        if label not in self.models:
            raise KeyError(f"unknown model {label!r}; choose one of {self.labels}")
        with self._locks[label]:
            if label not in self.engines:
                from helpers.serve.pipeline import make_pipeline

                log.info("loading %s from %s (profile %s)", label, self.models[label], self.profile.name)
                self.engines[label] = self._load(make_pipeline, self.models[label])
            return self.engines[label]

    def _load(self, make_pipeline, path):
        from helpers.serve.timing import instrument_lmdeploy_preprocess

        if self.kind != "lmdeploy":
            return make_pipeline(path, engine=self.kind, settings=self.settings)
        P = self.profile
        pipe = make_pipeline(path, engine="lmdeploy", settings=self.settings, engine_options=P.engine_options(),
                             cache_max_entry_count=P.cache_max_entry_count)
        if not instrument_lmdeploy_preprocess(pipe, workers=P.preprocess_workers):
            log.warning("LMDeploy keeps no vision preprocessor where expected: no preprocessing timings")
        return pipe

    def capacity(self) -> int:
        """How many requests the engines can take at once (the queue's concurrency limit)."""
        loaded = [getattr(e, "max_concurrency", 1) for e in self.engines.values()]
        if loaded:
            return max(1, min(loaded))
        return 1 if self.kind == "transformers" else 8


def _label(kind: str, value) -> str:
    path = value if isinstance(value, (str, os.PathLike)) else getattr(value, "model_path", None)
    return f"{kind}：{Path(path).name if path else getattr(value, 'engine_name', 'engine')}"
