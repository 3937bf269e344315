"""`segearth-geo model-check`: per-template loss and gIoU on a tiny SegEarth-R2 checkpoint; both LaSeRS layouts."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from data_fixtures import write_eval_lasers
from model_fixtures import tiny_model_and_tokenizer

from segearth_geo.data.registry import open_dataset
from segearth_geo.model.segearth_r2.checkpoint import save_pretrained
from segearth_geo.model.segearth_r2.prompt import TEMPLATE_NAMES


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segearth_geo_cli.main", "-q", "model-check", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model, tokenizer = tiny_model_and_tokenizer(steer=True)
    return save_pretrained(model, tokenizer, tmp_path_factory.mktemp("model_check") / "ckpt")


@pytest.fixture(scope="module")
def lasers(tmp_path_factory):
    return write_eval_lasers(tmp_path_factory.mktemp("model_check_data") / "LaSeRS")


def _nested(flat: Path, base: Path) -> Path:
    """The evaluation script's layout: <base>/rs_reason_seg/LaSeRS/test/{images,annotations}."""
    shutil.copytree(flat / "test", base / "rs_reason_seg" / "LaSeRS" / "test")
    return base


def _rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in TEMPLATE_NAMES:
            rows[cells[0]] = cells
    return rows


def test_both_lasers_layouts_read_the_same_samples(lasers, tmp_path):
    base = _nested(lasers, tmp_path / "base")
    flat, nested = open_dataset("lasers", lasers, "test"), open_dataset("lasers", base, "test")
    assert nested.root == (base / "rs_reason_seg" / "LaSeRS").resolve()
    assert len(flat) == len(nested) == 3
    for a, b in zip(flat, nested):
        assert (a.id, a.instruction, a.answer, a.dimensions) == (b.id, b.instruction, b.answer, b.dimensions)
        assert (a.image == b.image).all() and all((x == y).all() for x, y in zip(a.masks, b.masks))
    # a folder with neither layout names both
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "segearth_geo_cli.main", "eval", "--model", "demo", "--dataset",
                           "lasers", "--data-root", str(tmp_path / "empty")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "rs_reason_seg/LaSeRS/test/annotations" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_model_check_prints_one_row_per_template(checkpoint, lasers):
    proc = run_check(str(checkpoint), "--data", str(lasers), "--dataset", "lasers", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert list(rows) == list(TEMPLATE_NAMES)
    for cells in rows.values():
        loss, tokens, giou = float(cells[1]), int(cells[2]), float(cells[3])
        assert math.isfinite(loss) and loss > 0 and tokens > 0 and 0.0 <= giou <= 100.0
        assert int(cells[5]) == 4  # targets: s1 (1) + s2 (2) + s3 (1)
    assert "checkpoint's" in rows["training"][6]
    best = [name for name, cells in rows.items() if "best" in cells[6]]
    assert len(best) == 1 and f"best template: {best[0]}" in proc.stdout
    assert min(rows, key=lambda n: float(rows[n][1])) == best[0]


def test_model_check_json_on_the_nested_layout(checkpoint, lasers, tmp_path):
    base = _nested(lasers, tmp_path / "base")
    proc = run_check(str(checkpoint), "--data", str(base), "--templates", "llama2, training", "--samples", "2",
                     "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [s["template"] for s in result["scores"]] == ["llama2", "training"]
    assert result["samples"] == 2 and result["configured"] == "training"
    assert result["best"] in ("llama2", "training")
    for score in result["scores"]:
        assert math.isfinite(score["loss"]) and 0.0 <= score["giou"] <= 1.0 and 0.0 <= score["ciou"] <= 1.0
        assert score["scored"] == 2 and score["targets"] == 3 and score["invalid"] == 0


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["--templates", "vicuna"], 2, "unknown SegEarth-R2 prompt template 'vicuna'"),
    (["--samples", "0"], 2, "--samples"),
])
def test_model_check_bad_input_is_one_line(checkpoint, lasers, args, code, needle):
    proc = run_check(str(checkpoint), "--data", str(lasers), *args)
    assert proc.returncode == code and needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_model_check_refuses_a_missing_checkpoint(lasers, tmp_path):
    proc = run_check(str(tmp_path / "nope"), "--data", str(lasers))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_model_check_finds_the_template_a_checkpoint_was_fine_tuned_with(lasers, tmp_path):
    """Fine-tune a tiny model a few steps with the llama2 template through the training collator (which reads
    config.template), save it labelled with the default template, and let model-check tell which one it saw."""
    from segearth_geo.training.collate import Collator

    began = time.perf_counter()
    samples = list(open_dataset("lasers", lasers, "test"))
    model, tokenizer = tiny_model_and_tokenizer(seed=0)
    model.config.template = "llama2"
    batch = Collator(tokenizer, model.config)(samples)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(20):  # text loss only: the template only shapes the text
        out = model(batch.input_ids, batch.siglip, labels=batch.labels)
        logits, labels = out.logits[:, :-1], out.inputs.labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().config.template = "training"  # the checkpoint does not say what it was trained with
    folder = save_pretrained(model, tokenizer, tmp_path / "tuned")
    proc = run_check(str(folder), "--data", str(lasers), "--templates", "training,llama2", "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    losses = {s["template"]: s["loss"] for s in result["scores"]}
    assert result["best"] == "llama2" and result["configured"] == "training"
    assert losses["training"] - losses["llama2"] > 0.3, losses
    assert time.perf_counter() - began < 60
