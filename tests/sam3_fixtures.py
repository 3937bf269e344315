"""Tiny random SAM3 checkpoints written in the real on-disk layouts, for the SAM3 adapter tests.

Two layouts, both loaded by ``Sam3Model.from_pretrained``:

* ``"hub"`` — what ``facebook/sam3`` ships: ``config.json`` with ``model_type`` ``"sam3_video"``
  (``architectures: ["Sam3VideoModel"]``) holding the image detector under ``detector_config``, weights
  prefixed ``detector_model.`` next to tracker weights (``tracker_model.*``, ignored by the detector);
* ``"model"`` — ``Sam3Model.save_pretrained`` (``model_type`` ``"sam3"``).

Both get the CLIP BPE tokenizer saved with ``save_pretrained`` (a byte-level vocabulary: 256 byte symbols,
the same with ``</w>``, a few merges and CLIP's two special tokens, so any text tokenizes) and a
``processor_config.json`` in ``Sam3Processor``'s format (an ``image_processor`` section with the input
size and normalisation). No weights are downloaded.

    from tests.sam3_fixtures import write_tiny_sam3
    folder = write_tiny_sam3(tmp_path / "sam3")
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_IMAGE_SIZE = 112  # 8×8 patches of 14 px; masks come out 32×32
TINY_NUM_QUERIES = 8
INIT_STD = 0.2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_MERGES = [("b", "u"), ("i", "l"), ("d", "i"), ("n", "g"), ("r", "o"), ("o", "f"), ("c", "a")]


def tiny_clip_tokenizer():
    """A CLIP BPE tokenizer over a byte-level vocabulary (~530 entries)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())  # the 256 byte symbols
    vocab: dict[str, int] = {}
    for token in symbols + [s + "</w>" for s in symbols]:
        vocab[token] = len(vocab)
    merges = list(_MERGES)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def tiny_sam3_config(vocab_size: int, bos_token_id: int, eos_token_id: int, image_size: int = TINY_IMAGE_SIZE):
    """A ``Sam3Config`` with every part present but a few thousand parameters each.

    Weights are drawn with std ``INIT_STD`` (SAM3's own 0.02 would give every mask pixel a probability of
    0.500 ± 0.001 and every query the same score): so masks have structure and scores differ.
    """
    from transformers import CLIPTextConfig, Sam3Config, Sam3VisionConfig, Sam3ViTConfig

    grid = image_size // 14
    init = dict(initializer_range=INIT_STD)
    backbone = Sam3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                             image_size=image_size, patch_size=14, window_size=4, global_attn_indexes=[1],
                             pretrain_image_size=56, **init)
    vision = Sam3VisionConfig(backbone_config=backbone, fpn_hidden_size=32,
                              backbone_feature_sizes=[[grid * 4] * 2, [grid * 2] * 2, [grid] * 2], **init)
    text = CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, projection_dim=32,
                          num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32,
                          bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id, **init)
    small = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, **init)
    return Sam3Config(
        vision_config=vision,
        text_config=text,
        geometry_encoder_config=dict(num_layers=1, **small),
        detr_encoder_config=dict(num_layers=1, **small),
        detr_decoder_config=dict(num_layers=2, num_queries=TINY_NUM_QUERIES, **small),
        mask_decoder_config=dict(hidden_size=32, num_upsampling_stages=3, num_attention_heads=2, **init),
        **init,
    )


def processor_config(size: int) -> dict:
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


def write_tiny_sam3(folder: str | Path, layout: str = "hub", seed: int = 0, image_size: int = TINY_IMAGE_SIZE) -> Path:
    """Write a tiny random SAM3 checkpoint into ``folder`` (created) in ``layout`` ``"hub"`` or ``"model"``."""
    from safetensors.torch import save_file
    from transformers import Sam3Model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_clip_tokenizer()
    config = tiny_sam3_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, image_size)
    torch.manual_seed(seed)
    model = Sam3Model(config).eval()
    if layout == "model":
        model.save_pretrained(folder)
    elif layout == "hub":
        detector = config.to_dict()
        video = {
            "architectures": ["Sam3VideoModel"],
            "model_type": "sam3_video",
            "detector_config": detector,
            "tracker_config": {"model_type": "sam3_tracker_video"},
        }
        (folder / "config.json").write_text(json.dumps(video, indent=2), encoding="utf-8")
        weights = {f"detector_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
        # Tracker parts of the video checkpoint; the image detector does not use them.
        weights["tracker_model.memory_attention.layers.0.self_attn.q_proj.weight"] = torch.zeros(4, 4)
        weights["tracker_neck.convs.0.conv.weight"] = torch.zeros(4, 4, 1, 1)
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        raise ValueError(f"layout must be 'hub' or 'model', not {layout!r}")
    tokenizer.save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps(processor_config(image_size), indent=2),
                                                  encoding="utf-8")
    return folder
