"""InternVLChatModel: InternViT + MLP projector + InternLM2, with ``chat``/``batch_chat``.

How an image reaches the language model:

1. each 448 px tile -> InternViT -> 1 + 32*32 tokens of width C; the class token is dropped;
2. ``pixel_shuffle(x, 0.5)`` folds every 2x2 block of neighbouring patches into one token of
   width 4C: 1024 -> 256 tokens per tile (``num_image_token``);
3. ``mlp1`` = LayerNorm(4C) -> Linear(4C, H) -> GELU -> Linear(H, H) maps them to the LLM width;
4. in the prompt, ``<image>`` becomes ``<img>`` + ``<IMG_CONTEXT>`` x (256 x tiles) + ``</img>``,
   and the embeddings at the ``<IMG_CONTEXT>`` positions are replaced by those 256 x tiles vectors.

Example:
    >>> # model, tokenizer = helpers.models.load_model(path)
    >>> # model.chat(tokenizer, pixel_values, "图片中的菜叫什么名字?", dict(max_new_tokens=32))
"""
import copy

import torch
from torch import nn
from transformers import GenerationConfig
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel

from .configuration_internvl_chat import InternVLChatConfig
from .conversation import get_conv_template
from .modeling_intern_vit import InternRMSNorm, InternVisionEmbeddings, InternVisionEncoderLayer, InternVisionModel
from .modeling_internlm2 import InternLM2ForCausalLM, InternLM2RMSNorm

IMG_START_TOKEN = "<img>"
IMG_END_TOKEN = "</img>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"
# InternVL2's own system prompt (what the released model and LMDeploy's template use).
INTERNVL2_SYSTEM_MESSAGE = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)


