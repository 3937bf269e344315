"""What one finished segmentation produced, as the plugin sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SegmentResult:
    """The worker's ``result`` reply for a segment request.

    Attributes:
        output: path of the written vector file.
        layer: name of the polygon layer inside ``output`` (GeoPackage), or ``None``.
        polygons: number of polygons per label.
        answers: the model's text answer per processed chip, in chip order.
        device: device the model ran on.
        seconds: engine wall time.
        crs: CRS of the polygons (the raster's CRS) as the engine spells it.
        reused_chips: chips whose image work the model took from its cache in this run (0 without a cache).
    """

    output: str
    layer: str | None
    polygons: dict[str, int] = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)
    device: str = ""
    seconds: float = 0.0
    crs: str | None = None
    reused_chips: int = 0

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> "SegmentResult":
        return cls(
            output=str(reply["output"]),
            layer=reply.get("layer"),
            polygons={str(k): int(v) for k, v in (reply.get("polygons") or {}).items()},
            answers=[str(a.get("answer", "")) if isinstance(a, dict) else str(a) for a in reply.get("answers") or []],
            device=str(reply.get("device") or ""),
            seconds=float(reply.get("seconds") or 0.0),
            crs=reply.get("crs"),
            reused_chips=_reused_chips(reply.get("cache")),
        )

    @property
    def count(self) -> int:
        return sum(self.polygons.values())

    @property
    def uri(self) -> str:
        """OGR data source URI QGIS opens (``path|layername=...`` for GeoPackage)."""
        return f"{self.output}|layername={self.layer}" if self.layer else self.output

    def distinct_answers(self) -> list[str]:
        """Answers without repeats, in first-seen order (many chips give the same answer)."""
        seen: dict[str, None] = {}
        for answer in self.answers:
            if answer.strip():
                seen.setdefault(answer.strip(), None)
        return list(seen)


def _reused_chips(cache: Any) -> int:
    """Chips served from the model's image cache in this run, from the reply's ``cache`` stats (hits per
    tier in this run; the tier hit most often counts each reused chip once per prompt)."""
    if not isinstance(cache, dict) or not isinstance(cache.get("hits"), dict):
        return 0
    hits = cache["hits"]
    return int(max((v for v in hits.values() if isinstance(v, int)), default=0))

