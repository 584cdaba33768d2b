"""The size-defining fields of the published InternVL configs (1.5, InternVL2-1B/2B/8B) and their published sizes.

Facts about the models, shared by the architecture arithmetic (notebook 02), the memory tables and the
replica of the published InternVL2-2B layout.
"""

# Size-defining fields of public config.json files (Hugging Face, OpenGVLab/<name>/config.json).
# Only what determines the parameter count and the token arithmetic is kept.
_INTERNVIT_300M = dict(  # OpenGVLab/InternVL2-{1B,2B,8B} config.json "vision_config" (InternViT-300M-448px)
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
    patch_size=14, image_size=448, qkv_bias=True, qk_normalization=False, norm_type="layer_norm",
)
_INTERNVIT_6B_V1_5 = dict(  # OpenGVLab/InternVL-Chat-V1-5 config.json "vision_config" (InternViT-6B-448px-V1-5)
    hidden_size=3200, intermediate_size=12800, num_hidden_layers=45, num_attention_heads=25,
    patch_size=14, image_size=448, qkv_bias=False, qk_normalization=True, norm_type="rms_norm",
)

REFERENCE_CONFIGS = {
    "InternVL-Chat-V1-5": dict(
        downsample_ratio=0.5, force_image_size=448, max_dynamic_patch=12, use_thumbnail=True,
        vision_config=_INTERNVIT_6B_V1_5,
        llm_config=dict(  # "llm_config" (internlm/internlm2-chat-20b, vocabulary grown to 92553)
            architectures=["InternLM2ForCausalLM"], hidden_size=6144, intermediate_size=16384,
            num_hidden_layers=48, num_attention_heads=48, num_key_value_heads=8,
            vocab_size=92553, bias=False, tie_word_embeddings=False),
    ),
    "InternVL2-1B": dict(
        downsample_ratio=0.5, force_image_size=448, max_dynamic_patch=12, use_thumbnail=True,
        vision_config=_INTERNVIT_300M,
        llm_config=dict(  # "llm_config" (Qwen/Qwen2-0.5B-Instruct; untied head, vocabulary 151655)
            architectures=["Qwen2ForCausalLM"], hidden_size=896, intermediate_size=4864,
            num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
            vocab_size=151655, tie_word_embeddings=False),
    ),
    "InternVL2-2B": dict(
        downsample_ratio=0.5, force_image_size=448, max_dynamic_patch=12, use_thumbnail=True,
        vision_config=_INTERNVIT_300M,
        llm_config=dict(  # "llm_config" (internlm/internlm2-chat-1_8b)
            architectures=["InternLM2ForCausalLM"], hidden_size=2048, intermediate_size=8192,
            num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=8,
            vocab_size=92553, bias=False, tie_word_embeddings=False),
    ),
    "InternVL2-8B": dict(
        downsample_ratio=0.5, force_image_size=448, max_dynamic_patch=12, use_thumbnail=True,
        vision_config=_INTERNVIT_300M,
        llm_config=dict(  # "llm_config" (internlm/internlm2_5-7b-chat)
            architectures=["InternLM2ForCausalLM"], hidden_size=4096, intermediate_size=14336,
            num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
            vocab_size=92553, bias=False, tie_word_embeddings=False),
    ),
}

# Sizes the model cards publish (billions), to check the arithmetic against.
# InternVL 1.5 blog/model card: total 25.51B = ViT 5.54B + MLP 116.43M + LLM 19.86B.
# InternVL2 model cards: "Model Size" 0.9B / 2.2B / 8.1B (Hub parameter counts 0.94B / 2.21B / 8.08B).
PUBLISHED_SIZES_B = {
    "InternVL-Chat-V1-5": 25.51,
    "InternVL2-1B": 0.94,
    "InternVL2-2B": 2.21,
    "InternVL2-8B": 8.08,
}
