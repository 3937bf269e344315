"""Which prompt template was a SegEarth-R2 checkpoint trained with? (spec §19, ``segearth-geo model-check``).

The official files disagree on the prompt (:mod:`segearth_geo.model.segearth_r2.prompt`), and a released checkpoint does
not say which one it saw. For each template variant this module measures, on the first ``N`` usable samples
of a benchmark split:

* the **teacher-forced text loss**: mean next-token cross-entropy (nats per token) on the reference answer's
  ids and the final EOS (positions from ``EncodedConversation.answer_start`` on; the header tail that some
  templates also supervise is left out, so every variant is scored on the same answer text);
* **gIoU / cIoU** of the masks, teacher-forced by default (the reference answer's ``[SEG]`` states, as in the
  official ``eval_seg`` path) or generated (``mode="generate"``), through
  :func:`segearth_geo.evaluation.evaluate.evaluate`.

The template the checkpoint was trained with gives a clearly lower loss; :attr:`ModelCheckResult.best` names
the lowest-loss variant (gIoU breaks ties and decides when no loss could be computed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from segearth_geo.data.sample import Sample
from segearth_geo.errors import DatasetError, UsageError
from segearth_geo.evaluation.evaluate import MODES, evaluate, fit_to_chip

DEFAULT_SAMPLES = 16


@dataclass
class TemplateScore:
    """One template's figures.

    Attributes:
        template: the template name.
        loss: mean CE in nats per answer token (``nan`` when no sample could be scored).
        tokens: answer tokens the loss averages over.
        giou, ciou: fractions in [0, 1] over ``targets`` reference targets.
        scored: samples in the loss; ``invalid``: samples whose encoding had no label boundary or did not fit.
    """

    template: str
    loss: float
    tokens: int
    giou: float
    ciou: float
    targets: int
    scored: int
    invalid: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"template": self.template, "loss": None if math.isnan(self.loss) else self.loss,
                "tokens": self.tokens, "giou": self.giou, "ciou": self.ciou, "targets": self.targets,
                "scored": self.scored, "invalid": self.invalid}


@dataclass
class ModelCheckResult:
    """Scores per template, the checkpoint's configured template and the best-fitting one."""

    checkpoint: str
    configured: str
    mode: str
    samples: int
    scores: list[TemplateScore]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def best(self) -> str:
        """Lowest loss (ties and missing losses: highest gIoU)."""
        def key(s: TemplateScore) -> tuple[float, float]:
            return (math.inf if math.isnan(s.loss) else s.loss, -s.giou)

        return min(self.scores, key=key).template

    @property
    def margin(self) -> float | None:
        """Loss gap (nats/token) between the best and the next template; ``None`` with fewer than two losses."""
        losses = sorted(s.loss for s in self.scores if not math.isnan(s.loss))
        return losses[1] - losses[0] if len(losses) > 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "configured": self.configured, "best": self.best,
                "margin": self.margin, "mode": self.mode, "samples": self.samples,
                "scores": [s.to_dict() for s in self.scores], "skipped": dict(self.skipped)}

    def to_table(self) -> str:
        """A Markdown table (one row per template) and a line naming the best template."""
        lines = ["| template | loss (nats/token) | tokens | gIoU (%) | cIoU (%) | targets | note |",
                 "|---|---:|---:|---:|---:|---:|---|"]
        best = self.best
        for s in self.scores:
            notes = [n for n, on in (("best", s.template == best), ("checkpoint's", s.template == self.configured),
                                     (f"{s.invalid} invalid", s.invalid > 0)) if on]
            loss = "n/a" if math.isnan(s.loss) else f"{s.loss:.4f}"
            lines.append(f"| {s.template} | {loss} | {s.tokens} | {100 * s.giou:.2f} | {100 * s.ciou:.2f} | "
                         f"{s.targets} | {', '.join(notes)} |")
        margin = self.margin
        gap = f", {margin:.4f} nats/token below the next" if margin is not None else ""
        verdict = "matches" if best == self.configured else "differs from"
        lines.append("")
        lines.append(f"best template: {best} (lowest teacher-forced loss on {self.samples} samples{gap}); "
                     f"it {verdict} the checkpoint's configured template '{self.configured}'")
        return "\n".join(lines)


def _check_templates(templates: Sequence[str] | None) -> list[str]:
    from segearth_geo.model.segearth_r2.prompt import TEMPLATE_NAMES, get_template

    names = list(TEMPLATE_NAMES) if not templates else [get_template(t.strip()).name for t in templates]
    if len(set(names)) != len(names):
        raise UsageError(f"templates listed twice: {', '.join(names)}")
    return names


