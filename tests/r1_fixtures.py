"""Tiny SegEarth-R1 models and checkpoints written in the released on-disk layout (by
:mod:`segearth_geo.model.testing`, which benchmarks use too).

* :func:`tiny_r1_tokenizer` — a byte-level BPE (``<|endoftext|>`` = 0) with ``[PAD]`` then ``[SEG]`` added last,
  as the official training adds them to the Phi-1.5 tokenizer (§4).
* :func:`write_slow_tokenizer` — the files a slow ``CodeGenTokenizer`` ``save_pretrained`` leaves: ``vocab.json``,
  ``merges.txt``, ``added_tokens.json``, ``special_tokens_map.json``, ``tokenizer_config.json`` (no tokenizer.json).
* :func:`write_official_checkpoint` — ``config.json`` (official ``llava_phi`` fields + our block), fused
  ``query_key_value`` weights as transformers 4.36 saves them, safetensors (single or sharded + index) or
  ``pytorch_model.bin``, and the slow tokenizer files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from segearth_geo.model.testing import r1_config, r1_tokenizer, random_r1, write_r1_tokenizer_files, write_random_r1

# The spec's inventory (from instantiating the official class), copied into the repository so that CI runs the test.
R1_INVENTORY = Path(__file__).resolve().parent / "data" / "segearth_r1_state_dict_keys.txt"


def tiny_r1_tokenizer():
    """Fast tokenizer: BPE + ``[PAD]`` (special) + ``[SEG]`` (plain), in that order (ids V−2, V−1)."""
    return r1_tokenizer("tiny")


def write_slow_tokenizer(folder: Path) -> Path:
    """The slow-tokenizer files of the tiny tokenizer (what the official training saves)."""
    return write_r1_tokenizer_files(folder)


def tiny_r1_config(**overrides):
    return r1_config("tiny", **overrides)


def tiny_r1_model(seed: int = 0, **overrides):
    """A deterministic tiny SegEarth-R1 in eval mode; LayerNorm/zero-initialised tensors are randomised too so
    that a wrong key mapping cannot hide behind identical defaults."""
    return random_r1("tiny", seed, **overrides)


def write_official_checkpoint(model, folder: Path, *, fused: bool = True, fmt: str = "safetensors",
                              dtype: torch.dtype | None = None) -> Path:
    """Save ``model`` + the tiny slow tokenizer in the released layout.

    ``fmt``: ``"safetensors"`` (one file), ``"sharded"`` (safetensors shards + index), ``"bin"``.
    """
    return write_random_r1(folder, model=model, fused=fused, fmt=fmt, dtype=dtype)


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
