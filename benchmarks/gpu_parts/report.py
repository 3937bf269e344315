"""The targets the figures are read against, and the Markdown the suite writes (one file, a table per part).

Targets (issue 20; on one H100): SegEarth-R2 3B ≥ 50 chips/s batched and ≤ 60 ms/chip at batch 1 (compute floor
≈ 7.5 ms/chip; the paper: 0.54 s/image on an A100), each forced answer length; re-prompt ≤ 1/5 of the first
prompt, each backend; the CPU side never the bottleneck (:func:`gpu_parts.engine.verdict`). A missed target
brings its profile into the Markdown ("Why").
"""

from __future__ import annotations

from typing import Any

R2_CHIPS_PER_S, R2_MS_AT_1, REPROMPT_RATIO = 50.0, 60.0, 0.2
NAMES = {"segearth-r2": "SegEarth-R2", "segearth-r1": "SegEarth-R1", "sam3": "SAM3"}
WHICH = {"batch1": "at batch 1", "best": "at the best batch"}


def _where(which: str, batch: int) -> str:
    return WHICH[which] if which == "batch1" else f"{WHICH[which]} ({batch})"
READ_AGAINST = ("Read against (issue 20, one H100): SegEarth-R2 3B ≥ 50 chips/s batched and ≤ 60 ms/chip at batch 1 "
                "(compute floor ≈ 7.5 ms/chip; the paper: 0.54 s/image on an A100); re-prompt ≤ 1/5 of the first "
                "prompt; the CPU side never the bottleneck.")


def _data(parts: dict, name: str) -> dict:
    return (parts.get(name) or {}).get("data") or {}


def _label(parts: dict, name: str) -> str:
    preset = (_data(parts, name).get("model") or {}).get("preset")
    return f"{NAMES.get(name, name)} ({preset})" if preset else NAMES.get(name, name)


def _target(name: str, value: float | None, limit: float, unit: str, higher: bool, why: str) -> dict[str, Any]:
    passed = None if value is None else (value >= limit if higher else value <= limit)
    return {"target": name, "value": value, "limit": f"{'≥' if higher else '≤'} {limit:g} {unit}".strip(),
            "passed": passed, "why": why}


def targets(parts: dict, answer_lengths: tuple[int, ...]) -> list[dict[str, Any]]:
    """Each target with its figure and ``passed`` (``None``: the figure is missing)."""
    r2 = _data(parts, "segearth-r2")
    found = []
    for k in answer_lengths:
        sweep = r2.get(f"k{k}") or {}
        best, one = sweep.get("best") or {}, sweep.get("batch1") or {}
        found.append(_target(f"SegEarth-R2 batched, answer {k} ids", best.get("chips_per_s"), R2_CHIPS_PER_S,
                             "chips/s", True, f"r2-k{k}"))
        found.append(_target(f"SegEarth-R2 batch 1, answer {k} ids", one.get("ms_per_chip"), R2_MS_AT_1, "ms/chip",
                             False, f"r2-k{k}"))
    for name in ("segearth-r2", "segearth-r1", "sam3"):
        ratio = (_data(parts, name).get("reprompt") or {}).get("ratio")
        found.append(_target(f"re-prompt {NAMES[name]}: second / first", ratio, REPROMPT_RATIO, "", False,
                             f"reprompt-{name}"))
    verdict = _data(parts, "engine").get("verdict") or {}
    bottleneck = verdict.get("cpu_bottleneck")
    found.append({"target": "the CPU side never the bottleneck (engine, SAM3)", "value": verdict.get("why"),
                  "limit": "GPU waits ≤ 10 %, CPU ceilings ≥ model chips/s",
                  "passed": None if bottleneck is None else not bottleneck, "why": "engine"})
    return found


def number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def _gib(mib: Any) -> str:
    return "–" if mib is None else f"{mib / 1024:.1f}"


def _sweep_text(sweep: dict) -> str:
    cells = []
    for row in sweep.get("rows") or []:
        if row.get("oom"):
            cells.append(f"{row['batch']}: OOM")
        elif "skipped" in row:
            cells.append(f"{row['batch']}: skipped")
        else:
            cells.append(f"{row['batch']}: {row['chips_per_s']:.2f}")
    return " · ".join(cells) or "–"


