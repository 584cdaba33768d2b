"""Troubleshooting lab, training side: checkpoints, token budgets, silent XTuner failures, EXIF.

:func:`fake_checkpoints` writes the three things a learner finds after XTuner training (an
mmengine ``iter_N.pth``, a DeepSpeed checkpoint *folder* and the files inside it) with the
tensor names XTuner saves; :func:`diagnose_checkpoint` says what each is and what to do with
it. :func:`xtuner_dataset_probe` runs XTuner's own ``InternVL_V1_5_Dataset`` in the XTuner
environment on a small LLaVA file, so truncation and missing-image substitution are measured,
not described. :func:`crash_under_xtuner` launches a config that crashes and compares the exit
status with the course's judgement from the work dir.

Example:
    >>> diagnose_checkpoint("/nonexistent/iter_8.pth")["kind"]
    'missing'
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from helpers.settings import REPO_ROOT
from helpers.troubleshoot.common import XTUNER_PYTHON, run_in_env

LORA_TARGETS = ("wqkv", "wo", "w1", "w2", "w3")  # XTuner's InternVL LoRA targets in InternLM2
DS_MODEL_FILE = "mp_rank_00_model_states.pt"
DS_OPTIM_FILE = "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"


# --------------------------------------------------------------------------- 3. checkpoints
def xtuner_style_state(model, r: int = 4) -> dict:
    """What XTuner's ``InternVL_V1_5.state_dict`` keeps: LoRA A/B of the LLM and the projector mlp1.

    Names follow peft (``base_model.model.<module>.lora_A.weight``) under XTuner's ``model.``
    prefix; shapes follow the given model's linear layers.
    """
    import torch

    state = {}
    for name, module in model.language_model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LORA_TARGETS:
            prefix = f"model.language_model.base_model.model.{name}"
            state[f"{prefix}.lora_A.weight"] = torch.zeros(r, module.in_features)
            state[f"{prefix}.lora_B.weight"] = torch.zeros(module.out_features, r)
    for name, tensor in model.mlp1.state_dict().items():
        state[f"model.mlp1.{name}"] = tensor.clone()
    return state


def fake_checkpoints(model, out_dir, iteration: int = 8) -> dict:
    """Write an mmengine ``iter_N.pth`` and a DeepSpeed ``iter_N.pth/`` folder holding the same tensors."""
    import torch

    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    (out / "mmengine").mkdir(parents=True)
    state = xtuner_style_state(model)
    pth = out / "mmengine" / f"iter_{iteration}.pth"
    torch.save({"meta": {"iter": iteration}, "state_dict": state, "optimizer": {}}, pth)
    folder = out / "deepspeed" / f"iter_{iteration}.pth"
    folder.mkdir(parents=True)
    torch.save({"module": state}, folder / DS_MODEL_FILE)
    torch.save({"optimizer_state_dict": {}}, folder / DS_OPTIM_FILE)
    return {"mmengine_file": pth, "deepspeed_folder": folder, "deepspeed_optim_file": folder / DS_OPTIM_FILE}


def diagnose_checkpoint(path) -> dict:
    """What a path from an XTuner run is, and the command that turns it into a servable model.

    Returns:
        ``{"kind", "what", "fix"}``; kinds: ``model_dir``, ``xtuner_pth``, ``deepspeed_folder``,
        ``deepspeed_part``, ``peft_adapter``, ``missing``, ``unknown``.
    """
    path = Path(path)
    convert = "python -m xtuner.configs.internvl.v1_5.convert_to_official CONFIG {} OUT_DIR（或 helpers.train.convert.convert）"
    if not path.exists():
        return dict(kind="missing", what="不存在", fix="检查路径；训练是否真的写出了 checkpoint（last_checkpoint 文件）")
    if path.is_dir() and (path / "config.json").is_file():
        return dict(kind="model_dir", what="模型目录（config.json + 权重）", fix="可以直接部署")
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return dict(kind="peft_adapter", what="peft LoRA 适配器，不含基座权重",
                    fix="与基座合并后再部署；InternVL 用 convert_to_official 从 iter_N.pth 合并")
    if path.is_dir() and any(path.glob("*model_states.pt")):
        return dict(kind="deepspeed_folder", what="DeepSpeed checkpoint 文件夹（LoRA + mlp1，另有优化器状态）",
                    fix=convert.format(_short(path)))
    if path.is_file() and path.name.endswith(("model_states.pt", "optim_states.pt")):
        return dict(kind="deepspeed_part", what=f"DeepSpeed checkpoint 文件夹 {path.parent.name}/ 里的一个文件",
                    fix="传入整个文件夹，不是其中的文件：" + convert.format(_short(path.parent)))
    if path.is_file() and path.suffix == ".pth":
        return dict(kind="xtuner_pth", what="XTuner(mmengine) checkpoint：只有 LoRA + mlp1 张量，不是模型",
                    fix=convert.format(_short(path)))
    return dict(kind="unknown", what="无法识别", fix="看训练日志里保存的是什么")


def _short(path: Path) -> str:
    return "/".join(Path(path).parts[-2:])


def load_attempts(model, paths: dict) -> list:
    """Load each checkpoint the wrong ways learners do; every failure is caught and described."""
    import torch
    import transformers

    rows = []
    for label, path in paths.items():
        try:
            transformers.AutoModel.from_pretrained(str(path), trust_remote_code=True)
            result = "loaded"
        except Exception as exc:  # noqa: BLE001 - the point is to show what fails
            result = f"{type(exc).__name__}: {scrub(str(exc).splitlines()[0])[:100]}"
        row = dict(checkpoint=label, from_pretrained=result)
        if Path(path).is_file():
            state = torch.load(path, map_location="cpu", weights_only=False)
            state = state.get("state_dict", state.get("module", state))
            missing, unexpected = model.load_state_dict(state, strict=False) if state else ([], [])
            row.update(tensors=len(state), missing=len(missing), unexpected=len(unexpected),
                       model_tensors=len(model.state_dict()))
        rows.append(row)
    return rows


def xtuner_converters(venv=None) -> list:
    """Which XTuner model classes define ``to_hf`` (what ``pth_to_hf`` calls), read with ``ast``."""
    import ast

    venv = Path(venv or REPO_ROOT / ".venv-xtuner")
    root = next(iter(sorted(venv.glob("lib/python*/site-packages/xtuner"))), None)
    if root is None:
        raise FileNotFoundError(f"xtuner is not installed in {venv.name}: install requirements-xtuner.txt")
    calls = "model.to_hf(" in (root / "tools/model_converters/pth_to_hf.py").read_text(encoding="utf-8")
    rows = []
    for rel, cls in (("model/llava.py", "LLaVAModel"), ("model/internvl.py", "InternVL_V1_5")):
        tree = ast.parse((root / rel).read_text(encoding="utf-8"))
        node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls)
        methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        rows.append(dict(cls=cls, file=f"xtuner/{rel}", defines_to_hf="to_hf" in methods,
                         pth_to_hf_calls_to_hf=calls))
    return rows


def forward_on(model, input_ids, image_path, max_num: int) -> str:
    """One training forward of the course's InternVL code on an image and (maybe truncated) ids."""
    import torch

    from helpers.tiling import load_image, to_pixel_values

    pixel_values = to_pixel_values(load_image(image_path), max_num=max_num)
    ids = torch.tensor([input_ids])
    labels = ids.clone()
    try:
        with torch.no_grad():
            out = model(pixel_values=pixel_values, input_ids=ids, labels=labels)
        return f"ok: loss {float(out.loss):.2f} over {ids.shape[1]} tokens, {pixel_values.shape[0]} tiles"
    except ValueError as exc:
        return f"ValueError: {exc}"


