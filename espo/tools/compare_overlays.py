"""Structure overlays of ``espo compare``: an objective YAML may change the run's structure, not only its loss.

An objective named by a YAML path contributes its ``model.objective`` section and, when it has one, a top-level
``overrides:`` mapping of dotted config keys to values, so each objective can run with its own paper's structure
(μ, completions per prompt, batch size, learning rate, sampling temperature) on one shared base config::

    model:
      objective: {class_path: ESPO, init_args: {beta: 0.01, eps_low: 0.2, num_mc: 2}}
    overrides:
      model.num_iterations: 8
      model.num_generations: 6
      data.init_args.batch_size: 16
      model.optimizer.init_args.lr: 5.0e-5

The overrides are applied to each run's config after its objective is swapped in and before ``espo compare``
sets the seed, budget and logger (so those stay the comparison's). Every key is checked against the base
config before any run starts (``check_overrides``): its parent must exist and the key must be a setting there,
either in the base config or among the parameters ``espo fit`` accepts at that place (``DiffusionRL``'s
arguments and the fields of its settings groups under ``model``, Lightning ``Trainer``'s under ``trainer``), so
a typo such as ``model.num_iteration`` fails at once with one line naming the key and the file. Keys below an
``init_args`` mapping (a class's own arguments: the optimiser's, the task's, the sampler's) may be new, and
missing dicts on their way are created.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective of a comparison.

    Attributes:
        label: The name in the tables (the class name, or the YAML file's stem).
        section: The whole ``model.objective`` section of its runs.
        overrides: Dotted config keys -> values applied to its runs (empty unless its YAML has ``overrides:``).
        source: The YAML file it came from (None for a class name), named in error messages.
    """

    label: str
    section: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None


def read_objective_yaml(path: Path) -> ObjectiveSpec:
    """The spec of an objective YAML: a full config, or a bare ``class_path``/``init_args`` section.

    Raises:
        ValueError: ``overrides`` is not a mapping of dotted keys (one line naming the file).
    """
    loaded = yaml.safe_load(path.read_text()) or {}
    overrides = loaded.get("overrides") or {}
    if not isinstance(overrides, dict) or not all(isinstance(k, str) and k for k in overrides):
        raise ValueError(f"{path}: overrides must map dotted config keys (model.num_iterations) to values.")
    section = loaded["model"]["objective"] if "model" in loaded else {k: v for k, v in loaded.items()
                                                                      if k != "overrides"}
    return ObjectiveSpec(path.stem, section, dict(overrides), path)


def check_overrides(base: dict[str, Any], spec: ObjectiveSpec) -> None:
    """Fails on the first override key that is not a setting of the base config's structure.

    Raises:
        ValueError: One line naming the key, the file and what is wrong with it.
    """
    known = _known_structure(base) if spec.overrides else {}
    for key in spec.overrides:
        parts = key.split(".")
        node: Any = known
        for depth, part in enumerate(parts):
            if "init_args" in parts[:depth] or (part == "init_args" and (node is None or isinstance(node, dict))):
                break  # a class's own arguments (also of a class the base leaves at its default): may be new
            where = ".".join(parts[:depth]) or "the top level"
            if not isinstance(node, dict) or part not in node:
                names = sorted(node) if isinstance(node, dict) else []
                close = difflib.get_close_matches(part, names, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known there: {', '.join(names) or 'none'}"
                raise ValueError(f"{spec.source}: override {key!r}: {part!r} is not a setting at {where} of the "
                                 f"base config ({hint}).")
            node = node[part]


def apply_overrides(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Sets each dotted key of ``overrides`` in ``cfg`` (in place; missing dicts on the way are created)."""
    for key, value in overrides.items():
        *parents, last = key.split(".")
        node = cfg
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = copy.deepcopy(value)
    return cfg


def _known_structure(base: dict[str, Any]) -> dict[str, Any]:
    """The base config widened by the settings ``espo fit`` accepts that the base leaves at their defaults."""
    from lightning.pytorch import Trainer  # imported here: reading a YAML should not wait for torch

    from espo.module import DiffusionRL

    known = copy.deepcopy(base)
    model = known.setdefault("model", {})
    hints = typing.get_type_hints(DiffusionRL.__init__)
    for name in inspect.signature(DiffusionRL.__init__).parameters:
        if name == "self":
            continue
        group = _dataclass_in(hints.get(name))
        if group is not None:  # a settings group (batching, stability, ...): its fields are settings
            fields = {f.name: None for f in dataclasses.fields(group)}
            current = model.get(name)
            model[name] = {**fields, **current} if isinstance(current, dict) else fields
        else:
            model.setdefault(name, None)
    trainer = known.setdefault("trainer", {})
    for name in inspect.signature(Trainer.__init__).parameters:
        if name != "self":
            trainer.setdefault(name, None)
    return known


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass of a parameter annotated ``X`` or ``X | None`` (None for any other annotation)."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    candidates = typing.get_args(hint) if union else (hint,)
    return next((c for c in candidates if isinstance(c, type) and dataclasses.is_dataclass(c)), None)
