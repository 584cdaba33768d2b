"""Image paths from data files: join them the way XTuner does, and refuse what it cannot open.

XTuner's ``InternVL_V1_5_Dataset`` opens ``os.path.join(image_folder, record["image"])`` with
``Image.open``. Anything that call cannot open is replaced *silently* by another sample during
training, so this module decides, before training and without ever raising, whether a path
from a record will open and stays inside the image root:

* not a string, empty, a NUL byte or a lone surrogate (no file can have that name);
* ends in ``/`` or ``/.`` (pathlib would quietly normalise it to the file, ``open`` fails);
* ``..`` components, absolute paths outside the allowed roots, symlinks that leave the root.

Example:
    >>> from pathlib import Path
    >>> safe_image_path(Path("/data"), "dish/a.jpg/")[1][0]
    'not_a_file_path'
"""
from __future__ import annotations

import os
import reprlib
from pathlib import Path, PurePosixPath

_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother = 80, 80


def short_repr(value) -> str:
    """``repr`` cut to about 80 characters and a few levels, for messages about arbitrary input.

    Example:
        >>> len(short_repr("x" * 1000)) < 90
        True
    """
    try:
        return _REPR.repr(value)
    except (RecursionError, ValueError):  # reprlib bounds depth, but be safe with odd objects
        return f"<{type(value).__name__}>"


def path_form_problem(rel) -> tuple | None:
    """The reason XTuner's ``open(os.path.join(root, rel))`` cannot open ``rel``, or None.

    Only the string is looked at (no file access): type, emptiness, characters, trailing
    ``/`` or ``/.``.

    Returns:
        ``(kind, message)`` or None.

    Example:
        >>> path_form_problem("a\\x00b.jpg")[0], path_form_problem("ok.jpg")
        ('bad_path_chars', None)
    """
    if not isinstance(rel, str) or not rel.strip():
        return "empty_path", f"image path must be a non-empty string, got {short_repr(rel)}"
    if "\x00" in rel:
        return "bad_path_chars", f"{short_repr(rel)} contains a NUL byte; no file can have that name"
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "bad_path_chars", (f"{short_repr(rel)} contains a lone surrogate (broken Unicode); "
                                  "no file can have that name")
    tail = rel.replace("\\", "/").rsplit("/", 1)[-1]
    if tail in ("", ".", ".."):
        return "not_a_file_path", (f"{short_repr(rel)} ends in '/{tail}': it names a folder, and XTuner's "
                                   "Image.open fails on it (then trains on another sample instead)")
    return None


def safe_image_path(image_root, rel, extra_roots=()) -> tuple:
    """Join ``rel`` onto ``image_root`` as XTuner does; refuse anything that cannot open or leaves it.

    Never raises, whatever ``rel`` is.

    Args:
        image_root: folder the paths are relative to (XTuner's ``image_folder``).
        rel: the record's path (any JSON value).
        extra_roots: folders where *absolute* paths are allowed (the converter's ``upright/``).

    Returns:
        ``(path, None)`` or ``(None, (kind, message))``.

    Example:
        >>> safe_image_path(Path("/data"), "../etc/passwd")[1][0]
        'path_escape'
    """
    form = path_form_problem(rel)
    if form:
        return None, form
    try:
        if os.path.isabs(rel):
            real = os.path.realpath(rel)
            for root in extra_roots:
                if _inside(real, os.path.realpath(root)):
                    return Path(rel), None
            return None, ("absolute_path", f"{short_repr(rel)} is absolute; paths must be relative to the image root")
        if ".." in PurePosixPath(rel.replace("\\", "/")).parts:
            return None, ("path_escape", f"{short_repr(rel)} contains '..' and may leave the image root")
        joined = os.path.join(str(image_root), rel)
        real = os.path.realpath(joined)
        if not _inside(real, os.path.realpath(image_root)):
            return None, ("symlink_escape", f"{short_repr(rel)} resolves to {real}, outside the image root")
    except (OSError, ValueError) as e:  # e.g. a name too long for the file system
        return None, ("bad_path", f"{short_repr(rel)} cannot be resolved: {e}")
    return Path(joined), None


def image_key(image_root, rel) -> str:
    """One spelling per image file: ``u/x.jpg``, ``./u/x.jpg`` and ``u//x.jpg`` give the same key.

    The key is the path of the resolved file relative to the resolved root (symlinked aliases
    inside the root collapse too), so it does not depend on where the data lives.

    Example:
        >>> image_key("/data", "./u//x.jpg")
        'u/x.jpg'
    """
    root = os.path.realpath(image_root)
    real = os.path.realpath(os.path.join(root, rel))
    return os.path.relpath(real, root).replace(os.sep, "/")


def find_image_root(root, rel_paths) -> Path:
    """``root`` or ``root/images``: whichever holds more of ``rel_paths``.

    FoodieQA keeps photos in ``images/`` but its ``food_file`` may or may not start with
    ``images/``; this decides once so that XTuner gets one ``image_folder``.

    Example:
        >>> find_image_root("/nonexistent", ["a.jpg"]).name
        'nonexistent'
    """
    root = Path(root)
    sample = [p for p in list(rel_paths)[:200] if path_form_problem(p) is None]
    here = sum(_is_file(root, p) for p in sample)
    below = sum(_is_file(root / "images", p) for p in sample)
    return root / "images" if below > here else root


def _is_file(root: Path, rel: str) -> bool:
    try:
        return os.path.isfile(os.path.join(root, rel))
    except (OSError, ValueError):
        return False


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)
