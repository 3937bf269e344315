"""Tiny SegEarth-R1 models and checkpoints written in the released on-disk layout.

* :func:`tiny_r1_tokenizer` — a byte-level BPE (``<|endoftext|>`` = 0) with ``[PAD]`` then ``[SEG]`` added last,
  as the official training adds them to the Phi-1.5 tokenizer (§4).
* :func:`write_slow_tokenizer` — the files a slow ``CodeGenTokenizer`` ``save_pretrained`` leaves: ``vocab.json``,
  ``merges.txt``, ``added_tokens.json``, ``special_tokens_map.json``, ``tokenizer_config.json`` (no tokenizer.json).
* :func:`write_official_checkpoint` — ``config.json`` (official ``llava_phi`` fields + our block), fused
  ``query_key_value`` weights as transformers 4.36 saves them, safetensors (single or sharded + index) or
  ``pytorch_model.bin``, and the slow tokenizer files.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from segearth_geo.model.segearth_r1.prompt import SYSTEM

# The spec's inventory (from instantiating the official class), copied into the repository so that CI runs the test.
R1_INVENTORY = Path(__file__).resolve().parent / "data" / "segearth_r1_state_dict_keys.txt"
CORPUS = [
    SYSTEM,
    "[INST] <<SYS>> <</SYS>> This is an image , Please doing Referring Segmentation according to the following "
    "instruction: Reasoning [/INST]",
    "segment the buildings next to the road, the white storage tank on the left, water, cars and trees",
    "Where could a small plane land in this image? Which field is the largest?",
] * 4
BPE_SIZE = 400


@functools.lru_cache(maxsize=2)
def _bpe_core():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_SIZE, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(CORPUS, trainer=trainer)
    return core


def tiny_r1_tokenizer():
    """Fast tokenizer: BPE + ``[PAD]`` (special) + ``[SEG]`` (plain), in that order (ids V−2, V−1)."""
    from transformers import AddedToken, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_bpe_core(), eos_token="<|endoftext|>",
                                        bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    tokenizer.add_tokens([AddedToken("[SEG]", lstrip=False, rstrip=False, normalized=False, special=False)])
    return tokenizer


def write_slow_tokenizer(folder: Path) -> Path:
    """The slow-tokenizer files of the tiny tokenizer (what the official training saves)."""
    folder.mkdir(parents=True, exist_ok=True)
    core = _bpe_core()
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


def tiny_r1_config(**overrides):
    from segearth_geo.model.segearth_r1.configuration import SegEarthR1Config

    vocab = len(tiny_r1_tokenizer())
    return SegEarthR1Config.from_preset("tiny", vocab_size=vocab, **overrides)


def tiny_r1_model(seed: int = 0, **overrides):
    """A deterministic tiny SegEarth-R1 in eval mode; LayerNorm/zero-initialised tensors are randomised too so
    that a wrong key mapping cannot hide behind identical defaults."""
    from segearth_geo.model.segearth_r1.modeling import SegEarthR1

    torch.manual_seed(seed)
    model = SegEarthR1(tiny_r1_config(**overrides)).eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and (name.endswith(".bias") or "norm" in name or name == "seg_query"):
                tensor.add_(torch.randn_like(tensor) * 0.05)
    return model


def write_official_checkpoint(model, folder: Path, *, fused: bool = True, fmt: str = "safetensors",
                              dtype: torch.dtype | None = None) -> Path:
    """Save ``model`` + the tiny slow tokenizer in the released layout.

    ``fmt``: ``"safetensors"`` (one file), ``"sharded"`` (safetensors shards + index), ``"bin"``.
    """
    from segearth_geo.model.segearth_r1.checkpoint import save_r1_pretrained

    shard = 40_000 if fmt == "sharded" else 5 * 10**9
    save_r1_pretrained(model, folder, fused_qkv=fused, safe_serialization=fmt != "bin", max_shard_size=shard,
                       dtype=dtype)
    write_slow_tokenizer(folder)
    return folder


def read_r1_inventory(vocab_size: int = 50297) -> dict[str, tuple[int, ...]]:
    """Key → shape of the spec's R1 inventory (``V`` replaced)."""
    shapes = {}
    for line in R1_INVENTORY.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")[:2]
        shapes[key] = tuple(vocab_size if d == "V" else int(d) for d in shape.split("x"))
    return shapes


def tiny_prompt_ids(tokenizer, config, instructions: list[str], template: str = "referring"):
    """(input_ids, refer_ids) lists for the instructions (the segmenter's own encoding)."""
    from segearth_geo.model.segearth_r1.prompt import encode_prompt

    encoded = [encode_prompt(tokenizer, text, template, seg_token_id=config.seg_token_id) for text in instructions]
    return [e.input_ids for e in encoded], [e.refer_ids for e in encoded]
