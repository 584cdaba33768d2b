"""What the web UI accepts from a browser: uploaded photos, question length, and how much history the model sees.

* :func:`load_upload` opens an upload as an upright RGB photo or says why not (in Chinese, for
  the learner); an ordinary phone photo (MPO, EXIF) gets no misleading note;
* :func:`discard_upload` deletes a refused upload from Gradio's temporary folder, so repeated
  large uploads cannot fill a shared class server's disk;
* :func:`message_problem` and :func:`bound_history` keep one long message from being answered
  and then replayed on every later turn: a message has a length limit, and the engine is given
  the image turn plus only the newest turns that fit a character budget.

Example:
    >>> bound_history([("q1", "a1"), ("q2", "a2")], max_chars=4)
    ([('q2', 'a2')], 1)
"""
from __future__ import annotations

import os
import re
import threading
import time
import warnings
from pathlib import Path

from helpers.settings import get_settings


class UploadError(ValueError):
    """An upload the UI refuses; the message is shown to the user as it is."""


# --------------------------------------------------------------------------- image checks


def _to_rgb(img, notes: list):
    """Any Pillow mode -> RGB the way a viewer would show it (alpha over white, 16 bit scaled)."""
    import numpy as np
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0  # 16-bit data in a 32-bit mode
        arr = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        notes.append(f"{mode} 高位深图片已缩放为 8 位")
        return Image.fromarray(arr, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] == 255:  # opaque everywhere: nothing to fill
            return rgba.convert("RGB")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        notes.append("透明部分已填成白色")
        return background
    if mode == "CMYK":
        notes.append("CMYK 颜色已转换为 RGB")
    return img if mode == "RGB" else img.convert("RGB")


_STRICT_LOCK = threading.Lock()


def _load_strict(img, file_bytes: int):
    """Decode fully, failing on truncated or corrupt files even where LMDeploy switched that check off.

    ``import lmdeploy`` sets Pillow's process-wide ``LOAD_TRUNCATED_IMAGES`` (half a photo then
    decodes with a grey rest, a broken data stream passes); an upload must be refused instead, so the
    flag is off while we decode, under a lock because the flag is global. The whole file goes to the
    decoder in one call: in 64 KiB pieces each piece waits for the GIL again, which many busy threads
    in a serving process make slow, and every upload waits while the lock is held
    (``benchmarks/upload_decode.py``).
    """
    from PIL import ImageFile

    img.decodermaxblock = max(img.decodermaxblock, file_bytes + 1)
    with _STRICT_LOCK:
        old = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            img.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = old