def template_losses(model, tokenizer, samples: Sequence[Sample], templates: Sequence[str],
                    chip_size: int | None = None) -> dict[str, tuple[float, int, int, int]]:
    """Teacher-forced answer CE per template: ``{name: (sum of CE, tokens, scored samples, invalid samples)}``.

    One LLM forward per sample scores every template at once (B = ``len(templates)`` rows sharing the image
    embeddings). Images larger than ``chip_size`` (default the canvas side) are resized as in evaluation.
    """
    import torch
    import torch.nn.functional as F

    from segearth_geo.model.segearth_r2.preprocess import prepare_images
    from segearth_geo.model.segearth_r2.prompt import IGNORE_INDEX, encode_conversation

    cfg = model.config
    param = model.model.embed_tokens.weight
    device = param.device
    chip_size = chip_size or int(cfg.mask.image_size)
    totals = {name: [0.0, 0, 0, 0] for name in templates}
    with torch.inference_mode():
        for sample in samples:
            rows, names = [], []
            for name in templates:
                enc = encode_conversation(tokenizer, sample.instruction, sample.answer, eos_token_id=cfg.eos_token_id,
                                          image_token_index=cfg.image_token_index, template=name)
                too_long = len(enc.input_ids) - 1 + cfg.num_image_tokens > cfg.max_length
                if not enc.valid or too_long:
                    totals[name][3] += 1
                    continue
                labels = [IGNORE_INDEX if k < enc.answer_start else lab for k, lab in enumerate(enc.labels)]
                rows.append((torch.tensor(enc.input_ids), torch.tensor(labels)))
                names.append(name)
            if not rows:
                continue
            prepared = prepare_images(fit_to_chip(sample.image, chip_size), cfg, device)
            embeds = model.encode_images(prepared.siglip[None].to(device, param.dtype))  # [1,T_img,D]
            inputs = model.build_inputs([r[0] for r in rows], embeds.expand(len(rows), -1, -1),
                                        [r[1] for r in rows])
            hidden = model.model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                                 position_ids=inputs.position_ids, use_cache=False).last_hidden_state  # [B,L,D]
            nxt = inputs.labels[:, 1:]  # [B,L-1]
            b, p = torch.nonzero(nxt != IGNORE_INDEX, as_tuple=True)
            logits = model.lm_head(hidden[b, p]).float()  # [M,lm_head_size]
            ce = F.cross_entropy(logits, nxt[b, p], reduction="none")  # [M]
            for k, name in enumerate(names):
                picked = ce[b == k]
                totals[name][0] += float(picked.sum())
                totals[name][1] += int(picked.numel())
                totals[name][2] += 1
    return {name: (t[0], t[1], t[2], t[3]) for name, t in totals.items()}


def score_templates(segmenter, samples: Sequence[Sample], templates: Sequence[str] | None = None, *,
                    mode: str = "teacher-forced", batch_size: int | None = None, progress: bool = False,
                    checkpoint: str = "") -> ModelCheckResult:
    """Score every template on ``samples`` with a loaded :class:`~segearth_geo.model.segearth_r2.segmenter.SegEarthR2Segmenter`.

    The model and tokenizer are shared: one segmenter per template is built around them (its image cache
    keys carry the template, so no prefix state is reused across templates).
    """
    from segearth_geo.model.segearth_r2.segmenter import SegEarthR2Segmenter

    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    names = _check_templates(templates)
    samples = list(samples)
    if not samples:
        raise DatasetError("no sample to check the templates on")
    losses = template_losses(segmenter.model, segmenter.tokenizer, samples, names, segmenter.chip_size)
    batch = batch_size or segmenter.batch_size
    scores = []
    for name in names:
        variant = SegEarthR2Segmenter(segmenter.model, segmenter.tokenizer, device=segmenter.device,
                                      dtype=segmenter.dtype, batch_size=batch, max_new_tokens=segmenter.max_new_tokens,
                                      template=name)
        result = evaluate(variant, samples, batch_size=batch, mode=mode, progress=progress)
        total, tokens, scored, invalid = losses[name]
        scores.append(TemplateScore(name, total / tokens if tokens else math.nan, tokens, result.giou, result.ciou,
                                    result.n, scored, invalid))
    return ModelCheckResult(checkpoint or "(in memory)", segmenter.model.config.template, mode, len(samples), scores)


def check_checkpoint(checkpoint: str, data_root, dataset: str = "lasers", split: str = "test", *,
                     samples: int = DEFAULT_SAMPLES, templates: Sequence[str] | None = None,
                     mode: str = "teacher-forced", device: str = "auto", batch_size: int | None = None,
                     progress: bool = False) -> ModelCheckResult:
    """What ``segearth-geo model-check`` runs: open the split, load the SegEarth-R2 checkpoint, score templates.

    Args:
        checkpoint: a SegEarth-R2 checkpoint folder or hub repo id (see :mod:`segearth_geo.model.registry`).
        data_root, dataset, split: passed to :func:`segearth_geo.data.open_dataset`.
        samples: the first ``samples`` usable samples of the split are scored.
        templates: template names (default: all of :data:`~segearth_geo.model.segearth_r2.prompt.TEMPLATES`).
        mode: ``"teacher-forced"`` (default) or ``"generate"`` for the masks.

    Raises:
        UsageError: bad template name, count or mode, or a checkpoint of another backend.
        DatasetError / CheckpointError / ModelError: unreadable data or checkpoint.
    """
    from segearth_geo.data.registry import open_dataset
    from segearth_geo.model.registry import resolve_spec
    from segearth_geo.model.segearth_r2.segmenter import SegEarthR2Segmenter

    if samples < 1:
        raise UsageError(f"samples must be at least 1, got {samples}")
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    names = _check_templates(templates)
    reader = open_dataset(dataset, data_root, split)
    chosen = []
    for sample in reader:
        chosen.append(sample)
        if len(chosen) == samples:
            break
    if not chosen:
        raise DatasetError(f"no usable sample in {data_root} ({dataset}, {split}; skipped: "
                           f"{reader.skipped or 'none'})")
    resolved = resolve_spec(checkpoint)
    if resolved.backend.name != "segearth-r2":
        raise UsageError(f"model-check compares SegEarth-R2 prompt templates; {checkpoint!r} is a "
                         f"{resolved.backend.title} checkpoint")
    segmenter = SegEarthR2Segmenter.from_pretrained(resolved.folder, device=device, batch_size=batch_size)
    result = score_templates(segmenter, chosen, names, mode=mode, batch_size=batch_size, progress=progress,
                             checkpoint=str(checkpoint))
    result.skipped = dict(reader.skipped)
    return result
