"""Do LMDeploy and the model's own transformers code compute the same model? First-token log-probs side by side.

The course serves one checkpoint with two engines: the model's remote code under transformers
(notebooks on a CPU) and LMDeploy's own re-implementation of InternViT + InternLM2 (on a GPU).
They should agree up to bf16 rounding. This script asks both the same val questions, with and
without the photo, for one token with its top-5 log-probs, and prints per question whether the
top token agrees and how far the log-probs of transformers' top 5 are apart; then the greedy
answers of both. Text-only vs with-image tells the LLM path from the vision path. ``--set``
serves copies of the checkpoint with config fields changed (``llm_config.rope_scaling=null``),
so that a suspected field can be tested in the same run.

Usage (LMDeploy environment, GPU):
    python benchmarks/engine_parity.py --model artifacts/runs/tiny/finetune/<run>/merged --n 8
    python benchmarks/engine_parity.py --model M --set llm_config.rope_scaling=null
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import environment, need_cuda, print_table, write_results  # noqa: E402
from helpers.model_dir import runnable_dir  # noqa: E402
from helpers.settings import get_settings  # noqa: E402


def config_variant(model: Path, assignment: str, root: Path) -> Path:
    """A copy of ``model`` with one dotted config field set (JSON value), e.g. ``llm_config.rope_scaling=null``."""
    key, sep, raw = assignment.partition("=")
    if not sep:
        raise SystemExit(f"--set {assignment!r}: expected dotted.key=JSON")
    out = root / f"{model.name}-{key.replace('.', '_')}"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(model, out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    node, parts = config, key.split(".")
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = json.loads(raw)
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    return out


def transformers_logprobs(eng, prompts, k: int = 5) -> list:
    """Top-``k`` first-token log-probs ``{token_id: logprob}`` of the model's own code, one dict per prompt."""
    import torch

    out = []
    for prompt in prompts:
        query, tiles = eng._query([(prompt, None)])
        ids = eng.tokenizer(query, return_tensors="pt").input_ids.to(eng.device)
        with torch.inference_mode():
            pv = torch.cat(tiles).to(eng.device, eng.dtype) if tiles else None
            res = eng.model.generate(pixel_values=pv, input_ids=ids, max_new_tokens=1, do_sample=False,
                                     output_scores=True, return_dict_in_generate=True,
                                     pad_token_id=eng.tokenizer.pad_token_id)
        lp = torch.log_softmax(res.scores[0][0].float(), -1)
        top = torch.topk(lp, k)
        out.append({int(i): float(v) for i, v in zip(top.indices, top.values)})
    return out


def lmdeploy_logprobs(pipe, prompts, k: int = 5) -> list:
    """The same from LMDeploy (``GenerationConfig(logprobs=k)``)."""
    import lmdeploy

    gen = lmdeploy.GenerationConfig(max_new_tokens=1, logprobs=k, do_sample=False)
    return [{int(t): float(v) for t, v in (r.logprobs or [{}])[0].items()} for r in pipe(prompts, gen_config=gen)]


def lmdeploy_pipeline(model: Path, system_prompt: str | None):
    """The course's LMDeploy pipeline (helpers.serve.pipeline's settings and chat template) with log-probs on.

    LMDeploy 0.18 returns no log-probs unless the engine is built with ``logprobs_mode``.
    """
    from helpers.serve.pipeline import make_pipeline

    # LMDeploy's own (text, image) order: PARITY_TEXT_FIRST=1 shows the difference.
    return make_pipeline(model, "lmdeploy", system_prompt=system_prompt, engine_options={"logprobs_mode": "raw_logprobs"},
                         images_first=os.environ.get("PARITY_TEXT_FIRST") != "1")


def _find_module_with(root, attr: str, prefix: str = "lmdeploy.", limit: int = 200000):
    """Breadth-first search of an object graph for an ``nn.Module`` of package ``prefix`` that has ``attr``.

    LMDeploy keeps its model several objects deep (engine, executor, model agent); the search
    must not stop at a transformers model some other object holds.
    """
    import collections

    import torch

    queue, seen = collections.deque([root]), set()
    while queue and len(seen) < limit:
        obj = queue.popleft()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None), torch.Tensor, type)):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.nn.Module) and hasattr(obj, attr) and type(obj).__module__.startswith(prefix):
            return obj
        if isinstance(obj, dict):
            queue.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            queue.extend(obj)
        elif hasattr(obj, "__dict__"):
            queue.extend(vars(obj).values())
    return None


