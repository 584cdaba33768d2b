"""Image checks for the dataset checker: header facts, completeness, modes -- without decoding when possible.

XTuner opens every training image with ``Image.open(path).convert('RGB')``. This module finds,
per distinct file, what would break that or change the picture, as cheaply as possible:
headers are read lazily (size, mode, EXIF without decoding pixels); a JPEG that ends with its
end-of-image marker is complete and is not decoded; one without it is decoded in draft mode
(1/8 scale: every byte is still entropy-decoded, so truncation is caught, but the inverse DCT
is 64x cheaper); other formats are decoded fully; many decodes go to a process pool.

What it cannot see: a JPEG cut short and then given an end marker (FF D9) decodes without any
error -- Pillow pads the missing part with grey and cannot tell either. Only
``always_decode=True`` looks at the pixels, and then a bottom row of exactly uniform mid-grey
is reported as ``grey_tail`` (a warning: a real photo can end in flat grey).

Example:
    >>> inspect_image("no/such.jpg")["problems"][0][0]
    'missing_image'
"""
from __future__ import annotations

import functools
import os
import stat
import warnings
from dataclasses import dataclass

EXIF_ORIENTATION = 0x0112
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")  # accepted only when every pixel is opaque
BLIND_SPOT = ("a JPEG cut short and then given an end marker decodes as grey without an error; "
              "only always_decode=True looks at pixels (grey_tail warning)")


@dataclass(frozen=True)
class ImageLimits:
    """Thresholds of the image checks (keyword arguments of the check functions)."""

    min_side: int = 32  # shorter side below this is "too_small" (icons, broken thumbnails)
    max_pixels: int = 64_000_000  # more pixels is "too_large" (a 48 MP phone photo still passes)
    max_aspect: float = 10.0  # long/short side above this is "extreme_aspect" (12 tiles max)
    allowed_modes: tuple = ("1", "L", "P", "RGB")  # modes convert("RGB") turns into the same picture
    always_decode: bool = False  # draft-decode every JPEG, not only those without an end marker



# ----------------------------------------------------------------------------- images

def inspect_image(path: str, limits: ImageLimits = ImageLimits(), decode: bool = True) -> dict:
    """Check one image file: header for size/mode/EXIF, then truncation (end marker or decode).

    Args:
        path: image file.
        limits: size/mode thresholds.
        decode: run the pixel decode when the header phase says it is needed; False leaves
            that to the caller (``needs_decode`` then says so; see :func:`inspect_images`).

    Returns:
        ``{"size": (w, h) as stored, "upright": (w, h) after EXIF, "mode", "format",
        "orientation", "decoded": bool, "problems": [(kind, message, severity), ...]}``
        (size None if unreadable; plus ``needs_decode`` when ``decode`` is False).

    Example:
        >>> inspect_image("no/such.jpg")["problems"][0][0]
        'missing_image'
    """
    from PIL import Image, JpegImagePlugin, UnidentifiedImageError

    out = {"size": None, "upright": None, "mode": None, "format": None, "orientation": None,
           "decoded": False, "problems": []}
    bad = out["problems"].append
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            bad(("unreadable_image", "not a regular file (a folder or a device)", "error"))
            return out
        if st.st_size == 0:
            bad(("empty_file", "image file has zero bytes", "error"))
            return out
    except FileNotFoundError:
        bad(("missing_image", "image file does not exist", "error"))
        return out
    except (OSError, ValueError) as e:  # a folder, no permission, a name the OS refuses
        bad(("unreadable_image", f"cannot read the file: {e}", "error"))
        return out
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # parses headers only; no pixel is decoded here
                (w, h), mode = im.size, im.mode
                orient = im.getexif().get(EXIF_ORIENTATION, 1)
                transparent = mode == "P" and "transparency" in im.info
                jpeg = isinstance(im, JpegImagePlugin.JpegImageFile)
                out.update(size=(w, h), mode=mode, format=im.format, orientation=orient,
                           upright=(h, w) if orient in (5, 6, 7, 8) else (w, h))
    except Image.DecompressionBombError as e:
        bad(("too_large", f"PIL refuses it as a decompression bomb: {e}", "error"))
        return out
    except UnidentifiedImageError:
        bad(("not_an_image", "not a decodable image (PIL cannot identify it)", "error"))
        return out
    except Exception as e:  # Pillow's format plugins raise many kinds (struct.error, IndexError, ...) on bad headers
        bad(("corrupt_image", f"header unreadable: {type(e).__name__}: {e}", "error"))
        return out
    # An alpha channel changes the picture under convert('RGB') only where a pixel is not
    # opaque, and only the pixels can tell (one real FoodieQA photo is RGBA, all alpha 255).
    alpha = mode in ALPHA_MODES or transparent
    if mode not in limits.allowed_modes and not alpha:
        bad(("unsupported_mode", f"mode {mode}: convert('RGB') changes the picture "
             f"(allowed: {', '.join(limits.allowed_modes)}, or an alpha mode with every pixel opaque)", "error"))
    if orient not in range(1, 9):
        bad(("bad_exif_orientation", f"EXIF orientation {orient!r} is not 1..8", "warning"))
    # Never decode a pixel bomb; a JPEG that ends with its end marker was written completely.
    needs = _size_ok(w, h, limits, bad) and (alpha or not jpeg or limits.always_decode or not _jpeg_complete(path))
    if needs and decode:
        out["problems"] += decode_problems(path, grey_tail=limits.always_decode)
        out["decoded"] = True
    elif not decode:
        out["needs_decode"] = needs
    return out