def _throughput_rows(parts: dict, answer_lengths: tuple[int, ...]) -> list[str]:
    rows = []

    def add(label: str, setting: str, sweep: dict | None) -> None:
        if not sweep:
            return
        best, one = sweep.get("best") or {}, sweep.get("batch1") or {}
        rows.append(f"| {label} | {setting} | {number(best.get('chips_per_s'), 2)} ({best.get('batch', '–')}) | "
                    f"{number(one.get('ms_per_chip'))} | {_gib(best.get('peak_mib'))} | {_sweep_text(sweep)} |")

    r2 = _data(parts, "segearth-r2")
    for k in answer_lengths:
        add(_label(parts, "segearth-r2"), f"answer {k} ids", r2.get(f"k{k}"))
        naive = r2.get(f"naive_k{k}")
        if naive:
            rows.append(f"| {_label(parts, 'segearth-r2')} naive official loop | answer {k} ids, batch 1, generate + "
                        f"hidden states | {number(naive['chips_per_s'], 2)} (1) | {number(naive['ms_per_chip'])} | "
                        f"{_gib(naive['peak_mib'])} | – |")
    add(_label(parts, "segearth-r1"), "one prompt", _data(parts, "segearth-r1").get("c1"))
    sam3 = _data(parts, "sam3")
    threshold = (sam3.get("calibration") or {}).get("score_threshold")
    for key in sorted(k for k in sam3 if k.startswith("c") and k[1:].isdigit()):
        count = int(key[1:])
        setting = f"{count} concept{'s' if count > 1 else ''}" + (f", score > {threshold:.4g}" if threshold else "")
        add(_label(parts, "sam3"), setting, sam3[key])
    return rows


def _reprompt_rows(parts: dict) -> list[str]:
    rows = []
    for name in ("segearth-r2", "segearth-r1", "sam3"):
        found = _data(parts, name).get("reprompt")
        if found:
            hits = ", ".join(f"{t} {n}" for t, n in sorted((found["cache"].get("hits") or {}).items())) or "none"
            rows.append(f"| {_label(parts, name)} | {found['chips']} ({found['batch']}) | {found['first_s']:.3f} | "
                        f"{found['second_s']:.3f} | {found['ratio']:.3f} | {hits}; {found['cache'].get('evictions', 0)} "
                        "evicted |")
    return rows


def _no_figures(parts: dict, name: str) -> str:
    status = (parts.get(name) or {}).get("status", "not run")
    return f"No figures ({name}: {status}; see Errors and notes)." if name in parts else f"No figures: {name} not run."


def _engine_lines(parts: dict) -> list[str]:
    data = _data(parts, "engine")
    run, scene = data.get("run"), data.get("scene") or {}
    if not run:
        return [_no_figures(parts, "engine")]
    ceilings = [data.get(k, {}).get("chips_per_s") for k in ("ceiling_model", "ceiling_objects")]
    one = data.get("one_thread") or {}
    verdict = data.get("verdict") or {}
    return [
        f"Scene {scene.get('side', 0):,}² px, SAM3 ({(data.get('calibration') or {}).get('instances_kept', '–')} "
        f"instances per chip kept at calibration), batch {run['batch']}, {run['chips']} chips.",
        "",
        "| chips/s end to end | model chips/s | GPU waiting (share of chip loop) | longest wait ms | CPU-side ceiling "
        "chips/s (model masks / object masks) | read ms/chip | vectorise ms/chip (model / object masks) | polygons | "
        "peak GiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {run['chips_per_s']:.2f} | {run['model_chips_per_s']:.2f} | {run['gpu_wait_s']:.2f} s "
        f"({100 * run['gpu_wait_share']:.1f} %) | {run['longest_wait_ms']:.0f} | {number(ceilings[0], 2)} / "
        f"{number(ceilings[1], 2)} | {number(one.get('read_ms'))} | {number(one.get('vectorise_model_ms'))} / "
        f"{number(one.get('vectorise_objects_ms'))} | {run['polygons']:,} | {_gib(run.get('peak_mib'))} |",
        "",
        f"Verdict: {verdict.get('why', '–')}.",
    ]


def _serve_lines(parts: dict) -> list[str]:
    data = _data(parts, "serve")
    if data.get("skipped"):
        return [f"Skipped: {data['skipped']}."]
    local, served = data.get("in_process"), data.get("served")
    if not (local and served):
        return [_no_figures(parts, "serve")]
    server = data.get("server") or {}
    return ["| chips | in-process chips/s | through serve chips/s | served / in-process | server start s | batch |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {local['chips']} | {local['chips_per_s']:.2f} | {served['chips_per_s']:.2f} | {data['ratio']:.3f} | "
            f"{number(server.get('start_s'))} | {server.get('batch', '–')} |"]


def _result(passed: bool | None) -> str:
    return {True: "pass", False: "**FAIL**", None: "no figure"}[passed]


def _ops_lines(profile: dict, title: str, limit: int = 8) -> list[str]:
    busy = profile.get("device_busy_share")
    lines = [f"{title}: one call {profile['wall_ms']:.1f} ms"
             + (f", GPU kernels busy {100 * busy:.0f} % of it" if busy is not None else " (CPU clock)"), "",
             f"| op | calls | self ms ({profile['clock']}) | share of the call |", "|---|---:|---:|---:|"]
    lines += [f"| `{op['op']}` | {op['calls']} | {op['self_ms']:.2f} | {100 * op['share']:.1f} % |"
              for op in profile["ops"][:limit]]
    return lines + [""]


