"""Training loop: exact resume, Ctrl-C checkpoint, merge → load_pretrained → eval, overfitting, DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import training_fixtures
from safetensors.torch import load_file

from segearth_geo.errors import CheckpointError, UsageError
from segearth_geo.training.config import TrainConfig
from segearth_geo.training.state import list_checkpoints
from segearth_geo.training.trainer import train

torch.set_num_threads(1)

BASE = [
    "model=tiny", f"dataset={training_fixtures.SPEC}", "batch_size=2", "num_points=128", "lr=1e-3",
    "log_every=1", "tokenizer_vocab_size=300", "progress=false", "seed=3",
]


def _config(out: Path, *extra: str) -> TrainConfig:
    return TrainConfig.load(None, [*BASE, f"output_dir={out}", *extra])


def _final_state(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_checkpoints(out)[-1] / "trainable.safetensors"))


# ------------------------------------------------------------------ config
def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("lr: 2.0e-4\nbatch_size: 8\nlora_targets: [q_proj, k_proj]\n", encoding="utf-8")
    cfg = TrainConfig.load(path, ["batch_size=2", "lora=false", "max_grad_norm=1"])
    assert (cfg.lr, cfg.batch_size, cfg.lora, cfg.max_grad_norm) == (2e-4, 2, False, 1.0)
    assert cfg.lora_targets == ["q_proj", "k_proj"]
    default = TrainConfig()
    assert (default.lr, default.batch_size, default.max_steps, default.warmup_ratio) == (1e-4, 4, 50000, 0.03)
    assert (default.lora_r, default.lora_alpha, default.lora_dropout, default.lambda_attn) == (8, 16, 0.05, 0.01)
    with pytest.raises(UsageError, match="unknown training config keys"):
        TrainConfig.load(path, ["learning_rate=1"])
    with pytest.raises(UsageError, match="key=value"):
        TrainConfig.load(None, ["lr"])
    with pytest.raises(UsageError):
        TrainConfig.load(None, ["attn_loss_variant=mean"])


# ------------------------------------------------------------------ resume
class _InterruptAt:
    """Sample source that delivers a real SIGINT when a given sample position is read."""

    def __init__(self, samples, at: int) -> None:
        self.samples, self.at, self.reads = samples, at, 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.samples[i]


def test_resume_after_ctrl_c_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    steps = ["max_steps=6", "save_every=100"]
    full = train(_config(tmp_path / "full", *steps))
    assert full.step == 6 and not full.interrupted

    from segearth_geo.training import data

    real_open = data.open_source
    # The tokenizer reads the 6 samples once; then 2 samples per step: read 6 + 7 is the first of step 4.
    monkeypatch.setattr(data, "open_source", lambda *a, **k: _InterruptAt(real_open(*a, **k), at=6 + 7))
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path / "split", *steps))
    saved = list_checkpoints(tmp_path / "split")
    assert [p.name for p in saved] == ["step-0000003"]
    monkeypatch.setattr(data, "open_source", real_open)
    resumed = train(_config(tmp_path / "split", *steps), resume="auto")
    assert resumed.step == 6

    a, b = _final_state(tmp_path / "full"), _final_state(tmp_path / "split")
    assert a.keys() == b.keys() and len(a) > 10
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"resume: max |difference| of trainable tensors = {worst:g}")
    assert worst <= 1e-6
    assert [round(h["loss"], 5) for h in full.history[3:]] == [round(h["loss"], 5) for h in resumed.history]


def test_resume_rejects_a_foreign_checkpoint(tmp_path):
    train(_config(tmp_path / "lora", "max_steps=1"))
    with pytest.raises(CheckpointError):
        train(_config(tmp_path / "lora", "max_steps=2", "lora=false"), resume="auto")
    with pytest.raises(CheckpointError):
        train(_config(tmp_path / "x", "max_steps=1"), resume=str(tmp_path / "nowhere"))


# ------------------------------------------------------------------ merge round trip
def _teacher_forced_logits(model, tokenizer, samples):
    from segearth_geo.training.collate import Collator

    batch = Collator(tokenizer, model.config)(samples)
    with torch.no_grad():
        out = model(batch.input_ids, batch.siglip, batch.mask_images, labels=batch.labels)
    return out.logits, out.pred_masks


@pytest.mark.slow
def test_cli_train_then_merge_gives_the_same_model(tmp_path):
    from segearth_geo.model.segearth_r2.checkpoint import load_pretrained
    from segearth_geo.training.setup import add_lora, build_model, select_trainable
    from segearth_geo.training.state import load_trainable_state

    out = tmp_path / "run"
    args = [f"--set={a}" for a in [*BASE, f"output_dir={out}", "max_steps=3", "merge_at_end=false"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "segearth_geo_cli.main", "-q", "train", *args],
                          check=False, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "trained to step 3" in done.stdout
    assert not (out / "final").exists()
    lines = (out / "log.csv").read_text().splitlines()
    assert lines[0].startswith("step,lr,loss,text,bce,dice,attn") and len(lines) == 4
    assert list((out / "tb").iterdir())

    merged_dir = tmp_path / "merged"
    done = subprocess.run([sys.executable, "-m", "segearth_geo_cli.main", "merge", str(out), str(merged_dir)],
                          check=False, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    merged, tokenizer = load_pretrained(merged_dir)
    keys = set(merged.state_dict())
    assert not any("lora" in k or "base_layer" in k for k in keys)

    # the unmerged training model, rebuilt from the checkpoint, must compute the same thing
    cfg = _config(out, "max_steps=3")
    built = build_model(cfg, out)
    add_lora(built.model, cfg)
    select_trainable(built.model, cfg)
    ckpt = list_checkpoints(out)[-1]
    load_trainable_state(built.model, load_file(str(ckpt / "trainable.safetensors")), str(ckpt))
    lora_b = [v for k, v in load_file(str(ckpt / "trainable.safetensors")).items() if "lora_B" in k]
    assert lora_b and max(t.abs().max().item() for t in lora_b) > 0  # the adapters did learn something
    samples = training_fixtures.shapes(chip_size=merged.config.mask.image_size)[:3]
    want_logits, want_masks = _teacher_forced_logits(built.model.eval(), tokenizer, samples)
    got_logits, got_masks = _teacher_forced_logits(merged, tokenizer, samples)
    assert (got_logits - want_logits).abs().max().item() < 1e-4
    assert (got_masks - want_masks).abs().max().item() < 1e-4


# ------------------------------------------------------------------ learning
@pytest.mark.slow
def test_tiny_model_overfits_a_handful_of_synthearth_samples(tmp_path):
    from segearth_geo.evaluation.evaluate import evaluate
    from segearth_geo.model.segearth_r2.segmenter import SegEarthR2Segmenter
    from segearth_geo.training.setup import build_model
    from segearth_geo.training.trainer import _sample_texts

    samples = training_fixtures.synth_handful(chip_size=128)
    cfg = TrainConfig.load(None, [
        "model=tiny", f"dataset={training_fixtures.SYNTH_SPEC}", f"output_dir={tmp_path / 'fit'}", "batch_size=4",
        "max_steps=40", "num_points=256", "lr=2e-3", "train_all=true", "warmup_ratio=0", "tokenizer_vocab_size=400",
        "progress=false", "log_every=1", "save_every=1000", "seed=0",
        "eval_every=40", "eval_split=train", "eval_samples=4",  # periodic eval (generate mode) through D's loop
    ])
    # the model the run starts from (build_model is deterministic for a config and folder)
    start = build_model(cfg, tmp_path / "fit", texts=_sample_texts(samples, cfg.tokenizer_corpus_samples))
    before = evaluate(SegEarthR2Segmenter(start.model, start.tokenizer, device="cpu"), samples, mode="teacher-forced")

    result = train(cfg)
    assert len(result.evaluations) == 1 and result.evaluations[0]["step"] == 40
    assert 0.0 <= result.evaluations[0]["giou"] <= 1.0
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    texts = [h["text"] for h in result.history]
    assert texts[-1] < 0.5 * texts[0]

    # train -> merged checkpoint -> load_pretrained -> eval
    after = evaluate(SegEarthR2Segmenter.from_pretrained(result.merged, device="cpu"), samples, mode="teacher-forced")
    print(f"teacher-forced gIoU before {before.giou:.3f} after {after.giou:.3f}; loss {losses[0]:.2f} -> {losses[-1]:.2f}")
    assert after.giou > before.giou + 0.15
    assert after.giou > 0.35


# ------------------------------------------------------------------ DDP
@pytest.mark.slow
def test_ddp_two_cpu_processes_on_gloo(tmp_path):
    out = tmp_path / "ddp"
    args = [f"--set={a}" for a in [*BASE, f"output_dir={out}", "max_steps=3", "batch_size=1", "merge_at_end=true"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port=29517",
         "-m", "segearth_geo_cli.main", "-q", "train", *args],
        check=False, capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = list_checkpoints(out)[-1]
    assert ckpt.name == "step-0000003"
    assert (ckpt / "rng-rank0.json").is_file() and (ckpt / "rng-rank1.json").is_file()
    state = __import__("json").loads((ckpt / "state.json").read_text())
    assert state["world_size"] == 2
    rows = (out / "log.csv").read_text().splitlines()[1:]
    assert len(rows) == 3 and all(float(r.split(",")[2]) > 0 for r in rows)
    from segearth_geo.model.segearth_r2.checkpoint import load_pretrained

    model, _ = load_pretrained(out / "final")
    assert model.config.vocab_size > 0


# ------------------------------------------------------------------ parameter sets (spec §9)
def test_parameter_sets_follow_the_spec(tmp_path):
    from segearth_geo.training.setup import (
        add_lora,
        build_model,
        select_trainable,
        set_train_mode,
    )

    cfg = _config(tmp_path / "sets")
    built = build_model(cfg, tmp_path / "sets", texts=["segment the roofs [SEG]"])
    model = built.model
    assert add_lora(model, cfg) == 2 * model.config.text.num_hidden_layers
    select_trainable(model, cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if "lora_" in n}
    assert lora and all(n.startswith("model.layers.") and (".q_proj." in n or ".v_proj." in n) for n in lora)
    assert not any("lora" in n for n, _ in model.model.vision_tower.named_parameters())
    for prefix in ("lm_head.", "pixel_decoder.", "SEG_token_projector."):
        assert any(n.startswith(prefix) for n in trainable), prefix
    frozen_prefixes = ("model.embed_tokens", "model.vision_tower.", "model.mm_projector", "model.vision_tower_mask",
                       "model.final_layernorm")
    assert not any(n.startswith(frozen_prefixes) for n in trainable)
    assert not any(".base_layer." in n for n in trainable)
    unused = {id(p) for p in model.checkpoint_only_parameters()}
    assert not any(id(p) in unused for p in model.parameters() if p.requires_grad)
    set_train_mode(model, cfg)
    assert model.pixel_decoder.training and model.model.layers.training
    assert not model.model.vision_tower_mask.training and not model.model.vision_tower.training

    everything = _config(tmp_path / "all", "train_all=true")
    built = build_model(everything, tmp_path / "all", texts=["x"])
    select_trainable(built.model, everything)
    set_train_mode(built.model, everything)
    assert built.model.model.vision_tower_mask.training
    assert built.model.model.embed_tokens.weight.requires_grad


def test_gradient_checkpointing_does_not_change_training(tmp_path):
    plain = train(_config(tmp_path / "plain", "max_steps=2", "merge_at_end=false"))
    ckpt = train(_config(tmp_path / "ckpt", "max_steps=2", "merge_at_end=false", "gradient_checkpointing=true",
                         "attn_loss_variant=averaged"))
    plain_avg = train(_config(tmp_path / "plain_avg", "max_steps=2", "merge_at_end=false",
                              "attn_loss_variant=averaged"))
    for a, b in zip(plain_avg.history, ckpt.history):
        for key in ("loss", "text", "bce", "dice", "attn"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6)
    assert plain.history[0]["attn"] != pytest.approx(plain_avg.history[0]["attn"])  # the variants differ
    a, b = _final_state(tmp_path / "plain_avg"), _final_state(tmp_path / "ckpt")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_loader_workers_do_not_change_the_run(tmp_path):
    runs = [train(_config(tmp_path / f"w{n}", "max_steps=2", "merge_at_end=false", f"num_workers={n}"))
            for n in (0, 1)]
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]


def test_cli_reports_bad_settings_as_usage_errors(tmp_path):
    from segearth_geo_cli.main import main

    assert main(["train", "--set", "no_such_key=1"]) == 2
    assert main(["train", "--set", f"output_dir={tmp_path}", "--set", "batch_size=0"]) == 2


def test_learning_rate_schedule_hand_values():
    from segearth_geo.training.trainer import lr_lambda

    # warm-up 4 of 104 steps: linear from 0, then half a cosine down to 0
    assert [lr_lambda(s, 4, 104, "cosine") for s in (0, 2, 4)] == [0.0, 0.5, 1.0]
    assert lr_lambda(54, 4, 104, "cosine") == pytest.approx(0.5)
    assert lr_lambda(104, 4, 104, "cosine") == pytest.approx(0.0)
    assert lr_lambda(80, 4, 104, "constant") == 1.0
