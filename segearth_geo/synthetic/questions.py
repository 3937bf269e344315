"""Questions and answers about one rendered SynthEarth window, in the LaSeRS style.

:func:`make_question` looks at what is visible in the window (object and part masks) and
writes one instruction, its answer with one ``<p>label</p> [SEG]`` per target, the target
masks in ``[SEG]`` order and the four LaSeRS dimension tags:

* granularity: ``semantic`` (all objects of a category, one mask), ``instance`` (one chosen
  object: the largest, the leftmost…), ``part`` (nets, wings, engines, bows, sterns);
* count: ``single`` / ``multiple`` targets;
* explicitness: ``explicit`` (the category is named) / ``implicit`` (a purpose or situation:
  "where could this plane take off?" → runway);
* length: ``short`` / ``long`` — decided by the instruction's word count (:data:`LONG_WORDS`).

A few questions ask for something absent; their answer has no ``[SEG]`` and no mask. Short
semantic and "absent" instructions include bare noun phrases ("all the buildings", "buildings"),
the way people type into a prompt box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segearth_geo.synthetic.objects import CATEGORIES, PARTS
from segearth_geo.synthetic.scene import RenderedWindow

LONG_WORDS = 13  # instructions with at least this many words are "long"
MIN_PIXELS = {"semantic": 60, "instance": 20, "part": 10}  # a car is about 9 × 4 px

THEME_WORDS = {
    "city": "a city district",
    "airport": "an airport",
    "harbour": "a harbour",
    "rural": "a rural area",
}
# category -> (short implicit question, long implicit question)
IMPLICIT: dict[str, tuple[str, str]] = {
    "runway": ("Where could this plane take off?",
               "Aircraft need a long, straight paved strip to accelerate before lifting off; where could a plane take off here?"),
    "water": ("Where could a boat sail?",
              "Boats and ships can only move on open water; which areas of this image could a boat sail on?"),
    "track field": ("Where do athletes run their laps?",
                    "A school wants to hold a sprint and relay competition; which facility here is designed for running races?"),
    "parking lot": ("Where can drivers leave their cars?",
                    "Visitors arriving by car need somewhere to leave their vehicles for a few hours; which areas serve this purpose?"),
    "swimming pool": ("Where could residents go for a swim?",
                      "On a hot summer afternoon a family wants to cool off in clean water near home; where could they swim?"),
    "tree": ("What gives shade in this area?",
             "Which natural features in this scene provide shade, absorb carbon dioxide and could be cut for timber?"),
    "building": ("Where do people live or work here?",
                 "People spend most of their day indoors, at home or at work; which structures in this scene could shelter them?"),
    "road": ("What do cars drive on?",
             "Vehicles travel between different parts of this area along paved routes; which surfaces carry this traffic?"),
    "tennis court": ("Where could people play a racket sport?",
                     "Two friends want to play a match with rackets and a fuzzy yellow ball this weekend; where could they play?"),
    "airplane": ("What here can carry passengers through the air?",
                 "Some vehicles in this scene can fly hundreds of passengers between distant cities; which ones are they?"),
    "ship": ("What could carry cargo across the sea?",
             "Goods are often moved between continents in containers on large vessels; which objects here could do that?"),
    "car": ("What do people here drive to work?",
            "Many residents commute every day in small private motor vehicles with four wheels; which objects in this image are those?"),
}
# (category, part) -> (short implicit question, long implicit question)
IMPLICIT_PARTS: dict[tuple[str, str], tuple[str, str]] = {
    ("airplane", "engine"): ("Which parts of the plane produce thrust?",
                             "A jet aircraft needs thrust to move forward; which components of the airplane produce that thrust?"),
    ("airplane", "wing"): ("Which parts of the plane create lift?",
                           "An aircraft stays in the air because some of its surfaces generate lift; which parts of the airplane do this?"),
    ("tennis court", "net"): ("What divides the tennis court in two?",
                              "During a match the ball must pass over a barrier that separates the two players' halves; where is it?"),
    ("ship", "bow"): ("Which end of the ship cuts the water first?",
                      "When a vessel sails forward, one pointed end meets the waves first; which part of the ship is it?"),
    ("ship", "stern"): ("Where is the rear end of the ship?",
                        "The propeller, the rudder and usually the bridge are found at the back of a vessel; which part of the ship is that?"),
}
SHELTER = ("track field", "parking lot", "tennis court")  # open areas away from buildings
SHELTER_QUESTIONS = (
    "Where could people shelter after an earthquake?",
    "After a strong earthquake, residents must gather in open spaces far from collapsing walls; which areas here could serve as shelters?",
)
NOT_INSTANCES = ("road", "water")  # networks and water bodies have no meaningful "largest one"
SINGLE_ANSWERS = ("Sure, the <p>{}</p> [SEG] is segmented.", "Of course! The <p>{}</p> [SEG] segmentation completed.", "Here is the <p>{}</p> [SEG].")
POSITIONS = {  # name -> (axis: 1 = column / 0 = row, pick largest?)
    "leftmost": (1, False), "rightmost": (1, True), "topmost": (0, False), "bottommost": (0, True),
}


@dataclass
class Question:
    """One question about a window: instruction, answer, masks (one per ``[SEG]``), dimension tags."""

    instruction: str
    answer: str
    masks: list[np.ndarray]
    labels: list[str]
    dimensions: dict[str, str]


class _Visible:
    """Visible objects of a window grouped by category, with masks computed once."""

    def __init__(self, rendered: RenderedWindow, categories: list[str]) -> None:
        self.rendered = rendered
        self.by_cat: dict[str, list[tuple[int, np.ndarray]]] = {}
        ids, counts = np.unique(rendered.object_map[rendered.object_map >= 0], return_counts=True)
        for idx, count in zip(ids.tolist(), counts.tolist()):
            if count >= MIN_PIXELS["instance"]:
                self.by_cat.setdefault(categories[idx], []).append((idx, rendered.instance_mask(idx)))

    def semantic(self, category: str) -> np.ndarray | None:
        items = self.by_cat.get(category, [])
        if not items:
            return None
        mask = np.logical_or.reduce([m for _, m in items])
        return mask if mask.sum() >= MIN_PIXELS["semantic"] else None

    def part(self, category: str, part: str) -> np.ndarray | None:
        items = self.by_cat.get(category, [])
        masks = [self.rendered.part_mask(idx, part) for idx, _ in items]
        if not masks:
            return None
        mask = np.logical_or.reduce(masks)
        return mask if mask.sum() >= MIN_PIXELS["part"] else None


def _with_length(rng: np.random.Generator, short: str, long: str) -> tuple[str, str]:
    text = long if rng.random() < 0.5 else short
    return text, ("long" if len(text.split()) >= LONG_WORDS else "short")


def _long_explicit(rng: np.random.Generator, theme: str, request: str) -> str:
    lead = str(rng.choice([
        f"This aerial image was taken over {THEME_WORDS[theme]} at about half a metre per pixel.",
        f"Look carefully at this overhead view of {THEME_WORDS[theme]}.",
        f"In this high-resolution remote sensing image of {THEME_WORDS[theme]},",
    ]))
    if lead.endswith(","):
        return f"{lead} {request[0].lower()}{request[1:]}"
    return f"{lead} {request}"


def _answer(labels: list[str], rng: np.random.Generator) -> str:
    if len(labels) == 1:
        return str(rng.choice(SINGLE_ANSWERS)).format(labels[0])
    items = [f"the <p>{label}</p> [SEG]" for label in labels]
    return "Sure, " + ", ".join(items[:-1]) + " and " + items[-1] + " are segmented."


def _tags(granularity: str, n: int, explicit: bool, length: str) -> dict[str, str]:
    return {"granularity": granularity, "count": "multiple" if n > 1 else "single",
            "explicitness": "explicit" if explicit else "implicit", "length": length}


def _semantic(v: _Visible, rng, theme) -> Question | None:
    cats = [c for c in v.by_cat if v.semantic(c) is not None]
    if not cats:
        return None
    cat = str(rng.choice(cats))
    plural = CATEGORIES[cat]
    # The last two are what users type in a prompt box: a bare noun phrase, no verb.
    short = str(rng.choice([f"Segment all the {plural}.", f"Find every {cat} in the image.", f"Show me the {plural}.",
                            f"all the {plural}", plural]))
    long = _long_explicit(rng, theme, f"Please segment all of the {plural} that are visible anywhere in the scene, including partly visible ones.")
    text, length = _with_length(rng, short, long)
    return Question(text, _answer([cat], rng), [v.semantic(cat)], [cat], _tags("semantic", 1, True, length))


def _pick_instance(v: _Visible, cat: str, rng) -> tuple[str, np.ndarray] | None:
    """An unambiguous instance of ``cat``: the only one, or the largest/smallest/leftmost… one."""
    items = v.by_cat.get(cat, [])
    if len(items) == 1:
        return "", items[0][1]
    if len(items) < 2:
        return None
    areas = np.array([m.sum() for _, m in items])
    by_area = np.argsort(areas)
    centres = {axis: np.array([np.nonzero(m)[axis].mean() for _, m in items]) for axis in (0, 1)}
    criteria = ["largest", "smallest", *POSITIONS]
    for k in rng.permutation(len(criteria)):
        name = criteria[int(k)]
        if name == "largest" and areas[by_area[-1]] >= 1.3 * areas[by_area[-2]]:
            return name, items[by_area[-1]][1]
        if name == "smallest" and areas[by_area[1]] >= 1.3 * areas[by_area[0]]:
            return name, items[by_area[0]][1]
        if name in POSITIONS:
            axis, biggest = POSITIONS[name]
            order = np.argsort(centres[axis])
            first, second = (order[-1], order[-2]) if biggest else (order[0], order[1])
            if abs(centres[axis][first] - centres[axis][second]) >= 12:
                return name, items[first][1]
    return None


def _instance(v: _Visible, rng, theme) -> Question | None:
    cats = [c for c in v.by_cat if c not in NOT_INSTANCES]
    rng.shuffle(cats)
    for cat in cats:
        picked = _pick_instance(v, cat, rng)
        if picked is None:
            continue
        adjective, mask = picked
        phrase = f"{adjective} {cat}".strip()
        if adjective in POSITIONS:
            short = f"Segment the {phrase}."
            request = f"Please segment the {cat} that lies {adjective.replace('most', '')}-most of all the {CATEGORIES[cat]} in this image."
            request = request.replace("top-most", "highest up").replace("bottom-most", "lowest down")
        elif adjective:
            short = f"Segment the {phrase}."
            request = f"Please segment only the {phrase} among all the {CATEGORIES[cat]} you can see in this image."
        else:
            short = f"Where is the {cat}?"
            request = f"There is exactly one {cat} in this image; please find it and segment its full outline."
        text, length = _with_length(rng, short, _long_explicit(rng, theme, request))
        return Question(text, _answer([phrase], rng), [mask], [phrase], _tags("instance", 1, True, length))
    return None


def _part(v: _Visible, rng, theme) -> Question | None:
    options = [(c, p) for c in PARTS if c in v.by_cat for p in PARTS[c] if v.part(c, p) is not None]
    if not options:
        return None
    if rng.random() < 0.3 and len({c for c, _ in options}) == 1 and len(options) > 1:
        cat = options[0][0]
        labels = [PARTS[cat][p] for _, p in options]
        names = [p + "s" for _, p in options]
        short = f"Segment the {' and '.join(names)} of the {cat}."
        request = f"Please segment the {' and the '.join(names)} of every {cat} in this picture, as separate masks."
        text, length = _with_length(rng, short, _long_explicit(rng, theme, request))
        masks = [v.part(cat, p) for _, p in options]
        return Question(text, _answer(labels, rng), masks, labels, _tags("part", len(masks), True, length))
    cat, part = options[int(rng.integers(len(options)))]
    short = str(rng.choice([f"Segment the {part}s of the {cat}.", f"Find the {part} of the {cat}."]))
    request = f"Please segment only the {part} parts of the {cat}, not the whole {cat} itself."
    text, length = _with_length(rng, short, _long_explicit(rng, theme, request))
    label = PARTS[cat][part]
    return Question(text, _answer([label], rng), [v.part(cat, part)], [label], _tags("part", 1, True, length))


def _multi(v: _Visible, rng, theme) -> Question | None:
    cats = [c for c in v.by_cat if v.semantic(c) is not None]
    if len(cats) < 2:
        return None
    chosen = [str(c) for c in rng.choice(cats, size=min(len(cats), int(rng.integers(2, 4))), replace=False)]
    names = [f"the {CATEGORIES[c]}" for c in chosen]
    joined = ", ".join(names[:-1]) + " and " + names[-1]
    short = f"Segment {joined}."
    request = f"Please produce one separate mask for each of these: {joined}, in exactly that order."
    text, length = _with_length(rng, short, _long_explicit(rng, theme, request))
    masks = [v.semantic(c) for c in chosen]
    return Question(text, _answer(chosen, rng), masks, chosen, _tags("semantic", len(chosen), True, length))


def _implicit(v: _Visible, rng, theme) -> Question | None:
    shelter = [c for c in SHELTER if v.semantic(c) is not None]
    parts = [(c, p) for (c, p) in IMPLICIT_PARTS if c in v.by_cat and v.part(c, p) is not None]
    cats = [c for c in IMPLICIT if v.semantic(c) is not None]
    roll = rng.random()
    if shelter and roll < 0.25:
        text, length = _with_length(rng, *SHELTER_QUESTIONS)
        masks = [v.semantic(c) for c in shelter]
        return Question(text, _answer(list(shelter), rng), masks, list(shelter), _tags("semantic", len(masks), False, length))
    if parts and roll < 0.6:
        cat, part = parts[int(rng.integers(len(parts)))]
        text, length = _with_length(rng, *IMPLICIT_PARTS[(cat, part)])
        label = PARTS[cat][part]
        return Question(text, _answer([label], rng), [v.part(cat, part)], [label], _tags("part", 1, False, length))
    if not cats:
        return None
    cat = str(rng.choice(cats))
    text, length = _with_length(rng, *IMPLICIT[cat])
    return Question(text, _answer([cat], rng), [v.semantic(cat)], [cat], _tags("semantic", 1, False, length))


def _absent(v: _Visible, rng, theme) -> Question | None:
    absent = [c for c in CATEGORIES if c not in v.by_cat and c != "water"]
    if not absent:
        return None
    cat = str(rng.choice(absent))
    short = str(rng.choice([f"Segment the {CATEGORIES[cat]}.", f"all the {CATEGORIES[cat]}"]))
    text, length = _with_length(rng, short, _long_explicit(rng, theme, f"Please find and segment every {cat} that appears in this image, if there is one."))
    answer = str(rng.choice([f"There is no {cat} in the image.", f"Sorry, I cannot find any {cat} in this image."]))
    return Question(text, answer, [], [], _tags("semantic", 1, True, length))


KINDS = (("semantic", _semantic, 3.0), ("instance", _instance, 4.0), ("part", _part, 5.0),
         ("multi", _multi, 2.0), ("implicit", _implicit, 3.0), ("absent", _absent, 0.4))


def make_question(rendered: RenderedWindow, categories: list[str], theme: str, rng: np.random.Generator) -> Question | None:
    """One question about the visible content of ``rendered``; ``None`` if nothing fits.

    ``categories[i]`` is the category of object ``i`` of the layout. The question kind is
    drawn from :data:`KINDS` by weight; kinds that do not fit the window are skipped.
    """
    visible = _Visible(rendered, categories)
    weights = np.array([w for _, _, w in KINDS])
    order = rng.choice(len(KINDS), size=len(KINDS), replace=False, p=weights / weights.sum())
    for k in order:
        question = KINDS[int(k)][1](visible, rng, theme)
        if question is not None:
            return question
    return None
