"""Make sure the course's data exists: the FoodieQA file (drawn once when synthetic) and its LLaVA conversion; example photos from it.

Example:
    >>> from helpers.data.prepare import ensure_data
    >>> paths = ensure_data(get_settings())   # doctest: +SKIP
    >>> paths["train"].name                   # doctest: +SKIP
    'train.json'
"""
from __future__ import annotations


def ensure_data(settings, llava: bool = True) -> dict:
    """Draw the synthetic FoodieQA set if it is missing, then convert it to LLaVA if that is missing.

    Args:
        settings: course settings (``sivqa_file``, ``data_root``, ``llava_dir``, ...).
        llava: also make sure ``llava_dir/train.json`` and ``val.json`` exist.

    Returns:
        ``{"sivqa": path, "images": data root, "train": path, "val": path}`` (the LLaVA keys only with ``llava``).

    Raises:
        FileNotFoundError: ``FOODIEQA_ROOT`` points at real data that is not there (nothing is drawn then).
    """
    S = settings
    if not S.sivqa_file.is_file():
        if not S.data_is_synthetic:
            raise FileNotFoundError(f"FOODIEQA_ROOT is set but {S.sivqa_file} does not exist")
        from helpers.data.synth import make_dataset  # the synthetic set is drawn once

        make_dataset(S.data_root, per_dish=S.synth_images_per_dish, seed=S.seed, long_side=S.synth_long_side)
    paths = {"sivqa": S.sivqa_file, "images": S.data_root}
    if llava:
        if not (S.llava_dir / "train.json").is_file():
            from helpers.data.convert import foodieqa_to_llava

            print(foodieqa_to_llava(S.sivqa_file, S.data_root, S.llava_dir, S.synth_val_fraction, S.seed))
        paths.update(train=S.llava_dir / "train.json", val=S.llava_dir / "val.json")
    return paths


def example_photos(settings) -> tuple:
    """Two photos for notebook 02's tiling demos: the data set's photos closest to 4:3 and widest.

    One photo per rounded aspect ratio is kept (the first in the file); without a data set, or
    with fewer than two aspect ratios in it, two photos are drawn instead (4:3 and 3:1).

    Args:
        settings: course settings (``sivqa_file``, ``data_root``).

    Returns:
        ``(photo_a, photo_b)`` as PIL images: ``photo_a`` nearest to 4:3, ``photo_b`` the widest.

    Example:
        >>> photo_a, photo_b = example_photos(get_settings())   # doctest: +SKIP
        >>> photo_b.width / photo_b.height >= photo_a.width / photo_a.height   # doctest: +SKIP
        True
    """
    import json

    from helpers.tiling import load_image

    photos = {}
    if settings.sivqa_file.exists():
        for rec in json.loads(settings.sivqa_file.read_text(encoding="utf-8")):
            img = load_image(settings.data_root / rec["food_meta"]["food_file"])
            photos.setdefault(round(img.width / img.height, 2), img)
    if len(photos) < 2:
        from helpers.data.synth_draw import draw_photo
        from helpers.foods import dish

        photos = {1.33: draw_photo(dish("mapo_tofu"), 896, 672, seed=1),
                  3.0: draw_photo(dish("peking_duck"), 896, 299, seed=2)}
    return photos[min(photos, key=lambda r: abs(r - 4 / 3))], photos[max(photos)]
