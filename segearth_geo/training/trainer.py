"""The training loop behind ``segearth-geo train`` (spec §8–§10).

``train(config, resume=None)`` builds the model (:mod:`.setup`), the data stream (:mod:`.data`),
AdamW with a linear warm-up + cosine (or constant) schedule, and runs ``max_steps`` optimizer
steps of ``grad_accum`` micro-batches each. Per step it logs the loss parts (progress bar, CSV
``<output_dir>/log.csv``, TensorBoard ``<output_dir>/tb``), saves checkpoints every
``save_every`` steps (:mod:`.state`), evaluates every ``eval_every`` steps when asked, and at the
end writes the merged inference checkpoint ``<output_dir>/final`` (:mod:`.merge`).

Exact resume: the data order is a pure function of the step (:class:`.data.MicroBatches`) and
checkpoints carry weights, optimizer, scheduler and every RNG state, so ``N`` uninterrupted steps
equal ``N/2`` + resume + ``N/2``. Ctrl-C (``KeyboardInterrupt``) saves the last completed step with
the RNG state from that step's start, then re-raises.

Multi-process: started by ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DDP
(gloo on CPU, NCCL on CUDA); each rank reads its own micro-batches; rank 0 writes files.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from segearth_geo.errors import UsageError
from segearth_geo.model.device import pick_device
from segearth_geo.training.config import TrainConfig
from segearth_geo.training.forward import LossParts, LossWeights, TrainingModule
from segearth_geo.training.losses import MaskLossSettings

log = logging.getLogger(__name__)

LOG_FIELDS = ["step", "lr", "loss", "text", "bce", "dice", "attn", "targets", "seconds"]


@dataclass
class TrainResult:
    """What a run produced."""

    output_dir: Path
    step: int
    checkpoint: Path | None
    merged: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    evaluations: list[dict[str, float]] = field(default_factory=list)
    interrupted: bool = False


def lr_lambda(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the base LR after ``step`` optimizer steps (HF cosine-with-warm-up semantics)."""
    if step < warmup:
        return step / warmup  # the first step runs at LR 0, as in transformers' scheduler
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


class _Distributed:
    """Process-group bookkeeping; a no-op for single-process runs."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.started = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.started = True

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean_targets(self, n: int, device) -> float:
        """``M``: targets per rank averaged over ranks (the mask-loss normalizer)."""
        if self.world == 1:
            return float(n)
        t = torch.tensor([float(n)], device=device)
        dist.all_reduce(t)
        return t.item() / self.world

    def close(self) -> None:
        if self.started:
            dist.destroy_process_group()


def _canvas_side(cfg: TrainConfig) -> int:
    """Side of generated training chips: ``synth_chip_size`` or the model's canvas ``S``."""
    from segearth_geo.model.segearth_r2.configuration import PRESET_NAMES, SegEarthR2Config

    if cfg.synth_chip_size:
        return int(cfg.synth_chip_size)
    source = Path(cfg.model).expanduser()
    if source.is_dir():
        return SegEarthR2Config.from_json(source).mask.image_size
    if cfg.model in PRESET_NAMES:
        return SegEarthR2Config.from_preset(cfg.model, **cfg.model_overrides).mask.image_size
    raise UsageError(f"model {cfg.model!r} is neither a checkpoint folder nor a preset ({', '.join(PRESET_NAMES)})")


def _sample_texts(samples, count: int) -> list[str]:
    """Instructions and answers of the first ``count`` samples (for training a small tokenizer)."""
    texts = []
    for i in range(min(count, len(samples))):
        s = samples[i]
        texts += [s.instruction, s.answer]
    return texts


