"""InternVL's dynamic high-resolution tiling, written out step by step.

InternVL2 sees an image as a few 448x448 *tiles*. It picks a grid of ``cols x rows`` tiles
whose shape is closest to the photo's aspect ratio (at most ``max_num`` tiles), resizes the
photo to exactly ``448*cols x 448*rows``, cuts it row by row into tiles and, when there is
more than one tile, adds a 448x448 *thumbnail* of the whole photo so the model also sees the
global layout. Each tile becomes 256 image tokens in the language model (448 px / 14 px patches
= 32x32 patches; pixel shuffle with ratio 0.5 merges them to 16x16).

This module reproduces, pixel for pixel, what XTuner's ``InternVL_V1_5_Dataset`` (training) and
LMDeploy's InternVL vision model (serving) do, so the course can show and count tiles without
either package. ``tests/test_tiling.py`` checks the equality against both.

Example:
    >>> from PIL import Image
    >>> choose_grid(4032, 3024)          # a 4:3 phone photo
    (4, 3)
    >>> tile_count(4032, 3024)           # 12 tiles + 1 thumbnail
    13
    >>> image_tokens(4032, 3024)
    3328
    >>> len(dynamic_preprocess(Image.new("RGB", (800, 600)), max_num=6))
    7
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# ImageNet statistics, the normalisation InternViT was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def candidate_grids(min_num: int = 1, max_num: int = 12) -> list:
    """All tile grids InternVL may choose, in the order it tries them.

    Args:
        min_num: fewest tiles allowed (``min_dynamic_patch``).
        max_num: most tiles allowed (``max_dynamic_patch``).

    Returns:
        ``(cols, rows)`` tuples with ``min_num <= cols*rows <= max_num``, sorted by tile count.

    Example:
        >>> candidate_grids(1, 3)[:3]
        [(1, 1), (1, 2), (2, 1)]
    """
    if min_num < 1 or max_num < min_num:
        raise ValueError(f"need 1 <= min_num <= max_num, got min_num={min_num}, max_num={max_num}")
    # InternVL gathers the grids in a Python *set* and then sorts it by tile count. The sort is
    # stable, so grids with the same count (e.g. 2x3 and 3x2) keep the set's hash order, and that
    # order decides an exact tie between two of them. Filling the set in the same sequence
    # (n = min_num..max_num; for each n, cols outer and rows inner up to n) keeps every tie
    # identical to InternVL's.
    grids = set()
    for n in range(min_num, max_num + 1):
        for cols in range(1, n + 1):
            for rows in range(1, n + 1):
                if min_num <= cols * rows <= max_num:
                    grids.add((cols, rows))
    return sorted(grids, key=lambda grid: grid[0] * grid[1])


def choose_grid(width: int, height: int, min_num: int = 1, max_num: int = 12, image_size: int = 448) -> tuple:
    """The ``(cols, rows)`` grid InternVL tiles a ``width x height`` image into.

    The grid whose ``cols/rows`` is closest to ``width/height`` wins. When several grids are
    equally close (e.g. 1x1, 2x2, 3x3 for a square photo), a later grid in
    :func:`candidate_grids` order (= more tiles) replaces the current pick only if the photo
    has more than half the pixels that grid would hold, so small images are not blown up
    into many tiles.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        min_num: fewest tiles.
        max_num: most tiles.
        image_size: tile side in pixels.

    Returns:
        ``(cols, rows)``.

    Example:
        >>> choose_grid(448, 448), choose_grid(896, 896), choose_grid(20, 2000, max_num=6)
        ((1, 1), (2, 2), (1, 6))
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_num, max_num):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * image_size * image_size * cols * rows:
            best = (cols, rows)
    return best


def tile_count(width: int, height: int, min_num: int = 1, max_num: int = 12, image_size: int = 448,
               use_thumbnail: bool = True) -> int:
    """How many 448 px tiles (thumbnail included) an image becomes.

    Note: XTuner's ``total_image_token`` (used only to group samples by length) always adds the
    thumbnail, even for a single tile; this function counts what is really fed to the model.

    Args:
        width: image width.
        height: image height.
        min_num: fewest tiles.
        max_num: most tiles.
        image_size: tile side.
        use_thumbnail: whether a thumbnail is added when there is more than one tile.

    Returns:
        Number of tiles.

    Example:
        >>> tile_count(448, 448), tile_count(1344, 448, max_num=6)
        (1, 4)
    """
    cols, rows = choose_grid(width, height, min_num, max_num, image_size)
    tiles = cols * rows
    return tiles + 1 if use_thumbnail and tiles > 1 else tiles