def _stage_lines(split: dict, title: str) -> list[str]:
    stages = split.get("stages_ms_per_chip") or {}
    head = " | ".join(stages) + " | rest"
    values = " | ".join(f"{v:.1f}" for v in stages.values()) + f" | {split.get('other_ms_per_chip', 0):.1f}"
    return [f"{title}: {split['ms_per_chip']:.1f} ms/chip", "", f"| {head} |",
            "|" + "---:|" * (len(stages) + 1), f"| {values} |", ""]


def _why_lines(parts: dict, found: list[dict]) -> list[str]:
    missed = {t["why"] for t in found if t["passed"] is False}
    lines: list[str] = []
    r2 = _data(parts, "segearth-r2")
    for k in sorted(int(m.split("-k")[1]) for m in missed if m.startswith("r2-")):
        lines += [f"### SegEarth-R2, answer {k} ids: stage timers (ms/chip)", ""]
        for which, split in (r2.get(f"stages_k{k}") or {}).items():
            lines += _stage_lines(split, f"Stages {_where(which, split['batch'])}")
    if any(m.startswith("r2-") or m == "reprompt-segearth-r2" for m in missed):
        for which, profile in (r2.get("profile") or {}).items():
            lines += _ops_lines(profile, f"SegEarth-R2 top ops {_where(which, profile['batch'])}")
    if "reprompt-segearth-r2" in missed and (r2.get("reprompt") or {}).get("stages_ms_per_chip"):
        for which, stages in r2["reprompt"]["stages_ms_per_chip"].items():
            lines.append(f"SegEarth-R2 re-prompt, {which} prompt, ms/chip: "
                         + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
        lines.append("")
    for name in ("segearth-r1", "sam3"):
        if f"reprompt-{name}" in missed:
            for which, profile in (_data(parts, name).get("profile") or {}).items():
                lines += _ops_lines(profile, f"{NAMES[name]} top ops {_where(which, profile['batch'])}")
    if "engine" in missed:
        lines.append(f"Engine: {(_data(parts, 'engine').get('verdict') or {}).get('why')} (figures above).")
    return lines


def markdown(summary: dict) -> str:
    """The suite's Markdown: machine line, one table per part, targets, where the time went, why, errors."""
    parts, settings = summary["parts"], summary["settings"]
    lengths = tuple(settings["answer_lengths"])
    lines = ["# GPU figures", "", machine_line(summary), ""]
    if summary["dry_run"]:
        lines += ["Dry run: CPU, tiny presets. It checks that every part runs; its figures are not read against "
                  "the targets.", ""]
    lines += ["## Throughput (random weights; chips/s at the best batch of the sweep)", "",
              "| model | setting | chips/s (best batch) | ms/chip at batch 1 | peak GiB (best batch) | sweep: batch: "
              "chips/s |", "|---|---|---:|---:|---:|---|", *_throughput_rows(parts, lengths), ""]
    lines += ["## Re-prompt with the image cache (same chips, a second prompt)", "",
              "| model | chips (batch) | first prompt s | second prompt s | second / first | cache hits |",
              "|---|---:|---:|---:|---:|---|", *_reprompt_rows(parts), ""]
    lines += ["## Engine end to end (segment_raster, SAM3)", "", *_engine_lines(parts), ""]
    lines += ["## Serving (SAM3, in-process vs segearth-geo serve on the same device)", "", *_serve_lines(parts), ""]
    found = summary["targets"]
    lines += ["## Targets", "", READ_AGAINST, "", "| target | figure | limit | result |", "|---|---|---|---|"]
    lines += [f"| {t['target']} | {number(t['value'], 2)} | {t['limit']} | {_result(t['passed'])} |" for t in found]
    lines += ["", "## Where the time went", "", "| part | status | seconds | steps (s) |", "|---|---|---:|---|"]
    for name, part in parts.items():
        steps = " · ".join(f"{k} {v:.1f}" for k, v in (part.get("steps") or {}).items())
        lines.append(f"| {name} | {part['status']} | {part['seconds']:.1f} | {steps or '–'} |")
    why = _why_lines(parts, found)
    if why:
        lines += ["", "## Why (targets missed)", "", *why]
    problems = [f"- {name} / {step}: {e['error']} ({e['where']})" for name, part in parts.items()
                for step, e in (part.get("errors") or {}).items()]
    problems += [f"- {name}: {note}" for name, part in parts.items() for note in part.get("notes") or []]
    if problems:
        lines += ["", "## Errors and notes", "", *problems]
    return "\n".join(lines).rstrip() + "\n"


def machine_line(summary: dict) -> str:
    m = summary["machine"]
    gpu = m.get("gpu") or {}
    if gpu.get("name"):
        where = (f"{gpu['name']} ({gpu.get('memory_gib', '?')} GiB), driver {gpu.get('driver', '?')}, "
                 f"CUDA {m.get('cuda', '?')}")
    else:
        where = f"CPU only ({m.get('cpu', '?')})"
    return (f"Machine: {where}, {m.get('cpu_count', '?')} CPU cores, torch {m.get('torch', '?')}, transformers "
            f"{m.get('transformers', '?')} · {summary['date']} · `{summary['command']}` · {summary['seconds']:.0f} s")
