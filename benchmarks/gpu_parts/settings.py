"""What the suite runs: the real settings (one GPU, real model sizes, bf16) and the dry run (CPU, tiny presets).

The dry run takes every step of the real run with tiny presets, short sweeps and a small scene, so that the
suite cannot rot between GPU lendings (it runs in CI and in ``tests/test_gpu_suite.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class TimeBox:
    """How long one timed measurement runs: at least ``min_calls`` calls and ``min_s`` seconds (after one
    warm-up call), never more calls once ``max_s`` seconds are spent."""

    min_calls: int
    min_s: float
    max_s: float


@dataclass(frozen=True)
class Settings:
    """Everything a part needs to know about the run (passed to each part's process)."""

    dry_run: bool
    device: str
    dtype: str
    r2_preset: str
    r1_preset: str
    sam3_preset: str
    answer_lengths: tuple[int, ...]  # SegEarth-R2 forced answer lengths (ids, the last one [SEG])
    sweep: tuple[int, ...]  # batch sizes tried, in order; the sweep stops at the first out-of-memory
    concepts: tuple[int, ...]  # SAM3 concepts per prompt
    box: TimeBox
    naive_chips: int  # chips through the naive official-style loop (after one warm-up chip)
    reprompt_chips: int  # most chips in the re-prompt figure (the cache must hold all of them)
    reprompt_repeats: int  # first/second prompt pairs, each on other chips and a fresh cache (the fastest counts)
    profile_batch1: bool  # also profile batch 1 (always the best batch)
    instances_per_concept: int  # SAM3's score threshold is set so that random weights keep about this many
    scene_side: int  # the engine's generated scene (pixels per side)
    serve_chips: int  # chips timed in-process and through the server
    max_call_s: float  # a sweep stops before a batch size whose calls would take longer than this
    budget_s: float  # the whole suite
    caps_s: dict[str, float] = field(default_factory=dict)  # per part: killed after this

    def to_dict(self) -> dict:
        return asdict(self)


REAL = Settings(
    dry_run=False, device="cuda", dtype="bfloat16",
    r2_preset="segearth-r2-3b", r1_preset="segearth-r1", sam3_preset="sam3",
    answer_lengths=(8, 32), sweep=(1, 4, 16, 32), concepts=(1, 4),
    box=TimeBox(min_calls=2, min_s=2.0, max_s=6.0),
    naive_chips=4, reprompt_chips=16, reprompt_repeats=2, profile_batch1=True, instances_per_concept=10,
    scene_side=16384, serve_chips=128,
    max_call_s=15.0, budget_s=480.0,
    caps_s={"segearth-r2": 200.0, "sam3": 110.0, "segearth-r1": 80.0, "engine": 150.0, "serve": 120.0},
)

DRY = Settings(
    dry_run=True, device="cpu", dtype="float32",
    r2_preset="tiny", r1_preset="tiny", sam3_preset="tiny",
    answer_lengths=(8, 16), sweep=(1, 4), concepts=(1, 4),
    box=TimeBox(min_calls=1, min_s=0.1, max_s=1.0),
    naive_chips=2, reprompt_chips=4, reprompt_repeats=1, profile_batch1=False, instances_per_concept=3,
    scene_side=768, serve_chips=16,
    max_call_s=15.0, budget_s=600.0,
    caps_s={"segearth-r2": 180.0, "sam3": 120.0, "segearth-r1": 120.0, "engine": 180.0, "serve": 180.0},
)
