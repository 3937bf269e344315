"""Where training samples come from, and a sample order that depends only on the step.

Sources: the SynthEarth in-memory generator (``dataset: synthearth`` without ``data_root``; ``synth_samples``
samples of the split, each generated when read), any
benchmark reader of :func:`segearth_geo.data.open_dataset` (``dataset: lasers`` … with
``data_root``), or ``"module:function"`` / ``"file.py:function"`` returning a sequence of samples
(called as ``function(split=..., chip_size=..., seed=...)``).

Order: micro-batch ``k`` of rank ``r`` holds the samples at global positions
``(k·world + r)·batch + j``; for a finite source a position maps through a per-epoch permutation
drawn from ``(seed, epoch)``. Nothing is stateful, so resuming at step ``s`` simply restarts at
micro-batch ``s·grad_accum``, with any number of loader workers.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from segearth_geo.errors import UsageError


def _factory(spec: str):
    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser().resolve()
            name = f"_segearth_train_data_{abs(hash(str(path)))}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            if module_spec is None or module_spec.loader is None:
                raise UsageError(f"cannot import training data module {path}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        return getattr(module, attr)
    except (ImportError, AttributeError, OSError, SyntaxError) as exc:
        raise UsageError(f"cannot load training data factory {spec!r}: {exc}") from exc


def open_source(dataset: str, data_root: str | None, split: str, chip_size: int, seed: int,
                synth_samples: int = 100_000) -> Sequence:
    """The sample sequence for ``dataset`` (see the module docstring); ``synth_samples`` sizes a generated split."""
    if ":" in dataset and not (len(dataset) > 1 and dataset[1] == ":" and dataset[0].isalpha()):
        samples = _factory(dataset)(split=split, chip_size=chip_size, seed=seed)
    elif dataset.lower() == "synthearth" and data_root is None:
        samples = _synthearth_generator(split, chip_size, seed, synth_samples)
    else:
        if data_root is None:
            raise UsageError(f"dataset {dataset!r} needs data_root (the folder holding the benchmark)")
        from segearth_geo.data.registry import open_dataset

        samples = open_dataset(dataset, data_root, split)
    if len(samples) == 0:
        raise UsageError(f"the training source {dataset!r} ({split}) has no samples")
    return samples


def _synthearth_generator(split: str, chip_size: int, seed: int, size: int) -> Sequence:
    from segearth_geo.synthetic.dataset import SynthEarthSamples

    return SynthEarthSamples(split, n=size, seed=seed, size=chip_size)


class SampleOrder:
    """Global sample position → index into a source of ``size`` samples (per-epoch permutation)."""

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle and size <= 10**7  # generators are already random by index
        self._epoch = -1
        self._perm: torch.Tensor | None = None

    def __call__(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if not self.shuffle:
            return offset
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.size, generator=gen)
            self._epoch = epoch
        return int(self._perm[offset])


class MicroBatches(torch.utils.data.Dataset):
    """Dataset whose item ``k`` is the collated micro-batch ``k`` of this rank."""

    def __init__(self, samples: Sequence, collate, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.samples = samples
        self.collate = collate
        self.batch_size = batch_size
        self.rank = rank
        self.world = world
        self.order = SampleOrder(len(samples), seed)

    def positions(self, k: int) -> list[int]:
        first = (k * self.world + self.rank) * self.batch_size
        return [self.order(first + j) for j in range(self.batch_size)]

    def __len__(self) -> int:  # only used by samplers; micro-batches are addressed explicitly
        return 2**62

    def __getitem__(self, k: int) -> Any:
        return self.collate([self.samples[i] for i in self.positions(k)])


def micro_batches(dataset: MicroBatches, start: int, num_workers: int = 0) -> Iterator[Any]:
    """Collated micro-batches ``start, start+1, …`` (in order, also with worker processes)."""
    if num_workers <= 0:
        k = start
        while True:
            yield dataset[k]
            k += 1
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=_Counter(start), num_workers=num_workers,
        collate_fn=_identity, persistent_workers=False, prefetch_factor=2,
        generator=torch.Generator(),  # its own seed source: the global RNG stream stays the model's
    )
    yield from loader


def _identity(item: Any) -> Any:
    return item


class _Counter(torch.utils.data.Sampler):
    def __init__(self, start: int) -> None:
        self.start = start

    def __iter__(self):
        k = self.start
        while True:
            yield k
            k += 1