def decode_problems(path: str, grey_tail: bool = False) -> list:
    """Decode the pixels (JPEG in draft mode) and return ``[(kind, message, severity)]``.

    Draft mode makes libjpeg scale by 1/8 inside the inverse DCT: every byte of the scan is
    still entropy-decoded, so a truncated stream fails, at a fraction of the cost. An image
    with an alpha channel is refused only when some pixel is not fully opaque.

    Args:
        path: image file.
        grey_tail: also warn when a JPEG's bottom row is uniform mid-grey (what libjpeg puts
            where data is missing; see the module's note on what cannot be seen).

    Example:
        >>> decode_problems("no/such.png")[0][0]
        'missing_image'
    """
    from PIL import Image, ImageFile, JpegImagePlugin

    # A caller may have switched this on globally; then PIL pads truncated files with grey.
    saved, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if isinstance(im, JpegImagePlugin.JpegImageFile):
                    im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
                found = _transparency_problem(im)
                if grey_tail and isinstance(im, JpegImagePlugin.JpegImageFile):
                    found += _grey_tail_problem(im)
    except FileNotFoundError:
        return [("missing_image", "image file does not exist", "error")]
    except Exception as e:  # as in inspect_image: decoders fail in many ways on broken data
        kind = "truncated" if "truncat" in str(e).lower() else "corrupt_image"
        return [(kind, f"decoding failed: {e}", "error")]
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
    return found


def _transparency_problem(im) -> list:
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode not in ALPHA_MODES:
        return []
    alpha = im.getchannel(len(im.getbands()) - 1)  # "A", or "a" in premultiplied modes
    if alpha.getextrema()[0] == 255:
        return []
    hidden = alpha.histogram()[:255]
    return [("unsupported_mode", f"mode {im.mode} with {sum(hidden)} pixels not fully opaque: convert('RGB') "
             "shows what lies under the transparency (flatten onto a background first)", "error")]


def _grey_tail_problem(im) -> list:
    row = im.convert("RGB").crop((0, im.height - 1, im.width, im.height))
    if all(band == (128, 128) for band in row.getextrema()):
        return [("grey_tail", "the bottom row is exactly mid-grey (128, 128, 128): the JPEG may have been "
                 "cut short and given an end marker; look at the picture", "warning")]
    return []


def _jpeg_complete(path: str) -> bool:
    """True when the file ends with the JPEG end-of-image marker (FF D9).

    Entropy-coded data byte-stuffs every FF, so FF D9 cannot occur inside a scan: a file that
    ends with it was written to the end. Files without it (cut short, or carrying a trailer
    such as a motion photo's video) get the draft decode, which tells the two apart.
    """
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 64))
        return f.read().rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9")


def _size_ok(w: int, h: int, limits: ImageLimits, bad) -> bool:
    if min(w, h) < limits.min_side:
        bad(("too_small", f"{w}x{h}: shorter side < {limits.min_side} px", "error"))
    if w * h > limits.max_pixels:
        bad(("too_large", f"{w}x{h} = {w * h} px > {limits.max_pixels}", "error"))
        return False
    if min(w, h) > 0 and max(w, h) / min(w, h) > limits.max_aspect:
        bad(("extreme_aspect", f"{w}x{h}: aspect ratio > {limits.max_aspect}", "error"))
    return True


def inspect_images(paths, limits: ImageLimits = ImageLimits(), workers: int | None = None) -> dict:
    """:func:`inspect_image` for many paths: headers here, pixel decodes in a process pool.

    Header reads take well under a millisecond and stay in this process (a pool would spend
    more on start-up and pickling); only the images that must be decoded -- JPEGs without an
    end marker, other formats, or all with ``always_decode`` -- are spread over processes.

    Args:
        paths: image paths (duplicates are checked once).
        limits: thresholds.
        workers: processes for decoding; None = CPU count; 1 = all in this process.

    Returns:
        ``{path: result of inspect_image}``.

    Example:
        >>> inspect_images([])
        {}
    """
    results = {p: inspect_image(p, limits, decode=False) for p in dict.fromkeys(str(p) for p in paths)}
    todo = [p for p, r in results.items() if r.pop("needs_decode", False)]
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    if workers == 1 or len(todo) < 16:  # spawning costs ~0.2 s a worker
        decoded = [decode_problems(p, limits.always_decode) for p in todo]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        chunk = max(1, min(32, len(todo) // (workers * 4)))
        # spawn, not fork: callers (notebooks) may hold torch threads, which fork can deadlock.
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
            decoded = list(pool.map(functools.partial(decode_problems, grey_tail=limits.always_decode),
                                    todo, chunksize=chunk))
    for p, problems in zip(todo, decoded):
        results[p]["problems"] += problems
        results[p]["decoded"] = True
    return results
