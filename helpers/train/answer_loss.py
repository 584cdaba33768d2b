"""The training loss with the LM head computed only where a token carries loss.

In a FoodieQA sample almost every position is an image token (7-13 tiles x 256 tokens at
InternVL2-2B size) or part of the prompt, and only the answer's few dozen tokens have a label.
XTuner's ``InternVL_V1_5._llm_forward`` still runs the LLM's full forward, so the LM head
multiplies every position by its 92,553 x 2,048 weight (plus LoRA on it), turns the whole
(batch, length, 92,553) block to fp32 and hands it to the cross-entropy, which ignores all but
the labelled rows. Here the decoder runs exactly as before, and the head and the loss see only
the rows whose next token has a label: the same mean over the same tokens, the same gradients,
and no (batch x length x vocabulary) fp32 logits in memory.

It uses only what every InternVL2 checkpoint offers (OpenGVLab's remote code and the course's):
``extract_feature``, ``img_context_token_id``, ``language_model.get_input_embeddings()`` /
``get_output_embeddings()`` and the causal LM's decoder ``.model``.

Example:
    >>> loss = answer_only_loss(internvl, pixel_values, input_ids, attention_mask,
    ...                         position_ids, image_flags, labels)   # doctest: +SKIP
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # XTuner's label for positions without loss (prompt, image tokens, padding)


def decoder_of(llm: torch.nn.Module) -> torch.nn.Module:
    """The decoder (everything before the LM head) of a causal LM, peft-wrapped or not.

    Args:
        llm: ``InternLM2ForCausalLM`` (OpenGVLab's or the course's), or a peft model around it.

    Returns:
        Its ``.model``; LoRA layers injected by peft sit inside it, so they still run.
    """
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    body = getattr(base, "model", None)
    if not isinstance(body, torch.nn.Module):
        raise TypeError(f"{type(base).__name__} has no decoder attribute `.model`: not an InternLM2-style causal LM")
    return body


def splice_image_features(internvl, input_ids: torch.Tensor, embeds: torch.Tensor,
                          features: torch.Tensor) -> torch.Tensor:
    """Write the ViT features over the ``<IMG_CONTEXT>`` positions of ``embeds`` (returns a new tensor).

    Mirrors XTuner's rule: when max_length truncation left fewer placeholders than features,
    the first features fill the placeholders that remain (a warning, as XTuner prints one).
    """
    flat = embeds.reshape(-1, embeds.shape[-1])
    slots = (input_ids.reshape(-1) == internvl.img_context_token_id)
    features = features.reshape(-1, flat.shape[-1]).to(flat.dtype)
    n = int(slots.sum())
    if n != features.shape[0]:
        from mmengine import print_log

        print_log(f"{n} image-token slots for {features.shape[0]} ViT features: using the first {n}.",
                  logger="current", level=30)
        features = features[:n]
    # "* 0.0 +" keeps the embedding rows in the graph, as XTuner does (gradients of shape, not value)
    flat = flat.clone()
    flat[slots] = flat[slots] * 0.0 + features
    return flat.view_as(embeds)


def answer_only_loss(internvl, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None,
                     image_flags: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """XTuner's InternVL training loss, with the LM head run only on labelled positions.

    Args:
        internvl: the ``InternVLChatModel`` (``InternVL_V1_5.model``), its LLM possibly peft-wrapped.
        pixel_values: (tiles, 3, H, W) of the whole micro-batch.
        input_ids, attention_mask, position_ids, labels: (batch, length) as XTuner's collate makes them.
        image_flags: (tiles,) or (tiles, 1); 1 for a real tile, 0 for a text-only filler.

    Returns:
        The mean next-token cross-entropy over the labelled tokens (a 0-d fp32 tensor).
    """
    llm = internvl.language_model
    embeds = llm.get_input_embeddings()(input_ids)
    features = internvl.extract_feature(pixel_values)[image_flags.reshape(-1) == 1]
    embeds = splice_image_features(internvl, input_ids, embeds, features)
    hidden = decoder_of(llm)(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False, return_dict=True)[0]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    # Same maths as the full head: logits in fp32, mean over the labelled tokens only.
    logits = llm.get_output_embeddings()(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, targets[keep].to(logits.device))