def vision_features(model: Path, images) -> list:
    """Image tokens of both engines for each image, crossed: each engine's model on each engine's pixels.

    Returns rows with the max / mean absolute difference and the cosine similarity of the image
    tokens (N x 256 x hidden), so that preprocessing and the vision model are told apart.
    """
    import torch

    from helpers.serve.cpu_engine import TransformersEngine
    from helpers.evaluate.evaluation import close_engine, trained_system_prompt

    eng = TransformersEngine(model, system_prompt=trained_system_prompt(model))
    from helpers.tiling import to_pixel_values

    ours_pixels = [to_pixel_values(img, max_num=eng.max_dynamic_patch, image_size=eng.image_size,
                                   use_thumbnail=eng.use_thumbnail, min_num=eng.min_dynamic_patch) for img in images]
    with torch.inference_mode():
        ours_on_ours = [eng.model.extract_feature(p.to(eng.device, eng.dtype)).float().cpu() for p in ours_pixels]
    pipe = lmdeploy_pipeline(model, trained_system_prompt(model))
    try:
        vl = getattr(getattr(pipe, "async_engine", pipe), "vl_encoder").model  # as helpers.serve.pipeline finds it
        lm_pixels = [vl.preprocess([{"role": "user", "content": [{"type": "image", "data": img}]}])[-1]["content"][0]
                     ["pixel_values"] for img in images]
        lm_model = _find_module_with(pipe, "extract_feature")
        if lm_model is None:
            raise RuntimeError("LMDeploy's model object with extract_feature not found in this process")
        print(f"LMDeploy's vision path: {type(lm_model).__module__}.{type(lm_model).__name__}")
        dev, dt = next(lm_model.parameters()).device, next(lm_model.parameters()).dtype
        with torch.inference_mode():
            lm_on_lm = [lm_model.extract_feature(p.to(dev, dt)).float().cpu() for p in lm_pixels]
            lm_on_ours = [lm_model.extract_feature(p.to(dev, dt)).float().cpu() for p in ours_pixels]
            ours_on_lm = [eng.model.extract_feature(p.to(eng.device, eng.dtype)).float().cpu() for p in lm_pixels]
    finally:
        close_engine(pipe)
        close_engine(eng)

    def diff(a, b):
        return dict(max_abs=round(float((a - b).abs().max()), 4), mean_abs=round(float((a - b).abs().mean()), 4),
                    cos=round(float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)), 5))

    rows = []
    for i in range(len(images)):
        px = dict(max_abs=round(float((ours_pixels[i].float() - lm_pixels[i].float()).abs().max()), 4))
        rows += [dict(image=i, what="pixels: ours vs LMDeploy's", **px),
                 dict(image=i, what="features, same pixels (ours): our model vs LMDeploy's", **diff(ours_on_ours[i], lm_on_ours[i])),
                 dict(image=i, what="features, same model (ours): our pixels vs LMDeploy's", **diff(ours_on_ours[i], ours_on_lm[i])),
                 dict(image=i, what="features as served: ours vs LMDeploy's", **diff(ours_on_ours[i], lm_on_lm[i]))]
    return rows


def compare(tf: dict, lm: dict) -> dict:
    """Top-1 agreement and the largest log-prob gap over transformers' top tokens present in both."""
    t1 = max(tf, key=tf.get)
    l1 = max(lm, key=lm.get) if lm else None
    gaps = [abs(tf[t] - lm[t]) for t in tf if t in lm]
    return dict(top1_same=t1 == l1, tf_top1=t1, lm_top1=l1, tf_p1=round(math.exp(tf[t1]), 3),
                lm_p1=round(math.exp(lm[l1]), 3) if l1 is not None else None,
                max_gap=round(max(gaps), 3) if gaps else None, shared=len(gaps))


