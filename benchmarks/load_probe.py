"""One request's parts measured alone, on an idle machine, with the photo the load test uploads.

The web UI's log gives the parts it can see (upload decode, LMDeploy's tiling, the engine's time to
its first piece, decode). What happens inside the engine before the first piece -- the vision
encoder and the prefill on the GPU -- LMDeploy 0.18 does not report, so they are measured here:

* :func:`tiling_probe` (CPU): JPEG decode, then InternVL's tiling and tensors of the full photo
  and of the photo downscaled to its tile grid (:func:`helpers.serve.profiles.fit_to_grid`),
  with the course's tiling code (the same algorithm as LMDeploy's InternVL preprocessing);
* :func:`model_probe` (GPU, or CPU for tests): the checkpoint loaded with transformers; the vision
  encoder's forward over the photo's tiles, and the language model's prefill of a prompt as long
  as one image turn, each timed with CUDA events (median of ``repeats`` after one warm-up).
  These are transformers' kernels, not LMDeploy's: an upper bound on the engine's own.

Example:
    >>> from benchmarks.load_probe import tiling_probe          # doctest: +SKIP
    >>> tiling_probe("photo.jpg", dict(min_num=1, max_num=12, image_size=448, use_thumbnail=True))  # doctest: +SKIP
"""
from __future__ import annotations

import statistics
import time


def _median_time(fn, repeats: int, cuda: bool) -> float:
    """Median seconds of ``fn()`` (one warm-up); CUDA events on a GPU, perf_counter otherwise."""
    import torch

    fn()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 5)


def tiling_probe(photo, tiling: dict, repeats: int = 3) -> dict:
    """CPU seconds to decode ``photo`` and to tile it, full size and downscaled to its grid.

    Args:
        photo: a JPEG path.
        tiling: ``{min_num, max_num, image_size, use_thumbnail}`` (:func:`helpers.serve.profiles.engine_tiling`).
        repeats: timed runs (median).

    Returns:
        ``{"photo", "size", "tiles", "decode_s", "tiling_full_s", "prescale_s", "tiling_prescaled_s", "served"}``.
    """
    from PIL import Image

    from helpers.serve.profiles import fit_to_grid
    from helpers.tiling import to_pixel_values

    def decode():
        with Image.open(photo) as img:
            return img.convert("RGB")

    image = decode()
    small, tiles = fit_to_grid(image, **tiling)
    args = dict(max_num=tiling["max_num"], image_size=tiling["image_size"], use_thumbnail=tiling["use_thumbnail"],
                min_num=tiling["min_num"])
    n_full, n_small = to_pixel_values(image, **args).shape[0], to_pixel_values(small, **args).shape[0]
    t = {}
    for name, fn in (("decode_s", decode), ("tiling_full_s", lambda: to_pixel_values(image, **args)),
                     ("prescale_s", lambda: fit_to_grid(image, **tiling)),
                     ("tiling_prescaled_s", lambda: to_pixel_values(small, **args))):
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        t[name] = round(statistics.median(runs), 5)
    return {"photo": str(photo), "size": list(image.size), "served": list(small.size), "tiles": tiles,
            "tiles_full": int(n_full), "tiles_prescaled": int(n_small), **t}


def model_probe(model_path, photo, tiling: dict, repeats: int | None = None, device: str | None = None) -> dict:
    """Vision encoder forward and LLM prefill of one image turn, with transformers, timed alone.

    Args:
        model_path: the checkpoint the web UI served.
        photo: the photo (its tiles are encoded).
        tiling: as in :func:`tiling_probe`.
        repeats: timed runs (median; default 5 on a GPU, 2 on the CPU).
        device: "cuda" or "cpu" (default: cuda when available).

    Returns:
        ``{"device", "timer", "tiles", "prefill_tokens", "vision_forward_s", "llm_prefill_s", "text_prefill_s"}``;
        ``text_prefill_s`` is the same prompt without its image tokens.
    """
    import torch
    from PIL import Image

    from helpers.models import load_model
    from helpers.tiling import to_pixel_values

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    repeats = repeats or (5 if cuda else 2)
    model, _ = load_model(model_path, device=device)
    dtype = next(model.parameters()).dtype
    with Image.open(photo) as img:
        pixels = to_pixel_values(img.convert("RGB"), max_num=tiling["max_num"], image_size=tiling["image_size"],
                                 use_thumbnail=tiling["use_thumbnail"], min_num=tiling["min_num"])
    pixels = pixels.to(device, dtype)
    n_image = pixels.shape[0] * model.num_image_token
    text_len = 64  # system prompt, template and a short question around the image
    llm = model.language_model
    ids = torch.randint(0, 1000, (1, n_image + text_len), device=device)
    with torch.inference_mode():
        vision_s = _median_time(lambda: model.extract_feature(pixels), repeats, cuda)
        prefill_s = _median_time(lambda: llm(input_ids=ids, use_cache=True), repeats, cuda)
        text_s = _median_time(lambda: llm(input_ids=ids[:, :text_len], use_cache=True), repeats, cuda)
    out = {"device": torch.cuda.get_device_name() if cuda else "cpu",
           "timer": "CUDA events" if cuda else "perf_counter", "kernels": "transformers (eager/sdpa), not LMDeploy's",
           "dtype": str(dtype).replace("torch.", ""), "tiles": int(pixels.shape[0]), "prefill_tokens": int(ids.shape[1]),
           "vision_forward_s": vision_s, "llm_prefill_s": prefill_s, "text_prefill_s": text_s}
    del model, llm, pixels
    if cuda:
        torch.cuda.empty_cache()
    return out
