"""helpers.tiling must cut images exactly like XTuner (training) and LMDeploy (serving)."""
from __future__ import annotations

import json
import re
from argparse import Namespace
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from helpers import tiling

# (min_num, max_num, use_thumbnail) settings compared against the references.
SETTINGS = [(1, 12, True), (1, 6, True), (1, 6, False), (2, 6, True), (4, 12, False), (6, 6, True), (1, 1, True)]

# The grid depends only on aspect ratio and on area relative to image_size**2, so most sizes are
# tested with 56 px tiles (scaled-down 448 px behaviour, fast), plus real phone/extreme sizes at 448.
SMALL_TILE = 56


def _random_sizes(n=110, seed=1234):
    rng = np.random.default_rng(seed)
    sizes = set()
    while len(sizes) < n:
        # log-uniform sides give many aspect ratios from 1:100 to 100:1
        w, h = np.exp(rng.uniform(np.log(1), np.log(8 * SMALL_TILE), size=2)).astype(int)
        sizes.add((max(1, int(w)), max(1, int(h))))
    # exact-tie cases: squares around the area thresholds, 2:1 and 3:2 shapes, panoramas
    sizes |= {(28, 28), (39, 39), (40, 40), (79, 79), (80, 80), (84, 56), (112, 56), (168, 56), (300, 100),
              (100, 300), (500, 5), (5, 500)}
    return sorted(sizes)


SMALL_SIZES = _random_sizes()
LARGE_SIZES = [(20, 2000), (2000, 20), (4032, 3024), (3024, 4032), (5, 7), (4000, 1300), (1300, 4000),
               (1920, 1080), (1080, 1920), (448, 448), (634, 634), (635, 635), (1600, 1200)]


def _noise(size, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed + size[0] * 7919 + size[1])
    w, h = size
    if w * h > 400_000:  # big photos: upscale small noise instead of drawing millions of samples
        small = Image.fromarray(rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8))
        img = small.resize((w, h), Image.Resampling.NEAREST)
    else:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return img.convert(mode) if mode != "RGB" else img


@pytest.fixture(scope="module", params=["xtuner", "lmdeploy"])
def reference(request):
    """InternVL's own ``dynamic_preprocess`` as shipped by XTuner or LMDeploy."""
    if request.param == "xtuner":
        mod = pytest.importorskip("xtuner.dataset.internvl_dataset")
    else:
        mod = pytest.importorskip("lmdeploy.vl.model.internvl")
    return mod.dynamic_preprocess


def _assert_same_crops(ours, theirs, context):
    assert len(ours) == len(theirs), f"{context}: {len(ours)} crops vs {len(theirs)}"
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.size == b.size and a.mode == b.mode, f"{context}: crop {i} {a.size}/{a.mode} vs {b.size}/{b.mode}"
        assert a.tobytes() == b.tobytes(), f"{context}: crop {i} pixels differ"


def test_many_sizes_match_reference(reference):
    assert len(SMALL_SIZES) >= 100
    for size in SMALL_SIZES:
        img = _noise(size)
        for min_num, max_num, thumb in SETTINGS:
            ctx = f"{size} min={min_num} max={max_num} thumb={thumb}"
            ours = tiling.dynamic_preprocess(img, min_num, max_num, SMALL_TILE, thumb)
            theirs = reference(img, min_num, max_num, SMALL_TILE, thumb)
            _assert_same_crops(ours, theirs, ctx)
            cols, rows = tiling.choose_grid(*size, min_num, max_num, SMALL_TILE)
            assert len(ours) == cols * rows + (1 if thumb and cols * rows > 1 else 0), ctx


@pytest.mark.parametrize("size", LARGE_SIZES)
def test_phone_and_extreme_sizes_match_reference(reference, size):
    img = _noise(size)
    for min_num, max_num, thumb in [(1, 12, True), (1, 6, True)]:
        ours = tiling.dynamic_preprocess(img, min_num, max_num, 448, thumb)
        _assert_same_crops(ours, reference(img, min_num, max_num, 448, thumb), f"{size} max={max_num}")
        assert all(t.size == (448, 448) for t in ours)
        assert len(ours) == tiling.tile_count(*size, min_num, max_num, 448, thumb)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA"])
