"""What the SAM3 adapter reads from a checkpoint folder besides the weights, and its defaults.

A SAM3 folder in the layout that ``facebook/sam3`` ships (and that ``Sam3Model.save_pretrained`` plus
``Sam3Processor.save_pretrained`` write) holds:

* ``config.json`` — ``model_type`` ``"sam3_video"`` (the hub checkpoint: the image detector under
  ``detector_config`` with weights prefixed ``detector_model.``, plus tracker weights this adapter does
  not use) or ``"sam3"`` (a bare ``Sam3Model``);
* ``model.safetensors`` (possibly sharded);
* the CLIP BPE tokenizer (``tokenizer.json`` and/or ``vocab.json`` + ``merges.txt``, ``tokenizer_config.json``);
* ``processor_config.json`` with an ``"image_processor"`` section, or a legacy ``preprocessor_config.json``:
  the square input size and the normalisation. :class:`Sam3Preprocessing` reads those values; when no
  such file exists, SAM3's own defaults apply (1008 px, mean = std = 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segearth_geo.errors import CheckpointError
from segearth_geo.model.checkpoint_files import read_json

SAM3_MODEL_TYPES = ("sam3", "sam3_video")  # config.json model_type values this adapter loads
DEFAULT_SCORE_THRESHOLD = 0.5  # detection score an instance needs to be kept (as in SAM3's examples)
DEFAULT_PRESENCE_THRESHOLD = 0.5  # presence probability a concept needs on a chip to return anything there
DEFAULT_OUTPUT = "instances"  # what a present concept returns (the segmenter's ``output``: params.SAM3_OUTPUTS)
DEFAULT_SIZE = 1008  # SAM3's native square input (Sam3ImageProcessor's size)
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


@dataclass(frozen=True)
class Sam3Preprocessing:
    """How a chip becomes the model's input: ``(x * rescale_factor - mean) / std`` on a ``size`` square canvas.

    Attributes:
        size: side of the square input in pixels (SAM3: 1008); it is the segmenter's ``chip_size``.
        image_mean, image_std: per-channel RGB normalisation (SAM3: 0.5, 0.5).
        rescale_factor: uint8 → [0, 1] factor (1/255).
    """

    size: int = DEFAULT_SIZE
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1.0 / 255.0

    @classmethod
    def from_dict(cls, values: dict, source: str = "processor config") -> Sam3Preprocessing:
        """From an image-processor dictionary (``size``, ``image_mean``, ``image_std``, ``rescale_factor``, flags)."""
        size = values.get("size", {"height": DEFAULT_SIZE, "width": DEFAULT_SIZE})
        if isinstance(size, dict):
            height, width = size.get("height"), size.get("width")
            if height is None or width is None:
                edge = size.get("shortest_edge") or size.get("longest_edge")
                height = width = edge
        else:
            height = width = size
        if not isinstance(height, int) or height != width or height < 1:
            raise CheckpointError(f"{source}: SAM3 needs a square input size, got {size!r}")
        mean = values.get("image_mean", cls.image_mean) if values.get("do_normalize", True) else (0.0, 0.0, 0.0)
        std = values.get("image_std", cls.image_std) if values.get("do_normalize", True) else (1.0, 1.0, 1.0)
        rescale = values.get("rescale_factor", cls.rescale_factor) if values.get("do_rescale", True) else 1.0
        mean, std = _triple(mean, "image_mean", source), _triple(std, "image_std", source)
        if min(std) <= 0:
            raise CheckpointError(f"{source}: image_std must be positive, got {std}")
        return cls(size=height, image_mean=mean, image_std=std, rescale_factor=float(rescale))

    @classmethod
    def from_folder(cls, folder: str | Path) -> Sam3Preprocessing:
        """Read ``processor_config.json`` (its ``image_processor`` section) or ``preprocessor_config.json``."""
        folder = Path(folder)
        for name in PROCESSOR_FILES:
            path = folder / name
            if not path.is_file():
                continue
            values = read_json(path)
            section = values.get("image_processor", values)
            if not isinstance(section, dict):
                raise CheckpointError(f"{path}: 'image_processor' is not a JSON object")
            return cls.from_dict(section, source=str(path))
        return cls()


def _triple(values, name: str, source: str) -> tuple[float, float, float]:
    if isinstance(values, (int, float)):
        values = [values] * 3
    try:
        triple = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: {name} must be 3 numbers, got {values!r}") from exc
    if len(triple) != 3:
        raise CheckpointError(f"{source}: {name} must be 3 numbers (RGB), got {values!r}")
    return triple  # type: ignore[return-value]
