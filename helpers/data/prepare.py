"""Make sure the course's data exists: the FoodieQA file (drawn once when synthetic) and its LLaVA conversion.

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