def test_other_modes_match_reference(reference, mode):
    for size in [(90, 50), (30, 170), (112, 112)]:
        img = _noise(size, mode=mode)
        _assert_same_crops(tiling.dynamic_preprocess(img, 1, 6, SMALL_TILE, True),
                           reference(img, 1, 6, SMALL_TILE, True), f"{size} {mode}")


@pytest.mark.parametrize("size,max_num,grid", [
    ((448, 448), 12, (1, 1)),
    ((500, 500), 12, (1, 1)),      # square, too small to fill 2x2 (needs > 0.5 * 4 tiles of pixels)
    ((896, 896), 12, (2, 2)),
    ((1000, 1000), 12, (3, 3)),    # 1e6 px > 0.5 * 9 * 448^2
    ((4032, 3024), 12, (4, 3)),
    ((3024, 4032), 12, (3, 4)),
    ((1920, 1080), 12, (4, 2)),    # 2:1 is closest; 4x2 ties with 2x1 and the photo is big enough
    ((1920, 1080), 6, (2, 1)),
    ((20, 2000), 12, (1, 12)),
    ((2000, 20), 6, (6, 1)),
    ((5, 7), 12, (3, 4)),          # tiny images are still blown up to the closest-shaped grid
    ((800, 600), 6, (3, 2)),
    ((600, 400), 2, (2, 1)),       # 1.5 is exactly between 1x1 and 2x1; 240000 px > 0.5 * 2 tiles
    ((300, 200), 2, (1, 1)),       # same tie, too few pixels: keep 1x1
])
def test_choose_grid_hand_checked(size, max_num, grid):
    assert tiling.choose_grid(*size, max_num=max_num) == grid


def test_candidate_grids():
    grids = tiling.candidate_grids(1, 12)
    assert set(grids) == {(c, r) for c in range(1, 13) for r in range(1, 13) if c * r <= 12}
    counts = [c * r for c, r in grids]
    assert counts == sorted(counts)
    assert set(tiling.candidate_grids(6, 6)) == {(1, 6), (2, 3), (3, 2), (6, 1)}
    with pytest.raises(ValueError):
        tiling.candidate_grids(3, 2)
    with pytest.raises(ValueError):
        tiling.choose_grid(0, 10)


def test_tile_and_token_counts():
    assert tiling.tile_count(4032, 3024) == 13
    assert tiling.tile_count(4032, 3024, use_thumbnail=False) == 12
    assert tiling.tile_count(448, 448) == 1  # one tile: no thumbnail
    assert tiling.image_tokens(448, 448) == 256
    assert tiling.image_tokens(4032, 3024) == 13 * 256
    assert tiling.image_tokens(1920, 1080, max_num=6) == 3 * 256


def test_crops_are_row_major():
    # 2 columns x 1 row: left half red, right half blue -> first tile red, second blue
    img = Image.new("RGB", (896, 448), (255, 0, 0))
    img.paste((0, 0, 255), (448, 0, 896, 448))
    tiles = tiling.dynamic_preprocess(img, max_num=6)
    assert len(tiles) == 3
    assert tiles[0].getpixel((200, 200)) == (255, 0, 0)
    assert tiles[1].getpixel((200, 200)) == (0, 0, 255)
    # 2x2 grid: tile index 1 is top-right, index 2 bottom-left
    quad = Image.new("RGB", (896, 896), (0, 0, 0))
    quad.paste((0, 255, 0), (448, 0, 896, 448))
    quad.paste((255, 255, 0), (0, 448, 448, 896))
    q = tiling.dynamic_preprocess(quad, max_num=6)
    assert q[1].getpixel((200, 200)) == (0, 255, 0) and q[2].getpixel((200, 200)) == (255, 255, 0)