def scrub(text: str) -> str:
    """``text`` with the repository's absolute path removed (outputs show repo-relative paths)."""
    return str(text).replace(str(REPO_ROOT) + "/", "").replace(str(REPO_ROOT), ".")


# --------------------------------------------------------------------------- 5 / 9. XTuner's dataset
DATASET_PROBE = '''
import json, sys, numpy as np
from helpers.data.xtuner_sample import load_xtuner_dataset
from mmengine.logging import MMLogger
data_file, image_root, model_path, queries = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
out = []
for q in queries:
    ds = load_xtuner_dataset(data_file, image_root, model_path=model_path, max_length=q["max_length"])
    MMLogger.get_current_instance().setLevel("INFO")  # XTuner reports the cut at INFO level
    np.random.seed(q.get("seed", 0))
    item = ds[q["index"]]
    ids, labels = list(item["input_ids"]), list(item["labels"])
    ctx = ds.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    out.append(dict(q, n_tokens=len(ids), img_context=ids.count(ctx), tiles=int(item["pixel_values"].shape[0]),
                    label_tokens=sum(l != -100 for l in labels),
                    answer=ds.tokenizer.decode([l for l in labels if l != -100]), input_ids=ids))
print(json.dumps({"items": out}, ensure_ascii=False))
'''


def xtuner_dataset_probe(data_file, image_root, model_path, queries) -> dict:
    """Items of XTuner's ``InternVL_V1_5_Dataset`` built in the XTuner environment.

    Args:
        data_file: LLaVA JSON.
        image_root: image folder.
        model_path: checkpoint (tokenizer and tiling config).
        queries: ``[{"max_length": int, "index": int, "seed": int}]``.

    Returns:
        ``{"items": [...], "log": XTuner's printed lines}``; each item has ``n_tokens``,
        ``img_context``, ``tiles``, ``label_tokens``, ``answer`` (decoded labels), ``input_ids``.
    """
    result = run_in_env(XTUNER_PYTHON, DATASET_PROBE, args=(data_file, image_root, model_path, json.dumps(queries)))
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result["stdout"])  # Jupyter kernels set FORCE_COLOR
    lines = [re.sub(r"^\d\d/\d\d [\d:]+ - mmengine - \w+ - ", "", line) for line in plain.splitlines()]
    log = "\n".join(scrub(line) for line in lines if line.startswith(("Error", "Warning")))
    return {"items": result["items"], "log": log}


