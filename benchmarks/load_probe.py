"""One request's parts measured alone, on an idle machine, with the photo the load test uploads.

The web UI's log gives the parts it can see (upload decode, LMDeploy's tiling, the engine's time to
its first piece, decode). What happens inside the engine before the first piece -- the vision
encoder and the prefill on the GPU -- LMDeploy 0.18 does not report, so they are measured here:

* :func:`ui_probe` (the idle UI): one session's text-only turns against one session's image turns,
  the engine's time to its first token for each (their difference: what one image costs);

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


def ui_probe(url, photo, log_path) -> dict:
    """On the idle UI: one session's 3 text-only turns, then one session's 3 image turns.

    Args:
        url: the running web UI.
        photo: the photo of the image turns.
        log_path: the UI's log, for its TIMING lines.

    Returns:
        ``{"text_only": {...}, "one_image": {...}}``: engine TTFT, prompt tokens and LMDeploy preprocessing of
        each turn (server side), the client's first-token times, failures. Their difference is what one image
        costs an idle engine (preprocessing, vision encoder, the longer prefill).
    """
    from benchmarks.load_sessions import Session, timings_between

    out = {}
    for name, with_photo in (("text_only", False), ("one_image", True)):
        t_wall = time.time()
        s = Session(0, url, photo, "probe-" + name, [], 3, (16, 0.8, 0.8, False), time.monotonic() + 120, 0.0)
        if not with_photo:  # no upload: the questions go to the engine without an image
            s.run = _text_only_run(s)
        s.start()
        s.join(130)
        time.sleep(0.5)
        recs = timings_between(log_path, t_wall, time.time())
        turns = [r for r in recs if r.get("kind") == "turn"]
        prep = [r for r in recs if r.get("kind") == "lmdeploy_preprocess"]
        out[name] = {"engine_ttft_s": [r.get("engine_ttft_s") for r in turns],
                     "tokens_in": [r.get("tokens_in") for r in turns],
                     "preprocess_s": [round(p["wait_s"] + p["run_s"], 5) for p in prep],
                     "client_ttft_s": [r["ttft_s"] for r in s.records], "failures": s.failures}
    return out


def _text_only_run(session):
    """A session's run() that asks its questions without uploading a photo."""
    def run():
        from gradio_client import Client

        from helpers.serve.timing import question_key

        try:
            client = Client(session.url, verbose=False)
            for turn in range(1, session.turns + 1):
                question, submitted, t0 = f"第{turn}问：你好，请介绍一道中国菜。", time.time(), time.perf_counter()
                _, token, text = session.ask(client, question, 120)
                session.records.append(dict(q=question_key(question), submitted=submitted, ttft_s=token,
                                            text_s=text, turn_s=time.perf_counter() - t0))
            client.close()
        except Exception as exc:  # reported with the probe; the sweep still runs
            session.failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    return run