def train(config: TrainConfig, resume: str | None = None) -> TrainResult:
    """Run (or continue) a training run; see the module docstring."""
    from segearth_geo.training import setup
    from segearth_geo.training.collate import Collator
    from segearth_geo.training.data import MicroBatches, micro_batches, open_source
    from segearth_geo.training.state import (
        RngState,
        load_checkpoint,
        resolve_resume,
        save_checkpoint,
    )

    cfg = config
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ddp = _Distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank if ddp.world > 1 else (device.index or 0))
        torch.cuda.set_device(device)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resume_from = resolve_resume(resume, out)
    if ddp.rank == 0:
        cfg.save(out / "train_config.yaml")

    # -- data first (a trained tokenizer reads its texts), sized by the model's canvas
    samples = open_source(cfg.dataset, cfg.data_root, cfg.split, _canvas_side(cfg), cfg.synth_seed, cfg.synth_samples)
    texts = _sample_texts(samples, cfg.tokenizer_corpus_samples)
    built = setup.build_model(cfg, out, texts=texts, rank=ddp.rank, barrier=ddp.barrier)
    model, tokenizer = built.model, built.tokenizer
    if cfg.use_lora:
        n_lora = setup.add_lora(model, cfg)
        log.info("LoRA on %d modules (r=%d, alpha=%d)", n_lora, cfg.lora_r, cfg.lora_alpha)
    trainable, total = setup.select_trainable(model, cfg)
    log.info("trainable parameters: %d of %d (%.2f %%)", trainable, total, 100 * trainable / max(total, 1))
    model.to(device)
    if cfg.gradient_checkpointing:
        model.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    module = TrainingModule(
        model,
        MaskLossSettings(cfg.num_points, cfg.oversample_ratio, cfg.importance_sample_ratio, cfg.bce_weight,
                         cfg.dice_weight),
        LossWeights(cfg.text_weight, cfg.lambda_attn, cfg.attn_loss_variant),
    )
    runner = module
    if ddp.world > 1:
        runner = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                                  weight_decay=cfg.weight_decay)
    warmup = math.ceil(cfg.warmup_ratio * cfg.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, warmup, cfg.max_steps, cfg.lr_schedule)
    )
    step = 0
    if resume_from is not None:
        loaded = load_checkpoint(resume_from, model, optimizer, scheduler, ddp.rank, ddp.world)
        step = loaded.step
        if loaded.rng is not None:
            loaded.rng.restore()
        log.info("resumed from %s at step %d", resume_from, step)
    else:
        torch.manual_seed(cfg.seed + 1000 * ddp.rank)

    collate = Collator(tokenizer, model.config, cfg.max_length, cfg.attn_gt_size)
    stream = micro_batches(MicroBatches(samples, collate, cfg.batch_size, cfg.seed, ddp.rank, ddp.world),
                           start=step * cfg.grad_accum, num_workers=cfg.num_workers)
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext

    result = TrainResult(out, step, None, None)
    writer = _Logs(out, enabled=ddp.rank == 0, append=resume_from is not None)
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.max_steps, initial=step, disable=not cfg.progress or ddp.rank != 0, unit="step",
               desc="train", dynamic_ncols=True)
    setup.set_train_mode(model, cfg)
    rng_at_step_start = RngState.capture()
    save = lambda s, rng: save_checkpoint(
        out, s, model, optimizer, scheduler, rng, cfg.to_dict(), ddp.rank, ddp.world, cfg.keep_checkpoints,
        ddp.barrier,
    )
    try:
        while step < cfg.max_steps:
            rng_at_step_start = RngState.capture()
            started = time.perf_counter()
            sums = {"loss": 0.0, "text": 0.0, "bce": 0.0, "dice": 0.0, "attn": 0.0}
            targets = 0
            for micro in range(cfg.grad_accum):
                batch = next(stream).to(device)
                norm = ddp.mean_targets(batch.num_targets, device)
                sync = runner.no_sync() if ddp.world > 1 and micro < cfg.grad_accum - 1 else nullcontext()
                with sync:
                    with autocast():
                        parts: LossParts = runner(batch, norm)
                    (parts.total / cfg.grad_accum).backward()
                for key, value in parts.as_floats().items():
                    sums[key] += value / cfg.grad_accum
                targets += parts.num_targets
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            row = {"step": step, "lr": lr, **sums, "targets": targets, "seconds": time.perf_counter() - started}
            result.history.append(row)
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                bar.set_postfix({k: f"{sums[k]:.3f}" for k in ("loss", "text", "bce", "dice", "attn")}, refresh=False)
                writer.write(row)
            if step % cfg.save_every == 0 or step == cfg.max_steps:
                result.checkpoint = save(step, RngState.capture())
            if cfg.eval_every and step % cfg.eval_every == 0:
                metrics = _evaluate(model, tokenizer, cfg, device, ddp)
                if metrics:
                    result.evaluations.append({"step": step, **metrics})
                    writer.scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
                setup.set_train_mode(model, cfg)
    except KeyboardInterrupt:
        result.interrupted = True
        result.step = step
        result.checkpoint = save(step, rng_at_step_start)
        log.warning("interrupted: checkpoint of step %d saved to %s (continue with --resume auto)",
                    step, result.checkpoint)
        raise
    finally:
        bar.close()
        writer.close()
    result.step = step
    if cfg.merge_at_end and ddp.rank == 0:
        from segearth_geo.training.fold_lora import export_merged

        model.to("cpu")
        result.merged = export_merged(model, tokenizer, out / "final")
    ddp.barrier()
    ddp.close()
    return result


def _evaluate(model, tokenizer, cfg: TrainConfig, device, ddp: _Distributed) -> dict[str, float]:
    """gIoU/cIoU on ``eval_samples`` samples with the model as it is (rank 0; others wait)."""
    metrics: dict[str, float] = {}
    if ddp.rank == 0:
        from segearth_geo.evaluation.evaluate import evaluate
        from segearth_geo.model.segearth_r2.segmenter import SegEarthR2Segmenter
        from segearth_geo.training.data import open_source

        source = open_source(cfg.eval_dataset or cfg.dataset, cfg.data_root, cfg.eval_split,
                             model.config.mask.image_size, cfg.synth_seed, cfg.eval_samples)
        segmenter = SegEarthR2Segmenter(model, tokenizer, device=device, dtype=torch.float32)
        with torch.no_grad():
            result = evaluate(segmenter, source, batch_size=cfg.batch_size, limit=cfg.eval_samples)
        metrics = {"giou": result.giou, "ciou": result.ciou}
        log.info("eval: gIoU %.4f cIoU %.4f", result.giou, result.ciou)
    ddp.barrier()
    return metrics


class _Logs:
    """CSV + TensorBoard writer (rank 0 only)."""

    def __init__(self, out: Path, enabled: bool, append: bool) -> None:
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        path = out / "log.csv"
        new = not (append and path.is_file())
        self.csv_file = open(path, "w" if new else "a", newline="", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.csv = csv.DictWriter(self.csv_file, fieldnames=LOG_FIELDS, extrasaction="ignore")
        if new:
            self.csv.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))
        except ImportError:  # tensorboard is a dependency; keep training if it is broken
            log.warning("tensorboard unavailable; logging to CSV only")

    def write(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.csv.writerow(row)
        self.csv_file.flush()
        self.scalars(int(row["step"]), {f"train/{k}": row[k] for k in LOG_FIELDS[1:]})

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.enabled and self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.enabled:
            self.csv_file.close()
            if self.tb is not None:
                self.tb.close()