def small_llava_file(records, out_dir, missing_index: int | None = None) -> Path:
    """Write a few LLaVA records to ``out_dir/train.json``; the image of ``missing_index`` points nowhere."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = [dict(r) for r in records]
    if missing_index is not None:
        records[missing_index]["image"] = "images/deleted_by_mistake.jpeg"
    (out / "train.json").write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return out / "train.json"


# --------------------------------------------------------------------------- 9. exit status
def crash_under_xtuner(work_dir) -> dict:
    """Launch ``xtuner train`` on a config that raises at load time; exit status vs the course's verdict.

    Returns:
        ``{"exit_status", "verdict", "traceback_in_log"}``; ``verdict`` is the first line of the
        :class:`helpers.train.train_run.TrainingFailed` that ``TrainRun.result()`` raises (None if none).
    """
    from helpers.train import train_run

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    config = work / "crashing_config.py"
    config.write_text('raise RuntimeError("simulated crash while the config is built")\n', encoding="utf-8")
    run = train_run.launch(config, work / "work_dir", overwrite=True)
    status = run.wait(progress=False)
    try:
        run.result()
        verdict = None
    except train_run.TrainingFailed as exc:
        verdict = str(exc).splitlines()[0]
    return dict(exit_status=status, verdict=verdict,
                traceback_in_log="simulated crash" in run.log_text())


# --------------------------------------------------------------------------- 10. EXIF
def sideways_copy(photo, out_path) -> Path:
    """Store a photo the way phones do: pixels turned on their side + EXIF Orientation 6."""
    from PIL import Image

    with Image.open(photo) as im:
        stored = im.convert("RGB").transpose(Image.Transpose.ROTATE_90)  # viewers turn it back by 270°
        exif = Image.Exif()
        exif[0x0112] = 6
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        stored.save(out_path, "JPEG", quality=90, exif=exif.tobytes())
    return Path(out_path)


def exif_views(path, max_num: int = 12) -> list:
    """Size and tile grid of a photo as XTuner opens it and as the course (and a viewer) does."""
    from PIL import Image

    from helpers.tiling import choose_grid, load_image

    with Image.open(path) as im:
        raw = im.convert("RGB").size  # xtuner/dataset/internvl_dataset.py get_image()
    upright = load_image(path).size
    return [dict(reader="Image.open(path).convert('RGB')（XTuner）", size=raw, grid=choose_grid(*raw, max_num=max_num)),
            dict(reader="helpers.tiling.load_image（课程，应用 EXIF）", size=upright,
                 grid=choose_grid(*upright, max_num=max_num))]


def convert_phone_photo(sivqa_file, source_index: int, work) -> dict:
    """Run the course's converter on one question whose photo is ``work/images/phone_photo.jpeg``.

    The worked solution of the EXIF exercise: the converter bakes the EXIF rotation into an
    upright copy, so XTuner's plain ``Image.open`` reads the photo the way a viewer shows it.

    Args:
        sivqa_file: the FoodieQA file the question comes from.
        source_index: the question's position in it (a LLaVA record's ``meta["source_index"]``).
        work: folder holding ``images/phone_photo.jpeg`` (see :func:`sideways_copy`); the one-question
            FoodieQA file and its LLaVA conversion are written here.

    Returns:
        ``{"exif_baked": photos the converter turned upright, "baked": the file XTuner will open,
        "size": (width, height) as XTuner opens it}``.

    Example:
        >>> fixed = convert_phone_photo(S.sivqa_file, 3, WORK / "exif")  # doctest: +SKIP
        >>> fixed["exif_baked"]                                          # doctest: +SKIP
        1
    """
    from PIL import Image

    from helpers.data.convert import foodieqa_to_llava

    work = Path(work)
    entry = json.loads(Path(sivqa_file).read_text(encoding="utf-8"))[source_index]
    entry["food_meta"]["food_file"] = "images/phone_photo.jpeg"
    (work / "sivqa_tidy.json").write_text(json.dumps([entry], ensure_ascii=False), encoding="utf-8")
    rep = foodieqa_to_llava(work / "sivqa_tidy.json", work, work / "llava", val_fraction=0.0)
    baked = json.loads((work / "llava" / "train.json").read_text(encoding="utf-8"))[0]["image"]
    with Image.open(baked) as im:
        size = im.convert("RGB").size  # XTuner's way of opening it
    return {"exif_baked": rep.exif_baked, "baked": Path(baked), "size": size}