@pytest.mark.parametrize("orientation,top,bottom", [(6, "red", "blue"), (8, "blue", "red"), (1, None, None)])
def test_load_image_applies_exif_orientation(tmp_path, orientation, top, bottom):
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())
    with Image.open(path) as raw:
        assert raw.size == (40, 20)  # what a loader that ignores EXIF sees
    img = tiling.load_image(path)
    assert img.mode == "RGB"
    if orientation == 1:
        assert img.size == (40, 20)
        return
    assert img.size == (20, 40)
    colour = {"red": 0, "blue": 2}
    assert np.argmax(img.getpixel((10, 5))) == colour[top]
    assert np.argmax(img.getpixel((10, 35))) == colour[bottom]


def test_load_image_inputs_and_errors(tmp_path):
    png = tmp_path / "a.png"
    Image.new("RGBA", (10, 8), (1, 2, 3, 128)).save(png)
    assert tiling.load_image(png).mode == "RGB"
    assert tiling.load_image(str(png)).size == (10, 8)
    assert tiling.load_image(png.read_bytes()).size == (10, 8)
    with open(png, "rb") as fh:
        assert tiling.load_image(fh).size == (10, 8)
    bad = tmp_path / "notes.jpeg"
    bad.write_text("not a photo")
    with pytest.raises(ValueError, match="notes.jpeg"):
        tiling.load_image(bad)
    truncated = tmp_path / "cut.jpeg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(ValueError, match="cut.jpeg"):
        tiling.load_image(truncated)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        tiling.load_image(tmp_path / "missing.jpg")


def test_to_pixel_values_matches_xtuner_transform(tmp_path, monkeypatch):
    """Build XTuner's real InternVL_V1_5_Dataset (config/tokenizer faked) and use its transform."""
    torch = pytest.importorskip("torch")
    xd = pytest.importorskip("xtuner.dataset.internvl_dataset")
    cfg = SimpleNamespace(llm_config=SimpleNamespace(architectures=["InternLM2ForCausalLM"]),
                          min_dynamic_patch=1, max_dynamic_patch=6, downsample_ratio=0.5,
                          force_image_size=448, use_thumbnail=True, vision_config=SimpleNamespace(patch_size=14))
    monkeypatch.setattr(xd, "AutoConfig", SimpleNamespace(from_pretrained=lambda *a, **k: cfg))
    monkeypatch.setattr(xd, "AutoTokenizer", SimpleNamespace(from_pretrained=lambda *a, **k: object()))
    data = tmp_path / "empty.json"
    data.write_text(json.dumps([]))
    ds = xd.InternVL_V1_5_Dataset("unused", {}, str(data), image_folders=str(tmp_path))
    for size in [(800, 600), (300, 900), (448, 448)]:
        path = tmp_path / f"{size[0]}x{size[1]}.png"
        _noise(size).save(path)
        image = ds.get_image(str(path))  # XTuner's own loader
        tiles = xd.dynamic_preprocess(image, ds.min_dynamic_patch, ds.max_dynamic_patch, ds.image_size,
                                      ds.use_thumbnail)
        expected = torch.stack([ds.transformer(t) for t in tiles])
        ours = tiling.to_pixel_values(image, max_num=6)
        assert ours.shape == expected.shape == (tiling.tile_count(*size, max_num=6), 3, 448, 448)
        assert ours.dtype == torch.float32
        assert torch.allclose(ours, expected, atol=1e-6)
        assert torch.allclose(tiling.to_pixel_values(path, max_num=6), expected, atol=1e-6)


