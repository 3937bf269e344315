"""Training checkpoints: trainable weights, optimizer, scheduler, RNG states and step.

Layout of ``<output_dir>/checkpoints/step-0000100/``::

    trainable.safetensors   every parameter with requires_grad (names as in the training model,
                            e.g. ``model.layers.0.self_attn.q_proj.lora_A.default.weight``)
    optimizer.pt            torch.optim state dict (tensors + numbers; loaded with weights_only)
    scheduler.json          LR scheduler state
    rng-rank{r}.json        python / numpy / torch (CPU, CUDA) RNG states of rank r
    state.json              {"step": …, "world_size": …, "config": {…}}

A directory is written under a temporary name and renamed when complete, so a crash never
leaves a half checkpoint that ``--resume auto`` would pick.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from segearth_geo.errors import CheckpointError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
PREFIX = "step-"


@dataclass
class RngState:
    """Every random state the training loop consumes."""

    python: Any
    numpy: Any
    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor]

    @classmethod
    def capture(cls) -> RngState:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return cls(random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda)

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.torch_cuda)

    def to_json(self) -> dict[str, Any]:
        version, internal, gauss = self.python
        name, keys, pos, has_gauss, cached = self.numpy
        b64 = lambda t: base64.b64encode(t.numpy().tobytes()).decode()
        return {
            "python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "torch_cpu": b64(self.torch_cpu),
            "torch_cuda": [b64(t) for t in self.torch_cuda],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RngState:
        version, internal, gauss = data["python"]
        name, keys, pos, has_gauss, cached = data["numpy"]
        unb64 = lambda s: torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()
        return cls(
            (version, tuple(internal), gauss),
            (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached),
            unb64(data["torch_cpu"]),
            [unb64(s) for s in data["torch_cuda"]],
        )


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` of every parameter that requires grad (detached CPU copies)."""
    return {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy saved trainable tensors into ``model``; names and shapes must match its trainable set exactly."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match this training setup (same model, LoRA and train_* options?): "
            f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
        )
    with torch.no_grad():
        for name, param in params.items():
            value = tensors[name]
            if value.shape != param.shape:
                raise CheckpointError(f"{source}: {name} has shape {tuple(value.shape)}, expected {tuple(param.shape)}")
            param.copy_(value.to(param.dtype))


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"{PREFIX}{step:07d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(output_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """``None`` → no resume; ``"auto"`` → latest checkpoint of ``output_dir`` (None if there is none); else a folder."""
    if resume is None:
        return None
    if resume == "auto":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if path.is_dir() and not (path / "state.json").is_file():
        found = list_checkpoints(path)  # a run folder
        if found:
            return found[-1]
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{path} is not a training checkpoint (no state.json); pass a step-… folder or 'auto'")
    return path


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    rng: RngState,
    config: dict[str, Any],
    rank: int = 0,
    world_size: int = 1,
    keep: int = 2,
    barrier=None,
) -> Path:
    """Write a checkpoint (rank 0 writes weights and optimizer; every rank its RNG). Returns its folder."""
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "scheduler.json").write_text(json.dumps(scheduler.state_dict()), encoding="utf-8")
    if barrier:
        barrier()
    (tmp / f"rng-rank{rank}.json").write_text(json.dumps(rng.to_json()), encoding="utf-8")
    if barrier:
        barrier()
    if rank == 0:
        state = {"step": step, "world_size": world_size, "config": config}
        (tmp / "state.json").write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint saved: %s", final)
    if barrier:
        barrier()
    return final


@dataclass
class LoadedCheckpoint:
    step: int
    rng: RngState | None
    path: Path


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, rank: int = 0,
                    world_size: int = 1) -> LoadedCheckpoint:
    """Restore weights, optimizer and scheduler; return the step and this rank's RNG state."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        load_trainable_state(model, load_file(str(path / "trainable.safetensors")), str(path))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
        scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"cannot resume from {path}: {exc}") from exc
    rng_file = path / f"rng-rank{rank}.json"
    rng = None
    if state.get("world_size", 1) == world_size and rng_file.is_file():
        rng = RngState.from_json(json.loads(rng_file.read_text(encoding="utf-8")))
    else:
        log.warning("resuming %s with %d processes (saved with %s): RNG streams restart, the run is not bit-exact",
                    path, world_size, state.get("world_size"))
    return LoadedCheckpoint(int(state["step"]), rng, path)
