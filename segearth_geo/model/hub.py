"""The Hugging Face Hub for every backend: the one repo-id rule and the one download.

* :func:`looks_like_repo_id` – what counts as ``owner/name`` (and not as a local path);
* :func:`download` – the local snapshot of a repo: the cache first, then the hub, one-line errors;
* :func:`is_cached` – whether a repo's ``config.json`` and weights are already in the local cache;
* :func:`local_or_download` – a checkpoint folder, or a repo id turned into one.

Nothing here imports torch; ``huggingface_hub`` is imported when a function needs it.
"""

from __future__ import annotations

import os
from pathlib import Path

from segearth_geo.errors import CheckpointError
from segearth_geo.model.checkpoint_files import CONFIG_NAME, WEIGHT_LAYOUTS

# What a checkpoint needs from a repo: config, weights, tokenizer files.
WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]
WEIGHT_NAMES = tuple(name for names in WEIGHT_LAYOUTS.values() for name in names)


def looks_like_repo_id(text: str) -> bool:
    """``owner/name``: exactly two non-empty parts of letters, digits, ``-``, ``_`` and ``.``, not a relative
    path (``./x``, ``~/x``). An existing local folder of that name is the caller's to prefer."""
    parts = text.split("/")
    return (len(parts) == 2 and all(parts) and not text.startswith((".", "~"))
            and all(p.replace("-", "").replace("_", "").replace(".", "").isalnum() for p in parts))


def offline() -> bool:
    """``HF_HUB_OFFLINE`` is set to a true value."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download(repo_id: str, gated: bool = False) -> Path:
    """The local snapshot of ``repo_id`` (config, weights, tokenizer files): the cache first, then the hub.

    ``gated``: the hub asks users to accept a licence first (said in the error).
    Raises:
        CheckpointError: one line naming the id, the cache folder and how to authenticate.
    """
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=WEIGHT_PATTERNS, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - the hub raises many unrelated types; reported below
        reason = f"not in the local cache ({type(exc).__name__})"
    if offline():
        reason += "; HF_HUB_OFFLINE is set"
    else:
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=WEIGHT_PATTERNS))
            if not any(folder.glob("*.safetensors")):  # an older release with pytorch_model*.bin only
                folder = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.bin"]))
            return folder
        except Exception as exc:  # noqa: BLE001
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            reason += f"; download failed: {type(exc).__name__}: {first}"
    gate = " (a gated model: accept its licence on huggingface.co first)" if gated else ""
    raise CheckpointError(
        f"cannot fetch {repo_id!r} (config.json, weights, tokenizer files) from the Hugging Face Hub and there is "
        f"no local folder of that name ({reason}); cache: {constants.HF_HUB_CACHE}. "
        f"To download{gate}: go online, set HF_TOKEN or run `hf auth login` (`huggingface-cli login`), then "
        f"`hf download {repo_id}`; or pass a local checkpoint folder"
    )


def is_cached(repo_id: str) -> bool:
    """The repo's ``config.json`` and weights are in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, name), str)

    return cached(CONFIG_NAME) and any(cached(name) for name in WEIGHT_NAMES)


def local_or_download(path_or_repo_id: str | Path, expected: str) -> Path:
    """A local checkpoint folder, or a repo id (:func:`looks_like_repo_id`) from the cache or the hub.

    ``expected`` says what the folder should hold, for the "not found" error.
    """
    text = str(path_or_repo_id)
    local = Path(text).expanduser()
    if os.path.isdir(local):  # never raises (a name too long for a path is not a folder)
        return local
    if os.path.lexists(local) or not looks_like_repo_id(text):
        raise CheckpointError(f"checkpoint directory not found: {local.resolve()} (expected a folder with "
                              f"{expected}, or a Hugging Face repo id 'owner/name')")
    return download(text)
