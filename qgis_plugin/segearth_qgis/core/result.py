"""What one finished segmentation produced, as the plugin sees it. Pure Python (no Qt)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .answers import label_note


@dataclass(frozen=True)
class ZoomSummary:
    """What ran with strategy zoom or auto (the ``result`` reply's ``zoom``).

    Attributes:
        strategy: what ran: ``zoom`` (an overview first) or ``grid`` (every chip; auto may decide so).
        reason: why, in the engine's words ("asked for (strategy zoom)", "auto: semantic instructions over …").
        chips_per_level: chips processed per level, full resolution first, then the overview levels.
        full_res_fraction: the fraction of the area looked at in full resolution (0–1), when known.
    """

    strategy: str
    reason: str
    chips_per_level: tuple[int, ...] = ()
    full_res_fraction: float | None = None

    @classmethod
    def from_reply(cls, zoom: Any) -> "ZoomSummary | None":
        if not isinstance(zoom, dict) or not zoom.get("strategy"):
            return None
        fraction = zoom.get("full_res_fraction")
        return cls(strategy=str(zoom["strategy"]), reason=str(zoom.get("reason") or ""),
                   chips_per_level=tuple(int(n) for n in zoom.get("chips_per_level") or ()),
                   full_res_fraction=float(fraction) if isinstance(fraction, (int, float)) else None)

    def lines(self) -> list[str]:
        """``["Strategy: zoom — asked for (strategy zoom)", "Chips: 5 at full resolution, 1 on overview level 1;
        50% of the area looked at in full resolution"]`` (the second line only when levels ran)."""
        lines = [f"Strategy: {self.strategy}" + (f" — {self.reason}" if self.reason else "")]
        if self.chips_per_level:
            chips = [f"{self.chips_per_level[0]} at full resolution"]
            chips += [f"{n} on overview level {level}" for level, n in enumerate(self.chips_per_level[1:], 1)]
            text = "Chips: " + ", ".join(chips)
            if self.full_res_fraction is not None:
                text += f"; {percent(self.full_res_fraction)} of the area looked at in full resolution"
            lines.append(text)
        return lines


def percent(fraction: float) -> str:
    """``0.5019`` → ``"50%"``, ``0.004`` → ``"0.4%"`` (a small non-zero fraction never reads as 0%)."""
    return f"{fraction:.1%}" if 0 < fraction < 0.01 else f"{fraction:.0%}"


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
        notes: the engine's warnings about this run (e.g. the scene's GSD far outside the model's range).
        notice: what must be said wherever this model runs (the demo: "synthetic demo — not for real imagery").
        raster_out / labels_out: the probability and polygon-id GeoTIFFs the engine wrote, when asked for.
        zoom: what ran with strategy zoom or auto (``None``: a plain grid run).
    """

    output: str
    layer: str | None
    polygons: dict[str, int] = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)
    device: str = ""
    seconds: float = 0.0
    crs: str | None = None
    reused_chips: int = 0
    notes: list[str] = field(default_factory=list)
    notice: str | None = None
    raster_out: str | None = None
    labels_out: str | None = None
    zoom: ZoomSummary | None = None

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
            notes=[str(n) for n in reply.get("notes") or [] if str(n).strip()],
            notice=str(reply["notice"]) if reply.get("notice") else None,
            raster_out=str(reply["raster_out"]) if reply.get("raster_out") else None,
            labels_out=str(reply["labels_out"]) if reply.get("labels_out") else None,
            zoom=ZoomSummary.from_reply(reply.get("zoom")),
        )

    @property
    def count(self) -> int:
        return sum(self.polygons.values())

    @property
    def uri(self) -> str:
        """OGR data source URI QGIS opens (``path|layername=...`` for GeoPackage)."""
        return f"{self.output}|layername={self.layer}" if self.layer else self.output

    def remarks(self, prompt: str) -> list[str]:
        """What to show after the run: the engine's notes (but its zoom summary, which :attr:`zoom` says), then a
        note when labels are not the prompt's words."""
        note = label_note(prompt, self.polygons)
        return [*self.notes, *([note] if note else [])]


def _reused_chips(cache: Any) -> int:
    """Chips served from the model's image cache in this run, from the reply's ``cache`` stats (hits per
    tier in this run; the tier hit most often counts each reused chip once per prompt)."""
    if not isinstance(cache, dict) or not isinstance(cache.get("hits"), dict):
        return 0
    hits = cache["hits"]
    return int(max((v for v in hits.values() if isinstance(v, int)), default=0))

