"""The one sample type every benchmark reader yields.

A :class:`Sample` holds decoded arrays (the image as ``uint8`` RGB, one ``bool`` mask per
``[SEG]``). Readers keep only light records in memory and decode a sample's files when
it is accessed (see :class:`segearth_geo.data.reader.BenchmarkReader`), so a ``Sample``
is always complete and its arrays are ready to use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segearth_geo.errors import DatasetError

SEG_TOKEN = "[SEG]"
NO_TARGET_ANSWER = "There is no target object in the image."

# LaSeRS's four evaluation dimensions and the values each can take (spec §12).
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "granularity": ("semantic", "instance", "part"),
    "count": ("single", "multiple"),
    "explicitness": ("explicit", "implicit"),
    "length": ("short", "long"),
}


def count_targets(answer: str) -> int:
    """Number of ``[SEG]`` tokens (= targets) in an answer."""
    return answer.count(SEG_TOKEN)


@dataclass
class Sample:
    """One benchmark question about one image.

    Attributes:
        id: identifier unique within the reader (from the annotation file where it has one).
        image: ``uint8`` array ``(H, W, 3)``, RGB, at the file's own resolution.
        instruction: the question / referring expression given to the model.
        answer: the reference answer; it contains one ``[SEG]`` per target (none for
            "no target" samples).
        masks: one ``bool`` array ``(H, W)`` per ``[SEG]``, in the order of the ``[SEG]``s
            in ``answer`` (the i-th ``[SEG]`` ↔ ``masks[i]``).
        dimensions: LaSeRS tags, e.g. ``{"granularity": "part", "count": "single",
            "explicitness": "implicit", "length": "short"}``; empty when the dataset has none.
        source: the annotation file (or folder) the sample came from.
    """

    id: str
    image: np.ndarray
    instruction: str
    answer: str
    masks: list[np.ndarray] = field(default_factory=list)
    dimensions: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DatasetError(f"sample {self.id}: image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        self.image = image
        if len(self.masks) != count_targets(self.answer):
            raise DatasetError(
                f"sample {self.id}: {count_targets(self.answer)} [SEG] in the answer but {len(self.masks)} masks"
            )
        masks = []
        for mask in self.masks:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != image.shape[:2]:
                raise DatasetError(f"sample {self.id}: mask shape {mask.shape} differs from image {image.shape[:2]}")
            masks.append(mask)
        self.masks = masks

    @property
    def num_targets(self) -> int:
        """Number of targets (``[SEG]`` tokens in the answer, = ``len(masks)``)."""
        return len(self.masks)