def run_model(model: Path, items, n_answer: int, label: str) -> list:
    from helpers.serve.cpu_engine import TransformersEngine
    from helpers.evaluate.evaluation import close_engine, trained_system_prompt

    from helpers.tiling import load_image

    prompt_sys = trained_system_prompt(model)
    with_image = [(it.question, load_image(it.image)) for it in items]  # LMDeploy takes PIL images, not paths
    text_only = [it.question for it in items]
    eng = TransformersEngine(model, system_prompt=prompt_sys)
    tf = {"image": transformers_logprobs(eng, with_image), "text": transformers_logprobs(eng, text_only)}
    tf_answers = [r.text for r in eng(with_image[:n_answer])]
    tok = eng.tokenizer
    close_engine(eng)
    pipe = lmdeploy_pipeline(model, prompt_sys)
    try:
        lm = {"image": lmdeploy_logprobs(pipe, with_image), "text": lmdeploy_logprobs(pipe, text_only)}
        import lmdeploy

        lm_answers = [r.text for r in pipe(with_image[:n_answer],
                                           gen_config=lmdeploy.GenerationConfig(max_new_tokens=24, do_sample=False))]
    finally:
        close_engine(pipe)
    rows = []
    for kind in ("text", "image"):
        for i, (a, b) in enumerate(zip(tf[kind], lm[kind])):
            c = compare(a, b)
            c.update(variant=label, input=kind, q=i, tf_tok=tok.decode([c["tf_top1"]]),
                     lm_tok=tok.decode([c["lm_top1"]]) if c["lm_top1"] is not None else None)
            rows.append(c)
    for i, (a, b) in enumerate(zip(tf_answers, lm_answers)):
        rows.append(dict(variant=label, input="answer", q=i, tf_answer=a, lm_answer=b, same=a == b))
    return rows


def main(argv=None) -> int:
    S = get_settings()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the latest fine-tuned run's merged model)")
    ap.add_argument("--n", type=int, default=8, help="val questions")
    ap.add_argument("--answers", type=int, default=4, help="greedy answers compared in full")
    ap.add_argument("--set", action="append", default=[], help="also a copy with dotted.key=JSON (repeatable)")
    ap.add_argument("--features", action="store_true",
                    help="also compare the image tokens of both engines (crossed: pixels x vision model)")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    if not need_cuda("LMDeploy"):
        return 0
    from helpers.evaluate.items import load_split

    if args.model:
        model = Path(args.model)
    else:
        from helpers.train.runs import latest_run

        model = Path(latest_run(S)["merged"])
    items = load_split(S.llava_dir / "val.json", S.data_root, limit=args.n)
    variants = [("as saved", model)]
    tmp = Path(tempfile.mkdtemp(prefix="parity-"))
    variants += [(a, config_variant(model, a, tmp)) for a in args.set]
    rows, summary = [], {}
    if args.features:
        from helpers.tiling import load_image

        feats = vision_features(model, [load_image(it.image) for it in items[:4]])
        print_table(feats)
        rows += [dict(variant="features", input="features", **f) for f in feats]
    for label, path in variants:
        rows += run_model(path, items, args.answers, label)
        for kind in ("text", "image"):
            sel = [r for r in rows if r["variant"] == label and r["input"] == kind]
            gaps = [r["max_gap"] for r in sel if r["max_gap"] is not None]
            summary[f"{label} / {kind}"] = dict(top1_agree=f"{sum(r['top1_same'] for r in sel)}/{len(sel)}",
                                                median_max_gap=sorted(gaps)[len(gaps) // 2] if gaps else None)
        ans = [r for r in rows if r["variant"] == label and r["input"] == "answer"]
        print_table(ans, ["variant", "q", "tf_answer", "lm_answer", "same"])
    print_table([r for r in rows if r["input"] in ("text", "image")],
                ["variant", "input", "q", "top1_same", "tf_tok", "tf_p1", "lm_tok", "lm_p1", "max_gap", "shared"])
    print_table([dict(case=k, **v) for k, v in summary.items()])
    write_results("engine-parity", dict(environment=environment(), model=str(model), n=len(items), rows=rows,
                                        summary=summary, complete=True), args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
