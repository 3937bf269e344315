"""The model registry: every spec form, layout detection from config.json, clear one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from segearth_geo.errors import ModelError
from segearth_geo.model.loading import load_segmenter
from segearth_geo.model.registry import (
    BACKENDS,
    DEMO_MODEL_DIR,
    KNOWN_MODELS,
    backend_for_folder,
    list_models,
    resolve_spec,
)

HERE = Path(__file__).resolve().parent
EXE = shutil.which("segearth-geo") or str(Path(sys.executable).with_name("segearth-geo"))


def _folder(tmp_path: Path, name: str, **config) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_demo_is_the_bundled_r2_checkpoint():
    resolved = resolve_spec("demo")
    assert resolved.backend is BACKENDS["segearth-r2"] and resolved.folder == DEMO_MODEL_DIR
    assert "synthetic-only" in resolved.known.strengths


@pytest.mark.parametrize("config,backend", [
    ({"model_type": "mipha_phi"}, "segearth-r2"),
    ({"model_type": "llava_phi", "architectures": ["segearth_r1"]}, "segearth-r1"),
    ({"architectures": ["SegEarthR1"]}, "segearth-r1"),
    ({"model_type": "sam3"}, "sam3"),
    ({"model_type": "sam3_video", "architectures": ["Sam3VideoModel"]}, "sam3"),
])
def test_local_folder_backend_from_config_json(tmp_path, config, backend):
    folder = _folder(tmp_path, "ckpt", **config)
    assert backend_for_folder(folder) is BACKENDS[backend]
    assert resolve_spec(str(folder)).backend is BACKENDS[backend]


def test_every_backend_loader_is_importable():
    for backend in BACKENDS.values():
        assert callable(backend.entry()), backend.package


def test_unknown_layout_lists_what_is_supported(tmp_path):
    folder = _folder(tmp_path, "llama", model_type="llama", architectures=["LlamaForCausalLM"])
    with pytest.raises(ModelError, match="unknown model layout.*'llama'.*mipha_phi.*llava_phi.*sam3"):
        load_segmenter(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_segmenter(empty)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file, not a folder"):
        load_segmenter(tmp_path / "weights.bin")
    with pytest.raises(ModelError, match="not a folder, alias or repo id.*segearth-r1-earthreason"):
        load_segmenter("no such model")


def test_aliases_name_hub_ids_and_fail_offline_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert KNOWN_MODELS["segearth-r1-earthreason"].hub_id == "earth-insights/SegEarth-R1-EarthReason"
    assert KNOWN_MODELS["segearth-r1-rrsisd"].hub_id == "earth-insights/SegEarth-R1-RRSIS-D"
    assert KNOWN_MODELS["sam3"].hub_id == "facebook/sam3"
    for alias in ("segearth-r1-earthreason", "SEGEARTH-R1-RRSISD", "sam3"):
        with pytest.raises(ModelError) as info:
            resolve_spec(alias)
        message = str(info.value)
        assert "\n" not in message and "HF_TOKEN" in message and "login" in message and "cache" in message
        assert repr(KNOWN_MODELS[alias.lower()].hub_id) in message
    with pytest.raises(ModelError, match="gated"):
        resolve_spec("sam3")


def test_factory_spec_still_works():
    segmenter = load_segmenter(f"{HERE / 'segmenters.py'}:colour_small")
    assert segmenter.chip_size > 0


def test_listing_has_the_facts_users_compare():
    rows = {r.alias: r for r in list_models(device="cpu")}
    assert set(rows) == {"demo", "segearth-r1-earthreason", "segearth-r1-rrsisd", "sam3", "zoomearth"}
    r1 = rows["segearth-r1-earthreason"]
    assert (r1.licence, r1.parameters, r1.chip_size, r1.device) == ("Apache-2.0", "1.59 B", 1024, "cpu")
    assert rows["demo"].cached == "yes" and rows["sam3"].chip_size == 1008


def test_cli_offline_hub_id_is_one_line_without_traceback(tmp_path):
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    raster = tmp_path / "r.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=32, height=32, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(0, 32, 1, 1)) as dst:
        dst.write(np.zeros((3, 32, 32), dtype=np.uint8))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    result = subprocess.run([EXE, "segment", str(raster), "water", "--model", "someone/not-cached",
                             "-o", str(tmp_path / "o.gpkg")], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "'someone/not-cached'" in lines[0] and str(tmp_path / "empty-cache") in lines[0]
    assert "HF_TOKEN" in lines[0] and "huggingface-cli login" in lines[0]


def test_cli_models_lists_aliases():
    result = subprocess.run([EXE, "models", "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for alias, model in KNOWN_MODELS.items():
        assert alias in result.stdout and (model.hub_id or "-") in result.stdout
    assert "cached locally" in result.stdout and "module:factory" in result.stdout


def _fake_hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """``source`` placed as the cached snapshot of ``repo_id`` in the Hugging Face cache layout."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / "c0ffee")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c0ffee")
    return repo / "snapshots" / "c0ffee"


def test_hub_aliases_resolve_from_the_cache_with_their_template(monkeypatch, tmp_path):
    from huggingface_hub import constants
    from r1_fixtures import tiny_r1_model, write_official_checkpoint

    source = write_official_checkpoint(tiny_r1_model(seed=2), tmp_path / "tiny")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = _fake_hub_cache(tmp_path / "hub", "earth-insights/SegEarth-R1-EarthReason", source)
    for spec in ("segearth-r1-earthreason", "earth-insights/SegEarth-R1-EarthReason"):
        resolved = resolve_spec(spec)
        assert resolved.folder == snapshot and resolved.backend is BACKENDS["segearth-r1"]
        assert resolved.known is KNOWN_MODELS["segearth-r1-earthreason"]
    # The tiny checkpoint's own config says "referring"; the alias knows EarthReason is a reasoning model.
    assert load_segmenter("segearth-r1-earthreason", device="cpu").template == "reasoning"
    assert load_segmenter("segearth-r1-earthreason", device="cpu", template="referring").template == "referring"
    assert load_segmenter(str(snapshot), device="cpu").template == "referring"
