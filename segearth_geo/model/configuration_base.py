"""The plumbing every backend's typed configuration shares (as transformers' ``PretrainedConfig``).

A backend's config is a dataclass that subclasses :class:`ConfigBase` and declares, as class attributes:

* ``title`` – the model's name in messages (``"SegEarth-R2"``);
* ``sub_configs`` – field name → sub-config dataclass (``{"text": TextConfig, "mask": MaskConfig}``);
* ``sub_defaults`` – sub-config values the backend's defaults differ in (SegEarth-R1's Phi-1.5 sizes), applied
  under any dict given for that sub-config;
* ``presets`` – named presets as plain dicts over the defaults (sub-configs as dicts);

and implements ``_derive()`` (values computed once after init, e.g. ``pad_token_id``), ``_problems()`` (its own
validation, a list of messages) and the official ``config.json`` layout (``to_official_dict`` /
``from_official_dict``). This module gives the rest once: dict sub-configs turned into dataclasses,
:meth:`~ConfigBase.validate`, :meth:`~ConfigBase.from_preset`, :meth:`~ConfigBase.to_dict` /
:meth:`~ConfigBase.from_dict`, and ``config.json`` out and in (:meth:`~ConfigBase.save_json` /
:meth:`~ConfigBase.from_json`, through the one reader :func:`~segearth_geo.model.checkpoint_files.read_config_json`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

from segearth_geo.errors import UsageError
from segearth_geo.model.checkpoint_files import CONFIG_NAME, read_config_json

OUR_BLOCK = "segearth_geo"  # our full config under this key of config.json, next to the official fields


def sub_from_dict(cls: type, data: dict[str, Any]):
    """A sub-config dataclass from a dict (lists become tuples); :class:`UsageError` for unknown fields."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise UsageError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class ConfigBase:
    """Shared behaviour of the backends' config dataclasses (see the module docstring)."""

    title: ClassVar[str] = "model"
    sub_configs: ClassVar[dict[str, type]] = {}
    sub_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        for name, cls in self.sub_configs.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, sub_from_dict(cls, value))
        self._derive()
        self.validate()

    def _derive(self) -> None:
        """Fill values computed from others (overridden)."""

    def _problems(self) -> list[str]:
        """What is wrong with the sizes, one message each (overridden)."""
        return []

    def validate(self) -> None:
        """Raise :class:`UsageError` for sizes the network cannot be built with."""
        problems = self._problems()
        if problems:
            raise UsageError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any):
        """Build a named preset; ``overrides`` replace top-level fields or sub-config fields.

        Sub-config fields are given as dicts (``from_preset("tiny", mask={"image_size": 256})``) or as a whole
        sub-config instance.
        """
        if name not in cls.presets:
            raise UsageError(f"unknown {cls.title} preset {name!r}; choose one of {sorted(cls.presets)}")
        data = copy.deepcopy(cls.presets[name])
        for key, value in overrides.items():
            if key in cls.sub_configs and isinstance(value, dict):
                data.setdefault(key, {}).update(value)
            elif key in cls.sub_configs and isinstance(value, cls.sub_configs[key]):
                data[key] = dataclasses.asdict(value)
            else:
                data[key] = value
        return cls.from_dict(data)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """The config of a :meth:`to_dict` dict (sub-configs over ``sub_defaults``); unknown fields refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UsageError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        data = copy.deepcopy(data)
        for name, defaults in cls.sub_defaults.items():
            if isinstance(data.get(name), dict):
                data[name] = {**defaults, **data[name]}
        return cls(**data)

    def to_official_dict(self) -> dict[str, Any]:
        """``config.json`` content in the backend's official layout plus :data:`OUR_BLOCK` (overridden)."""
        raise NotImplementedError

    @classmethod
    def from_official_dict(cls, data: dict[str, Any]):
        """The config of a ``config.json`` dict (overridden)."""
        raise NotImplementedError

    def save_json(self, directory: str | Path) -> Path:
        """Write ``config.json`` (official layout + our block) into ``directory``; return its path."""
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_official_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, directory_or_file: str | Path):
        """Read ``config.json`` from a checkpoint directory (or the file itself)."""
        return cls.from_official_dict(read_config_json(directory_or_file, f"a {cls.title} checkpoint directory"))