def load_upload(path, max_upload_mb: float | None = None, max_image_pixels: int | None = None, settings=None,
                timings: dict | None = None):
    """Open an uploaded file as an upright RGB photo, or say clearly why not.

    Args:
        path: the uploaded file.
        max_upload_mb: size limit in MiB (default: ``settings.max_upload_mb``).
        max_image_pixels: pixel limit (default: ``settings.max_image_pixels``).
        settings: a Settings (default: ``get_settings()``).
        timings: a dict that receives ``decode_s`` (reading and decoding the file) and ``convert_s``
            (EXIF rotation and conversion to RGB), in seconds.

    Returns:
        ``(image, notes)``: an RGB PIL image (EXIF rotation applied, first frame of an
        animation) and a list of Chinese notes on what was converted.

    Raises:
        UploadError: not a file, empty, too large, too many pixels, not an image, or corrupt;
            the message names the file and the limit.

    Example:
        >>> img, notes = load_upload("dish.png")   # doctest: +SKIP
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    S = settings or get_settings()
    max_mb = S.max_upload_mb if max_upload_mb is None else max_upload_mb
    max_px = S.max_image_pixels if max_image_pixels is None else max_image_pixels
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise UploadError(f"⚠️ 找不到上传的文件 {name}，请重新上传。")
    size_mb = path.stat().st_size / 2**20
    if size_mb == 0:
        raise UploadError(f"⚠️ {name} 是空文件，请重新上传照片。")
    if size_mb > max_mb:
        raise UploadError(f"⚠️ {name} 有 {size_mb:.1f} MB，超过上传上限 {max_mb:g} MB。请压缩或缩小后再上传。")

    def too_many(size_text: str):
        return UploadError(f"⚠️ {name} 像素太多（{size_text}），上限是 {max_px / 1e6:g} 百万像素。请缩小后再上传。")

    notes: list = []
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses before decoding; its message carries the pixel count.
        count = re.search(r"\((\d+) pixels\)", str(exc))
        raise too_many(f"约 {int(count.group(1)) / 1e6:.0f} 百万像素" if count else "超过 Pillow 的安全上限") from exc
    except UnidentifiedImageError as exc:
        raise UploadError(f"⚠️ {name} 不是图片（或是不支持的格式）。请上传 JPEG、PNG、WebP、GIF 或 BMP 照片。") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadError(f"⚠️ {name} 无法读取：{exc}") from exc
    with img:
        w, h = img.size
        if w * h > max_px:
            raise too_many(f"{w}×{h}，约 {w * h / 1e6:.0f} 百万像素")
        if w < 1 or h < 1:
            raise UploadError(f"⚠️ {name} 的尺寸是 {w}×{h}，不是一张可用的图片。")
        # A phone's MPO holds the photo plus a preview/depth frame: not an animation.
        if getattr(img, "n_frames", 1) > 1 and img.format != "MPO":
            img.seek(0)
            notes.append(f"动图共 {img.n_frames} 帧，只使用第一帧")
        try:
            _load_strict(img, path.stat().st_size)
            t1 = time.perf_counter()
            orientation = img.getexif().get(0x0112, 1)
            upright = ImageOps.exif_transpose(img)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise UploadError(f"⚠️ {name} 已损坏或不完整，无法解码（{exc}）。请换一张照片。") from exc
        if orientation in range(2, 9):  # exif_transpose acts on 2..8 only; 0 and 1 leave the pixels alone
            notes.append("已按 EXIF 方向信息旋转")
        rgb = _to_rgb(upright, notes)
        rgb.load()
    if timings is not None:
        timings.update(decode_s=round(t1 - t0, 5), convert_s=round(time.perf_counter() - t1, 5))
    return rgb, notes


def upload_folder() -> Path:
    """Where Gradio stores uploads (``GRADIO_TEMP_DIR``, else ``<tmp>/gradio``; as ``gradio.utils.get_upload_folder``)."""
    import tempfile

    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def discard_upload(path, folder=None) -> bool:
    """Delete an uploaded file (and its now empty hash folder) when it lies in Gradio's upload folder.

    Files elsewhere -- the example photos, a path typed by a script -- are never touched.

    Args:
        path: the uploaded file.
        folder: the upload folder (default: :func:`upload_folder`).

    Returns:
        True when the file was deleted.

    Example:
        >>> discard_upload("/etc/hostname")
        False
    """
    try:
        root = Path(folder).resolve() if folder else upload_folder()
        file = Path(path).resolve()
        if root not in file.parents or not file.is_file():
            return False
        file.unlink()
        if file.parent != root and not any(file.parent.iterdir()):
            file.parent.rmdir()
        return True
    except (OSError, ValueError):  # already gone, or a name the OS refuses: nothing to free
        return False


def message_problem(text: str, max_chars: int) -> str | None:
    """A Chinese message for the user when ``text`` is longer than ``max_chars``, else None.

    Example:
        >>> message_problem("x" * 5, 3)
        '⚠️ 这条问题有 5 个字，超过上限 3 个字，没有发给模型。请缩短后再问。'
    """
    if len(text) > max_chars:
        return f"⚠️ 这条问题有 {len(text)} 个字，超过上限 {max_chars} 个字，没有发给模型。请缩短后再问。"
    return None


def _chars(turn) -> int:
    prompt, answer = turn
    text = prompt[0] if isinstance(prompt, tuple) else prompt
    return len(str(text)) + len(str(answer))


def bound_history(history: list, max_chars: int) -> tuple:
    """The turns the engine is given: the image turn, then the newest turns within ``max_chars``.

    The first turn carries the photo (its prompt is ``(text, image)``) and is always kept, or
    the model would no longer see the picture; older turns after it are left out first.

    Args:
        history: ``[(prompt, answer), ...]`` as the UI stores it.
        max_chars: character budget for the text of the turns kept after the image turn.

    Returns:
        ``(kept_turns, number_left_out)``.

    Example:
        >>> bound_history([(("看图", "IMG"), "是烤鸭"), ("q2", "a2"), ("q3", "a3")], max_chars=4)
        ([(('看图', 'IMG'), '是烤鸭'), ('q3', 'a3')], 1)
    """
    head = history[:1] if history and isinstance(history[0][0], tuple) else []
    rest, kept, used = history[len(head):], [], 0
    for turn in reversed(rest):
        used += _chars(turn)
        if used > max_chars:
            break
        kept.append(turn)
    kept.reverse()
    return head + kept, len(rest) - len(kept)
