"""How the web UI serves a class: named sets of engine and queue settings, and the photo downscale they may use.

A profile gathers every setting that decides how many students one GPU serves:

* ``prescale``: downscale an uploaded photo, once at upload, to the size of the tile grid InternVL
  would cut it into (a 4032x3024 phone photo -> 1792x1344 = 4x3 tiles). The grid and so the
  tile count do not change (:func:`fit_to_grid` checks it), but every later turn's tiling starts
  from 2.4 million pixels instead of 12;
* ``preprocess_workers``: threads for LMDeploy's image preprocessing (LMDeploy 0.18 uses one);
* ``max_prefill_token_num``, ``max_batch_size``, ``cache_max_entry_count``: LMDeploy's PyTorch
  engine (tokens prefilled per step: a 13-tile photo is ~3,400 tokens; requests decoded at once;
  share of free GPU memory for the KV cache);
* ``concurrency``, ``max_queue``, ``max_threads``: Gradio (requests served at once, requests
  waiting, worker threads -- every streaming answer holds one while it waits for a token);
* ``stream_interval_s``: send the growing answer at most this often (the first text goes at once).

``baseline`` is the behaviour before the classroom measurements; ``class`` changes all of the
above. :data:`DEFAULT_PROFILE` names the one ``python -m helpers.serve.webui`` and notebook 03 use.

Example:
    >>> get_profile("baseline").prescale
    False
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ServeProfile:
    """Serving settings of the web UI (None: the engine's or library's own default)."""

    name: str
    prescale: bool = False  # downscale uploads to their tile grid's size at upload
    preprocess_workers: int | None = None  # LMDeploy preprocessing threads (None: LMDeploy's single one)
    max_prefill_token_num: int | None = None  # LMDeploy tokens prefilled per step (None: 8192 in 0.18)
    max_batch_size: int | None = None  # LMDeploy sequences per step (None: LMDeploy's per-card default)
    cache_max_entry_count: float | None = None  # KV cache share of free GPU memory (None: settings, 0.4)
    concurrency: int | None = None  # Gradio requests at once (None: the engine's capacity)
    max_queue: int = 64  # Gradio requests waiting; one more is refused
    max_threads: int = 40  # Gradio worker threads (its default)
    stream_interval_s: float = 0.0  # least time between two streamed updates of one answer
    executor: str | None = None  # LMDeploy's executor ("mp": the model runs in a child process, off the UI's GIL)

    def engine_options(self) -> dict:
        """The LMDeploy ``PytorchEngineConfig`` fields this profile sets.

        Example:
            >>> get_profile("baseline").engine_options()
            {}
        """
        return {k: v for k, v in (("max_prefill_token_num", self.max_prefill_token_num),
                                  ("max_batch_size", self.max_batch_size),
                                  ("distributed_executor_backend", self.executor)) if v is not None}


PROFILES = {
    "baseline": ServeProfile("baseline"),
    # Sized for 60-130 students on one 80 GB card at 2B: every session streams at once (LMDeploy
    # batches them), four images prefilled per step, room in the KV cache for ~150 image turns.
    "class": ServeProfile("class", prescale=True, preprocess_workers=4, max_prefill_token_num=16384,
                          max_batch_size=256, cache_max_entry_count=0.7, concurrency=160, max_queue=512,
                          max_threads=200, stream_interval_s=0.1),
}
# The same, with the model's forward passes in a child process: uploads, Gradio and the engine's
# scheduler no longer wait for the GPU worker's Python (one GIL in the UI's process).
PROFILES["class_mp"] = dataclasses.replace(PROFILES["class"], name="class_mp", executor="mp")
DEFAULT_PROFILE = "class"  # chosen by a same-run comparison on a GPU (docs/gpu-runs.md); the one line to change


def get_profile(name: str | None = None, **overrides) -> ServeProfile:
    """A profile by name (default :data:`DEFAULT_PROFILE`), with single settings replaced.

    Args:
        name: a key of :data:`PROFILES`.
        **overrides: fields to change; None values are ignored (command-line flags not given).

    Returns:
        A :class:`ServeProfile`.

    Example:
        >>> get_profile("class", concurrency=8).concurrency
        8
    """
    key = name or DEFAULT_PROFILE
    if key not in PROFILES:
        raise ValueError(f"unknown serving profile {key!r}; choose one of {sorted(PROFILES)}")
    return dataclasses.replace(PROFILES[key], **{k: v for k, v in overrides.items() if v is not None})


def engine_tiling(engine) -> dict:
    """How ``engine`` tiles an image: ``{min_num, max_num, image_size, use_thumbnail}``.

    Reads the TransformersEngine's attributes, or the checkpoint config LMDeploy's vision
    preprocessor holds (where :func:`helpers.serve.pipeline.make_pipeline` sets ``max_dynamic_patch``).

    Example:
        >>> engine_tiling(object())["max_num"]
        12
    """
    cfg = getattr(getattr(getattr(getattr(engine, "async_engine", None), "vl_encoder", None), "model", None),
                  "config", None)
    if cfg is not None:
        vision = getattr(cfg, "vision_config", None)
        return dict(min_num=int(getattr(cfg, "min_dynamic_patch", 1)), max_num=int(cfg.max_dynamic_patch),
                    image_size=int(getattr(cfg, "force_image_size", None) or getattr(vision, "image_size", 448)),
                    use_thumbnail=bool(getattr(cfg, "use_thumbnail", True)))
    return dict(min_num=int(getattr(engine, "min_dynamic_patch", 1)), max_num=int(getattr(engine, "max_dynamic_patch", 12)),
                image_size=int(getattr(engine, "image_size", 448)), use_thumbnail=bool(getattr(engine, "use_thumbnail", True)))


def fit_to_grid(image, min_num: int = 1, max_num: int = 12, image_size: int = 448, use_thumbnail: bool = True):
    """Downscale a photo to the size of the tile grid InternVL will cut it into; the grid stays the same.

    InternVL stretches every photo to ``cols x 448`` by ``rows x 448`` before cutting tiles, so a
    bigger photo only costs resize time on every turn. A photo no bigger than its grid is
    returned as it is. The grid is chosen again on the result and must be the original's.

    Args:
        image: an RGB PIL image.
        min_num, max_num, image_size, use_thumbnail: the engine's tiling (:func:`engine_tiling`).

    Returns:
        ``(image, tiles)``: the (possibly) smaller image and the tile count it gives (thumbnail included).

    Example:
        >>> from PIL import Image
        >>> small, tiles = fit_to_grid(Image.new("RGB", (4032, 3024)))
        >>> small.size, tiles
        ((1792, 1344), 13)
    """
    from helpers.tiling import choose_grid, tile_count

    cols, rows = choose_grid(image.width, image.height, min_num, max_num, image_size)
    tiles = tile_count(image.width, image.height, min_num, max_num, image_size, use_thumbnail)
    target = (cols * image_size, rows * image_size)
    if image.width * image.height <= target[0] * target[1]:
        return image, tiles
    from PIL import Image

    smaller = image.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)
    if choose_grid(*smaller.size, min_num, max_num, image_size) != (cols, rows):  # cannot happen; guards edits
        return image, tiles
    return smaller, tiles