class InternVLChatModel(PreTrainedModel, GenerationMixin):
    """The InternVL2 chat model (parameter names as in the official checkpoint).

    It inherits ``GenerationMixin`` explicitly, although its own :meth:`generate` hands the
    work to the language model: that is what makes transformers 5 attach the checkpoint's
    generation_config.json (with ``<|im_end|>`` as a stop id) to every loaded instance.

    Attributes:
        system_message: system prompt used by :meth:`chat` / :meth:`batch_chat`. Defaults to
            ``config.system_message`` when the checkpoint has one, else InternVL2's own prompt.
            A model fine-tuned with XTuner should be served with XTuner's prompt.
        num_image_token: LLM tokens per tile (256 for 448 px, patch 14, ratio 0.5).
        img_context_token_id: id of ``<IMG_CONTEXT>``; set by chat() or by the trainer.
    """

    config_class = InternVLChatConfig
    main_input_name = "pixel_values"
    base_model_prefix = "language_model"
    _no_split_modules = ["InternVisionModel", "InternLM2DecoderLayer"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: InternVLChatConfig, vision_model=None, language_model=None):
        super().__init__(config)
        image_size = config.force_image_size or config.vision_config.image_size
        self.patch_size = config.vision_config.patch_size
        self.select_layer = config.select_layer
        self.template = config.template or "internlm2-chat"
        self.downsample_ratio = config.downsample_ratio
        self.ps_version = config.ps_version
        self.num_image_token = int((image_size // self.patch_size) ** 2 * (config.downsample_ratio**2))
        self.vision_model = vision_model if vision_model is not None else InternVisionModel(config.vision_config)
        self.language_model = (
            language_model if language_model is not None else InternLM2ForCausalLM(config.llm_config)
        )
        vit_hidden = config.vision_config.hidden_size
        llm_hidden = config.llm_config.hidden_size
        merged = vit_hidden * int(1 / config.downsample_ratio) ** 2
        self.mlp1 = nn.Sequential(
            nn.LayerNorm(merged), nn.Linear(merged, llm_hidden), nn.GELU(), nn.Linear(llm_hidden, llm_hidden)
        )
        self.img_context_token_id = None
        self.system_message = getattr(config, "system_message", None) or INTERNVL2_SYSTEM_MESSAGE
        self.conv_template = get_conv_template(self.template)
        self.conv_template.system_message = self.system_message
        self.post_init()

    def _init_weights(self, module):
        std = self.config.llm_config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (InternRMSNorm, InternLM2RMSNorm)):
            nn.init.ones_(module.weight)
        elif isinstance(module, InternVisionEmbeddings):
            nn.init.normal_(module.class_embedding, std=std)
            nn.init.normal_(module.position_embedding, std=std)
        elif isinstance(module, InternVisionEncoderLayer):
            nn.init.constant_(module.ls1, self.config.vision_config.initializer_factor)
            nn.init.constant_(module.ls2, self.config.vision_config.initializer_factor)

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    @property
    def lm_head(self):
        return self.language_model.get_output_embeddings()

    # ---------------------------------------------------------------- vision side
    def pixel_shuffle(self, x, scale_factor=0.5):
        """Trade spatial resolution for channels: (N, W, H, C) -> (N, W*s, H*s, C/s^2).

        With s = 0.5 each output token holds a 2x2 block of neighbouring patches. The order of
        the merged channels matters (mlp1 was trained on it); "v2" adds the final swap of the
        two spatial axes that InternVL2 uses, "v1" (InternVL 1.5) leaves it out.
        """
        n, w, h, c = x.shape
        r = int(round(1 / scale_factor))
        if w % r or h % r:
            raise ValueError(f"pixel_shuffle needs a patch grid divisible by {r}, got {w}x{h}")
        x = x.reshape(n, w, h // r, c * r)  # fold r neighbours along the second spatial axis
        x = x.transpose(1, 2).reshape(n, h // r, w // r, c * r * r)  # then r along the first
        if self.ps_version != "v1":
            x = x.transpose(1, 2)
        return x.contiguous()

    def extract_feature(self, pixel_values):
        """Tiles (N, 3, 448, 448) -> LLM-width image tokens (N, 256, H)."""
        if self.select_layer == -1:
            vit_embeds = self.vision_model(pixel_values=pixel_values, return_dict=True).last_hidden_state
        else:
            out = self.vision_model(pixel_values=pixel_values, output_hidden_states=True, return_dict=True)
            vit_embeds = out.hidden_states[self.select_layer]
        vit_embeds = vit_embeds[:, 1:, :]  # drop the class token
        side = int(vit_embeds.shape[1] ** 0.5)
        vit_embeds = vit_embeds.reshape(vit_embeds.shape[0], side, side, -1)
        vit_embeds = self.pixel_shuffle(vit_embeds, scale_factor=self.downsample_ratio)
        vit_embeds = vit_embeds.reshape(vit_embeds.shape[0], -1, vit_embeds.shape[-1])
        # The projector may be kept in another dtype than the frozen ViT (fp32 master weights in training).
        return self.mlp1(vit_embeds.to(self.mlp1[1].weight.dtype))

    def _splice(self, input_ids, vit_embeds):
        """Token embeddings of input_ids with the <IMG_CONTEXT> positions replaced by vit_embeds."""
        if self.img_context_token_id is None:
            raise ValueError("img_context_token_id is not set: assign tokenizer.convert_tokens_to_ids('<IMG_CONTEXT>')")
        embeds = self.language_model.get_input_embeddings()(input_ids)
        batch, seq, width = embeds.shape
        flat = embeds.reshape(batch * seq, width)
        selected = input_ids.reshape(-1) == self.img_context_token_id
        vit_flat = vit_embeds.reshape(-1, width).to(flat.dtype)
        if int(selected.sum()) != vit_flat.shape[0]:
            raise ValueError(
                f"the prompt has {int(selected.sum())} <IMG_CONTEXT> tokens but the images give {vit_flat.shape[0]} "
                f"features ({self.num_image_token} per tile); check num_patches_list against pixel_values"
            )
        # `x * 0 + features` instead of plain assignment keeps the embedding in the autograd graph.
        flat = flat.clone()
        flat[selected] = flat[selected] * 0.0 + vit_flat
        return flat.reshape(batch, seq, width)

    # ---------------------------------------------------------------- training forward
    def forward(
        self,
        pixel_values,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        image_flags=None,
        past_key_values=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        """Language-model loss on a batch whose prompts contain <IMG_CONTEXT> placeholders.

        Args:
            pixel_values: (tiles, 3, 448, 448) for the whole batch, in prompt order.
            input_ids, attention_mask, position_ids: (B, L) as for any causal LM.
            image_flags: (tiles,) or (tiles, 1); 0 marks a dummy tile of a text-only sample.
            labels: (B, L) with -100 where no loss is taken; shifted inside.

        Returns:
            ``CausalLMOutputWithPast`` (loss when labels are given).
        """
        vit_embeds = self.extract_feature(pixel_values)
        if image_flags is not None:
            vit_embeds = vit_embeds[image_flags.reshape(-1) == 1]
        inputs_embeds = self._splice(input_ids, vit_embeds)
        out = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        if return_dict is False:
            return out.to_tuple()
        return CausalLMOutputWithPast(
            loss=out.loss,
            logits=out.logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )

    # ---------------------------------------------------------------- inference
    def _build_prompt(self, question, history=None, num_patches_list=None):
        """The full prompt text for one question, with image placeholders expanded.

        Args:
            question: the user's text; ``<image>`` marks where an image goes. When images are
                given (num_patches_list) and there are fewer ``<image>`` marks in the history and
                question than images, ``<image>\\n`` is put in front of the question.
            history: earlier (question, answer) pairs, as returned by ``chat(return_history=True)``.
            num_patches_list: tiles per image, e.g. [7]; [] or None for a text-only question.

        Returns:
            (prompt, question) — the question possibly with ``<image>\\n`` added (kept in history).
        """
        num_patches_list = list(num_patches_list or [])
        history = list(history or [])
        marks = question.count("<image>") + sum(q.count("<image>") for q, _ in history)
        if num_patches_list and marks < len(num_patches_list):
            question = "<image>\n" + question
        conv = get_conv_template(self.template)
        conv.system_message = self.system_message
        for old_q, old_a in history:
            conv.append_message(conv.roles[0], old_q)
            conv.append_message(conv.roles[1], old_a)
        conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], None)
        prompt = conv.get_prompt()
        for n in num_patches_list:
            tokens = IMG_START_TOKEN + IMG_CONTEXT_TOKEN * (self.num_image_token * n) + IMG_END_TOKEN
            prompt = prompt.replace("<image>", tokens, 1)
        return prompt, question

    def _generation_kwargs(self, tokenizer, generation_config):
        """Caller's settings as generate() kwargs, stopping at <|im_end|> (and EOS) by default."""
        sep = get_conv_template(self.template).sep
        stop = [tokenizer.convert_tokens_to_ids(sep)]
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stop:
            stop.append(tokenizer.eos_token_id)
        if isinstance(generation_config, GenerationConfig):
            config = copy.deepcopy(generation_config)
            config.eos_token_id = config.eos_token_id if config.eos_token_id is not None else stop
            config.pad_token_id = config.pad_token_id if config.pad_token_id is not None else tokenizer.pad_token_id
            return {"generation_config": config}, sep
        kwargs = dict(generation_config) if generation_config is not None else {"max_new_tokens": 256, "do_sample": False}
        kwargs.setdefault("eos_token_id", stop)
        kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
        return kwargs, sep

    def chat(
        self,
        tokenizer,
        pixel_values,
        question,
        generation_config=None,
        history=None,
        return_history=False,
        num_patches_list=None,
        IMG_START_TOKEN=IMG_START_TOKEN,
        IMG_END_TOKEN=IMG_END_TOKEN,
        IMG_CONTEXT_TOKEN=IMG_CONTEXT_TOKEN,
        verbose=False,
    ):
        """Answer one question about zero or more images, optionally continuing a conversation.

        Args:
            tokenizer: the checkpoint's tokenizer.
            pixel_values: (tiles, 3, 448, 448) tensor for all images of this turn, or None.
            question: user text; see :meth:`_build_prompt` for ``<image>`` handling.
            generation_config: dict of generate() kwargs (max_new_tokens, do_sample, streamer...)
                or a ``GenerationConfig``; None means greedy, 256 new tokens.
            history: list of (question, answer) from an earlier call, or None.
            return_history: also return the updated history.
            num_patches_list: tiles per image; default: one image with all tiles.
            IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN: placeholder spellings (InternVL's).
            verbose: print the prompt (image tokens collapsed) and the answer.

        Returns:
            The answer string, or (answer, history) when return_history is True.

        Example:
            >>> # answer, hist = model.chat(tok, pv, "图片中的菜叫什么名字?", dict(max_new_tokens=32),
            >>> #                           return_history=True)
            >>> # model.chat(tok, pv, "它属于哪个菜系?", None, history=hist)
        """
        if num_patches_list is None:
            num_patches_list = [pixel_values.shape[0]] if pixel_values is not None else []
        if pixel_values is not None and len(pixel_values) != sum(num_patches_list):
            raise ValueError(f"pixel_values has {len(pixel_values)} tiles but num_patches_list sums to {sum(num_patches_list)}")
        self.img_context_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
        history = list(history or [])
        prompt, question = self._build_prompt(question, history, num_patches_list)
        inputs = tokenizer(prompt, return_tensors="pt")
        device = self.language_model.device
        kwargs, sep = self._generation_kwargs(tokenizer, generation_config)
        output = self.generate(
            pixel_values=pixel_values,
            input_ids=inputs["input_ids"].to(device),
            attention_mask=inputs["attention_mask"].to(device),
            **kwargs,
        )
        response = tokenizer.batch_decode(output, skip_special_tokens=True)[0].split(sep)[0].strip()
        history.append((question, response))
        if verbose:
            shown = prompt.replace(IMG_CONTEXT_TOKEN * self.num_image_token, "<IMG_CONTEXT*{}>".format(self.num_image_token))
            print(shown, response)
        return (response, history) if return_history else response

    def batch_chat(
        self,
        tokenizer,
        pixel_values,
        questions,
        generation_config=None,
        num_patches_list=None,
        history=None,
        return_history=False,
        IMG_START_TOKEN=IMG_START_TOKEN,
        IMG_END_TOKEN=IMG_END_TOKEN,
        IMG_CONTEXT_TOKEN=IMG_CONTEXT_TOKEN,
        verbose=False,
        image_counts=None,
    ):
        """Answer several single-turn questions at once, one image each (left-padded batch).

        Args:
            tokenizer: the checkpoint's tokenizer (needs a pad token).
            pixel_values: tiles of all images concatenated in question order, or None.
            questions: list of question strings.
            generation_config: as in :meth:`chat`.
            num_patches_list: tiles per question's image; must be given with pixel_values.
            history, return_history: not supported (kept for signature compatibility).
            image_counts: unused, kept for signature compatibility.

        Returns:
            List of answer strings.
        """
        if history is not None or return_history:
            raise NotImplementedError("batch_chat answers single-turn questions; use chat() for history")
        if num_patches_list is None:
            if pixel_values is not None and len(questions) > 1:
                raise ValueError("batch_chat needs num_patches_list (tiles per question) when given several images")
            num_patches_list = [pixel_values.shape[0]] if pixel_values is not None else [0] * len(questions)
        if len(num_patches_list) != len(questions):
            raise ValueError(f"{len(questions)} questions but num_patches_list has {len(num_patches_list)} entries")
        self.img_context_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
        prompts = [self._build_prompt(q, None, [n] if n else [])[0] for q, n in zip(questions, num_patches_list)]
        old_side = tokenizer.padding_side
        tokenizer.padding_side = "left"  # generation continues at the right end of every row
        try:
            inputs = tokenizer(prompts, return_tensors="pt", padding=True)
        finally:
            tokenizer.padding_side = old_side
        device = self.language_model.device
        kwargs, sep = self._generation_kwargs(tokenizer, generation_config)
        output = self.generate(
            pixel_values=pixel_values,
            input_ids=inputs["input_ids"].to(device),
            attention_mask=inputs["attention_mask"].to(device),
            **kwargs,
        )
        responses = [r.split(sep)[0].strip() for r in tokenizer.batch_decode(output, skip_special_tokens=True)]
        if verbose:
            for q, r in zip(questions, responses):
                print(q, "->", r)
        return responses

    @torch.no_grad()
    def generate(
        self,
        pixel_values=None,
        input_ids=None,
        attention_mask=None,
        visual_features=None,
        generation_config=None,
        output_hidden_states=None,
        **generate_kwargs,
    ):
        """Splice image features in at <IMG_CONTEXT> and let the LLM generate from embeddings.

        Returns only the new tokens (generation starts from ``inputs_embeds``). Any
        ``GenerationMixin.generate`` kwarg passes through (``streamer``, ``max_new_tokens``,
        ``do_sample``, ``use_cache``...). Without an ``eos_token_id`` it stops at the ids of the
        checkpoint's generation_config.json (``<|im_end|>`` and ``</s>``).
        """
        if pixel_values is not None or visual_features is not None:
            vit_embeds = visual_features if visual_features is not None else self.extract_feature(pixel_values)
            inputs_embeds = self._splice(input_ids, vit_embeds)
        else:
            inputs_embeds = self.language_model.get_input_embeddings()(input_ids)
        generate_kwargs.setdefault("use_cache", True)
        if generation_config is not None:
            generate_kwargs["generation_config"] = generation_config
        elif "eos_token_id" not in generate_kwargs:
            # The LLM's own config only knows </s>; the checkpoint's generation_config.json adds
            # <|im_end|>, where a chat answer ends.
            outer = getattr(self, "generation_config", None)
            if outer is not None and outer.eos_token_id is not None:
                generate_kwargs["eos_token_id"] = outer.eos_token_id
        return self.language_model.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            **generate_kwargs,
        )

