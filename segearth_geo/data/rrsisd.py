"""RRSIS-D reader (the refer-API files used by SegEarth-R1, spec §13.2).

Layout (``root`` may also be the folder above ``rs_ref_seg/RRSIS-D``)::

    <root>/images/rrsisd/JPEGImages/<file_name>
    <root>/rrsisd/refs(unc).p        pickle: list of refs {ref_id, ann_id, image_id, split, sentences: [{raw|sent}], file_name}
    <root>/rrsisd/instances.json     COCO: images [{id, file_name}], annotations [{id, segmentation}]

The pickle is read with a restricted unpickler that only builds plain containers and
scalars (no class of any module can be instantiated). Masks come from the annotation's
``segmentation``: polygons rasterized at the **image's own size** (SegEarth-R1 hard-codes
800×800, the size of the RRSIS-D images; ours also works for other sizes), or an RLE
(compressed or not); all parts are merged. The instruction is the referring sentence;
since R2-style answers were never released (spec §17.7), the answer is synthesized as
``"<p>{sentence}</p> [SEG]."``. By default one sample per reference with its first
sentence (SegEarth-R1); ``all_sentences=True`` gives one sample per sentence.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from segearth_geo.data.reader import BenchmarkReader, SampleLoadError, SampleRecord, find_root
from segearth_geo.data.rle import RLEError, rle_decode
from segearth_geo.errors import DatasetError

_PLAIN_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "bool", "complex"}


class _PlainUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except the builtin container and scalar types."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _PLAIN_BUILTINS:
            return super().find_class("builtins", name)
        raise DatasetError(
            f"refusing to unpickle {module}.{name}: the refs file may only hold plain lists, dicts, strings and numbers"
        )


def load_plain_pickle(data: bytes) -> Any:
    """Unpickle ``data`` holding only plain containers and scalars (Python 2 pickles included)."""
    try:
        return _PlainUnpickler(io.BytesIO(data), encoding="latin1").load()
    except DatasetError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DatasetError(f"malformed pickle: {exc}") from exc


def rasterize_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygon list or RLE) as ``bool (height, width)``, parts merged."""
    if isinstance(segmentation, dict):
        try:
            mask = rle_decode(segmentation)
        except RLEError as exc:
            raise SampleLoadError("bad_rle", str(exc)) from exc
        return mask
    if not isinstance(segmentation, list):
        raise SampleLoadError("bad_segmentation", f"unsupported segmentation type {type(segmentation).__name__}")
    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            raise SampleLoadError("bad_segmentation", "a polygon must be a flat list [x1, y1, x2, y2, …] of ≥ 3 points")
        try:
            points = [(float(polygon[i]), float(polygon[i + 1])) for i in range(0, len(polygon), 2)]
        except (TypeError, ValueError) as exc:
            raise SampleLoadError("bad_segmentation", f"polygon coordinates must be numbers: {exc}") from exc
        draw.polygon(points, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool).copy()


class RRSISDReader(BenchmarkReader):
    """RRSIS-D split (see the module docstring).

    Args:
        root: the RRSIS-D folder (or the folder holding ``rs_ref_seg/RRSIS-D``).
        split: ``"train"``, ``"val"`` or ``"test"`` (the refs' ``split`` field).
        all_sentences: one sample per sentence instead of per reference.
    """

    name = "rrsisd"

    def __init__(self, root: str | os.PathLike, split: str = "test", all_sentences: bool = False) -> None:
        super().__init__(find_root(root, "rs_ref_seg", "RRSIS-D"), split)
        refs_path = self.root / "rrsisd" / "refs(unc).p"
        instances_path = self.root / "rrsisd" / "instances.json"
        for path in (refs_path, instances_path):
            if not path.is_file():
                raise DatasetError(f"RRSIS-D file {path} not found; pass the RRSIS-D folder as the data root")
        refs = load_plain_pickle(refs_path.read_bytes())
        try:
            instances = json.loads(instances_path.read_text(encoding="utf-8"))
            images = {img["id"]: img for img in instances["images"]}
            annotations = {ann["id"]: ann for ann in instances["annotations"]}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DatasetError(f"cannot read COCO instances {instances_path}: {exc}") from exc
        if not isinstance(refs, list):
            raise DatasetError(f"{refs_path} must hold a list of refs")
        for ref in refs:
            if isinstance(ref, dict) and ref.get("split") == split:
                self._index_ref(ref, images, annotations, all_sentences)
        self._finish()

    def _index_ref(self, ref: dict, images: dict, annotations: dict, all_sentences: bool) -> None:
        ann = annotations.get(ref.get("ann_id"))
        image = images.get(ref.get("image_id"), {})
        file_name = image.get("file_name", ref.get("file_name"))
        sentences = [
            s.get("raw") or s.get("sent") for s in ref.get("sentences") or [] if isinstance(s, dict)
        ]
        sentences = [s.strip() for s in sentences if isinstance(s, str) and s.strip()]
        if ann is None or "segmentation" not in ann or not isinstance(file_name, str) or not sentences:
            self._skip("bad_record", f"ref {ref.get('ref_id')}: needs ann_id, image file name and a sentence")
            return
        image_path = self._inside(os.path.join("images", "rrsisd", "JPEGImages", file_name), "image")
        if image_path is None:
            return
        for k, sentence in enumerate(sentences if all_sentences else sentences[:1]):
            self._add(
                SampleRecord(
                    id=f"{ref.get('ref_id')}_{k}" if all_sentences else str(ref.get("ref_id")),
                    image_path=image_path,
                    instruction=sentence,
                    answer=f"<p>{sentence}</p> [SEG].",
                    mask_ref=ann["segmentation"],
                    source="refs(unc).p",
                )
            )

    def _masks(self, record: SampleRecord, height: int, width: int) -> tuple[list[np.ndarray], str]:
        return [rasterize_segmentation(record.mask_ref, height, width)], record.answer