def test_to_pixel_values_matches_lmdeploy_preprocess(tmp_path):
    """LMDeploy's InternVL vision model, built from a config without weights, preprocesses alike."""
    torch = pytest.importorskip("torch")
    lm = pytest.importorskip("lmdeploy.vl.model.internvl")
    model = object.__new__(lm.InternVLVisionModel)
    model.model_path = str(tmp_path)  # no preprocessor_config.json -> InternVL-Chat-V1-5 preprocessing
    model.hf_config = Namespace(dynamic_image_size=True, vision_config={"image_size": 448, "patch_size": 14},
                                force_image_size=448, downsample_ratio=0.5, min_dynamic_patch=1,
                                max_dynamic_patch=6, use_thumbnail=True)
    model.build_preprocessor()
    for size in [(1000, 500), (500, 1500)]:
        img = _noise(size)
        expected = model.processor(img, params={"max_dynamic_patch": 6})
        assert torch.allclose(tiling.to_pixel_values(img, max_num=6), expected, atol=1e-6)


def test_draw_tiling_figure():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    fig = tiling.draw_tiling(_noise((1600, 900)), max_num=6)
    cols, rows = tiling.choose_grid(1600, 900, max_num=6)
    assert len(fig.axes) == 1 + rows * (cols + 1)
    assert "个视觉 token" in fig._suptitle.get_text()
    from helpers.display import figure_text

    words = set(re.findall(r"[A-Za-z]{2,}", " ".join(figure_text(fig))))
    assert words <= {"token"} and "缩略图" in figure_text(fig)  # 图块 / 缩略图 / 网格: glossary terms
    from helpers.display import DPI
    import matplotlib.pyplot as plt

    assert fig.get_dpi() == DPI
    assert fig not in map(plt.figure, plt.get_fignums())  # not held by pyplot: shown once in a notebook


# --------------------------------------------------------------------------- training vs serving

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def _pin(requirements: str, package: str) -> str:
    for line in (REPO / requirements).read_text(encoding="utf-8").splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if name.lower() == package:
            return version
    raise AssertionError(f"{requirements} does not pin {package}")


def test_both_environments_pin_the_same_pillow():
    """Training (.venv-xtuner) and serving (.venv-lmdeploy) must decode and resize photos with the
    same Pillow: different builds gave slightly different tiles (max pixel difference 3) on real photos."""
    assert _pin("requirements-xtuner.txt", "pillow") == _pin("requirements-lmdeploy.txt", "pillow")


_TILE_HASH = """
import hashlib, sys, PIL
from helpers.tiling import dynamic_preprocess, load_image
h = hashlib.sha256()
for path in sys.argv[1:]:
    for tile in dynamic_preprocess(load_image(path), 1, 12, 448, True):
        h.update(tile.tobytes())
print(PIL.__version__, h.hexdigest())
"""


def test_tiles_are_byte_identical_in_both_environments(tmp_path):
    """Photos of several kinds (progressive, 4:4:4, EXIF-rotated, MPO, PNG, WebP) tile to the same bytes
    in the XTuner and the LMDeploy environment."""
    import subprocess

    pythons = [REPO / v / "bin" / "python" for v in (".venv-xtuner", ".venv-lmdeploy")]
    if not all(p.exists() for p in pythons):
        pytest.skip("needs both course environments")
    rng = np.random.default_rng(7)
    small = (rng.random((75, 100, 3)) * 255).astype("uint8")
    img = Image.fromarray(small).resize((1601, 1199), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6
    files = []
    for name, kwargs in (("a.jpg", dict(quality=88)), ("p.jpg", dict(quality=90, progressive=True)),
                         ("s.jpg", dict(quality=95, subsampling=0)), ("r.jpg", dict(exif=exif.tobytes())),
                         ("m.mpo", dict(format="MPO", save_all=True, append_images=[img.resize((320, 240))])),
                         ("b.png", {}), ("w.webp", dict(quality=60))):
        img.save(tmp_path / name, **kwargs)
        files.append(str(tmp_path / name))
    env = dict(__import__("os").environ, PYTHONPATH=str(REPO))
    out = [subprocess.run([str(p), "-c", _TILE_HASH, *files], capture_output=True, text=True, env=env,
                          timeout=120, check=True).stdout.split() for p in pythons]
    assert out[0] == out[1], f"xtuner env {out[0]} vs lmdeploy env {out[1]}"
