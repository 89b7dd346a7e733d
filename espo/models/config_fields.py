"""Reading a family's ``config.json`` as its official config class reads it, and the block size's one source.

The official config classes (``PretrainedConfig`` subclasses shipped as remote code) fill every missing key with
their ``__init__`` defaults and keep an explicit null as None, which their modelling code then either gives a
meaning (LLaDA2: ``num_experts: null`` is a dense model) or cannot use. Each native family's config dataclass
carries the official defaults; :func:`official_values` reads ``config.json`` against it the same way.

The block length of a block-diffusion model (SDAR, LLaDA2) is no field of either official config class: SDAR's
training code reads ``config.block_size`` when the training config adds it, and both families' ``generate`` take
it as ``block_length`` (SDAR's script defaults to 4, LLaDA2's to 32). espo therefore takes it from one stated
source: ``config.json``'s ``block_size`` when the checkpoint carries it, else the ``block_size`` option of
``load_model`` (YAML ``model.policy.block_size``); both given and different, or neither, is an error.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

#: The option that states the block size when ``config.json`` does not.
BLOCK_SIZE_OPTION = "load_model(..., block_size=N) (YAML: model.policy.block_size)"


class ConfigFile:
    """Mixin of the families' config dataclasses: ``from_file`` reads ``config.json`` through ``from_dict``."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Any:
        raise NotImplementedError

    @classmethod
    def from_file(cls, path: str | Path) -> Any:
        """The config of a ``config.json`` file."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def reject_unsupported(raw: dict[str, Any], family: str, expected: dict[str, Any]) -> None:
    """Fails naming a ``config.json`` setting this implementation does not cover.

    Args:
        raw: The ``config.json`` content.
        family: Family name for messages.
        expected: The only supported value of each listed key (a missing key counts as it); a boolean setting
            also accepts the values Python reads as that boolean. ``rope_scaling`` must be absent, null or default.
    """
    for key, value in expected.items():
        got = raw.get(key, value)
        if got != value and not (isinstance(value, bool) and bool(got) == value):
            raise ValueError(f"{family} config field {key}={got!r} is not supported (expected {value!r}).")
    scaling = raw.get("rope_scaling")
    if scaling and (scaling.get("rope_type") or scaling.get("type")) not in (None, "default"):
        raise ValueError(f"{family} config rope_scaling={scaling!r} is not supported (expected null).")


def official_values(cls: type, raw: dict[str, Any], nullable: set[str], family: str) -> dict[str, Any]:
    """The ``config.json`` values of ``cls``'s fields; a missing key keeps the dataclass (official) default.

    Args:
        cls: The family's config dataclass, whose defaults are the official class's.
        raw: The ``config.json`` content.
        nullable: Fields where null has a meaning in the official code (it is kept as None).
        family: Family name for messages.

    Raises:
        ValueError: A null where the official model cannot use one.
    """
    out = {}
    for field in fields(cls):
        if field.name not in raw:
            continue
        value = raw[field.name]
        if value is None and field.name not in nullable:
            default = None if field.default is MISSING else field.default
            raise ValueError(f"{family} config.json sets {field.name}: null, which the official config class "
                             f"cannot build a model from; give a value or drop the key (default {default!r}).")
        out[field.name] = value
    return out


def check_block_size(size: Any, family: str) -> None:
    """Fails when a stated block size is not a positive integer (None: not stated, allowed here)."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise ValueError(f"{family} block_size must be a positive integer; got {size!r}.")


def require_block_size(size: int | None, family: str) -> int:
    """The block size a block-diffusion network is built with; one clear error when it was never stated."""
    if size is None:
        raise ValueError(f"The {family} block size is not stated: config.json has no block_size (it is not a field "
                         f"of the official config class). Pass it with {BLOCK_SIZE_OPTION}.")
    check_block_size(size, family)
    return size


def resolve_block_size(stated: int | None, option: int | None, where: str, family: str) -> int:
    """The one block size: ``config.json``'s (``stated``) or the caller's ``option``, which must agree.

    Args:
        stated: ``block_size`` from ``config.json`` (None when absent).
        option: The ``block_size`` the caller passed (None when not given).
        where: The checkpoint directory, for messages.
        family: Family name for messages.
    """
    check_block_size(option, family)
    if stated is not None and option is not None and stated != option:
        raise ValueError(f"{where}: config.json says block_size {stated} but block_size={option} was passed; the "
                         "attention block is the one the checkpoint was trained with: drop the option or fix the "
                         "checkpoint.")
    if stated is None and option is None:
        raise ValueError(f"{where}: the {family} block size is not stated: config.json has no block_size (it is not "
                         f"a field of the official config class). Pass it with {BLOCK_SIZE_OPTION}.")
    return stated if stated is not None else option