def image_tokens(width: int, height: int, min_num: int = 1, max_num: int = 12, image_size: int = 448,
                 use_thumbnail: bool = True, patch_size: int = 14, downsample_ratio: float = 0.5) -> int:
    """Number of ``<IMG_CONTEXT>`` tokens the language model sees for one image.

    Args:
        width: image width.
        height: image height.
        min_num: fewest tiles.
        max_num: most tiles.
        image_size: tile side.
        use_thumbnail: add the thumbnail tile.
        patch_size: ViT patch side (InternViT: 14).
        downsample_ratio: pixel-shuffle ratio (0.5 merges 2x2 patches into one token).

    Returns:
        ``tiles * (image_size/patch_size)**2 * downsample_ratio**2`` (256 per 448 px tile).

    Example:
        >>> image_tokens(448, 448)
        256
    """
    per_tile = int((image_size // patch_size) ** 2 * downsample_ratio ** 2)
    return tile_count(width, height, min_num, max_num, image_size, use_thumbnail) * per_tile


def _resample_for(image: Image.Image) -> int:
    # InternVL calls ``image.resize`` without a filter, i.e. Pillow's default: bicubic, except
    # nearest for palette and 1-bit images. Spelling it out keeps the behaviour identical.
    return Image.Resampling.NEAREST if image.mode in ("1", "P") else Image.Resampling.BICUBIC


def dynamic_preprocess(image: Image.Image, min_num: int = 1, max_num: int = 12, image_size: int = 448,
                       use_thumbnail: bool = True) -> list:
    """Cut an image into InternVL tiles (plus the thumbnail).

    Args:
        image: a PIL image (InternVL feeds RGB).
        min_num: fewest tiles.
        max_num: most tiles.
        image_size: tile side in pixels.
        use_thumbnail: append a whole-image ``image_size`` square when there is more than one tile.

    Returns:
        PIL images of ``image_size x image_size``: the tiles row by row (left to right, top to
        bottom), then the thumbnail.

    Example:
        >>> tiles = dynamic_preprocess(Image.new("RGB", (1000, 500)), max_num=6)
        >>> len(tiles), tiles[0].size
        (3, (448, 448))
    """
    cols, rows = choose_grid(image.width, image.height, min_num, max_num, image_size)
    resample = _resample_for(image)
    # The photo is stretched to fill the grid exactly: aspect ratio is only approximately kept.
    resized = image.resize((cols * image_size, rows * image_size), resample)
    tiles = []
    for row in range(rows):
        for col in range(cols):
            left, top = col * image_size, row * image_size
            tiles.append(resized.crop((left, top, left + image_size, top + image_size)))
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((image_size, image_size), resample))
    return tiles


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or f"<{type(source).__name__}>"


def load_image(path_or_file) -> Image.Image:
    """Open a photo the way a viewer shows it: EXIF rotation applied, RGB.

    Phones store many photos sideways and record the turn in the EXIF ``Orientation`` tag;
    ``Image.open`` alone returns the sideways pixels.

    Args:
        path_or_file: a path, a binary file object, or raw ``bytes``.

    Returns:
        An upright RGB PIL image, fully loaded (the file is closed).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a readable image (the message names it).

    Example:
        >>> load_image("artifacts/data/foodieqa-synth/images/...jpeg").mode  # doctest: +SKIP
        'RGB'
    """
    name = _describe(path_or_file)
    source = io.BytesIO(path_or_file) if isinstance(path_or_file, (bytes, bytearray)) else path_or_file
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise FileNotFoundError(f"image file not found: {name}")
    try:
        with Image.open(source) as img:
            img.load()  # decode now so truncated files fail here, naming the file
            upright = ImageOps.exif_transpose(img)
            return upright.convert("RGB")
    except UnidentifiedImageError as exc:
        raise ValueError(f"{name} is not an image Pillow can read") from exc
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{name} could not be decoded as an image: {exc}") from exc


def to_pixel_values(image, max_num: int = 12, image_size: int = 448, use_thumbnail: bool = True,
                    min_num: int = 1):
    """The ``pixel_values`` tensor InternVL's vision encoder gets for one image.

    Same result as XTuner's ``InternVL_V1_5_Dataset`` and LMDeploy's preprocessing: tiles from
    :func:`dynamic_preprocess`, each bicubic-resized to ``image_size`` (a no-op for 448 px tiles),
    scaled to [0, 1] and normalised with the ImageNet mean/std.

    Args:
        image: a PIL image, or a path / file / bytes (loaded with :func:`load_image`).
        max_num: most tiles.
        image_size: tile side.
        use_thumbnail: add the thumbnail tile.
        min_num: fewest tiles.

    Returns:
        ``torch.FloatTensor`` of shape ``(tiles, 3, image_size, image_size)``.

    Example:
        >>> to_pixel_values(Image.new("RGB", (800, 600)), max_num=6).shape  # doctest: +SKIP
        torch.Size([7, 3, 448, 448])
    """
    try:
        import numpy as np
        import torch
    except ImportError as exc:
        raise ImportError(
            "to_pixel_values needs torch; install requirements-xtuner.txt or requirements-lmdeploy.txt"
        ) from exc
    if not isinstance(image, Image.Image):
        image = load_image(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    tiles = dynamic_preprocess(image, min_num, max_num, image_size, use_thumbnail)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    out = []
    for tile in tiles:
        if tile.size != (image_size, image_size):
            tile = tile.resize((image_size, image_size), Image.Resampling.BICUBIC)
        chw = torch.from_numpy(np.asarray(tile, dtype=np.uint8).copy()).permute(2, 0, 1)
        out.append((chw.float() / 255.0 - mean) / std)
    return torch.stack(out)


def draw_tiling(image: Image.Image, min_num: int = 1, max_num: int = 12, image_size: int = 448,
                use_thumbnail: bool = True, title: str | None = None, figsize=(9, 3.8)):
    """A matplotlib figure: the photo with its tile grid, and the tiles it is cut into.

    Args:
        image: a PIL image.
        min_num: fewest tiles.
        max_num: most tiles.
        image_size: tile side.
        use_thumbnail: show the thumbnail tile too.
        title: figure title (default: size, grid and token count).
        figsize: inches; the figure has :data:`helpers.display.DPI` and is not registered with
            pyplot, so a notebook cell that returns it shows it once.

    Returns:
        A ``matplotlib.figure.Figure``.

    Example:
        >>> fig = draw_tiling(Image.new("RGB", (1600, 900)), max_num=6)  # doctest: +SKIP
    """
    from helpers.display import figure

    cols, rows = choose_grid(image.width, image.height, min_num, max_num, image_size)
    tiles = dynamic_preprocess(image, min_num, max_num, image_size, use_thumbnail)
    has_thumb = len(tiles) > cols * rows
    tokens = image_tokens(image.width, image.height, min_num, max_num, image_size, use_thumbnail)

    fig = figure(figsize)
    left, right = fig.subfigures(1, 2, width_ratios=[1.1, 1])
    ax = left.subplots()
    ax.imshow(image)
    for c in range(1, cols):  # grid lines where the stretched photo is cut
        ax.axvline(c * image.width / cols, color="yellow", lw=1.5)
    for r in range(1, rows):
        ax.axhline(r * image.height / rows, color="yellow", lw=1.5)
    ax.set_title(f"{image.width}x{image.height} -> 网格 {cols}x{rows}")
    ax.set_xticks([])
    ax.set_yticks([])

    grid_cols = cols + (1 if has_thumb else 0)
    axes = right.subplots(rows, grid_cols, squeeze=False)
    for r in range(rows):
        for c in range(grid_cols):
            a = axes[r][c]
            a.set_xticks([])
            a.set_yticks([])
            if c < cols:
                a.imshow(tiles[r * cols + c])
                a.set_title(f"图块 {r * cols + c + 1}", fontsize=8)
            elif r == 0:
                a.imshow(tiles[-1])
                a.set_title("缩略图", fontsize=8)
            else:
                a.axis("off")
    fig.suptitle(title or f"{len(tiles)} 个图块 x 256 = {tokens} 个视觉 token")
    return fig
