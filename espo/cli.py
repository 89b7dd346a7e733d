"""The ``espo`` command: LightningCLI over ``DiffusionRL`` and any ``Task``.

    espo fit --config configs/demo.yaml
    espo fit --config configs/demo.yaml --model.objective DiffuGRPO --model.objective.init_args.beta 0.01
    espo fit --config configs/demo.yaml --print_config

Objectives, samplers and tasks are named by class (``ESPO``, ``Sudoku``) because their packages import
every built-in class; a user's own subclass is named by its full ``class_path``. Configs may interpolate
values with OmegaConf (``${model.num_generations}``). Every run gets a ``summary.json`` and a completion log.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import warnings
from typing import Any, NoReturn

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import espo.objectives  # noqa: F401 - registers the built-in objectives for short class names
import espo.sampling  # noqa: F401
import espo.tasks  # noqa: F401
from espo.checkpointing import RunCheckpoint
from espo.module import DiffusionRL
from espo.sampling.callback import CompletionLogger
from espo.summary import RunSummary
from espo.tasks.base import Task

# Lightning 2.6 with torch >= 2.13 warns about its own pytree use on every run; it is not actionable here.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)


# Keys whose value names a class: the package of its built-in classes and their base class.
_CLASS_KEYS = {"model.objective": (espo.objectives, espo.objectives.Objective),
               "model.sampler": (espo.sampling, espo.sampling.Sampler), "data": (espo.tasks, Task)}
_KEY = re.compile(r'Parser key "([\w.]+)"')
_UNKNOWN_NAME = re.compile(r"Expected a dot import path string: (\S+)")


class EspoArgumentParser(LightningArgumentParser):
    """Adds the known class names to jsonargparse's error for an unknown objective, sampler or task."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        key, name = _KEY.search(message), _UNKNOWN_NAME.search(message)
        if key and name and key.group(1) in _CLASS_KEYS:
            key, name = key.group(1), name.group(1)
            package, base = _CLASS_KEYS[key]
            known = sorted(n for n in getattr(package, "__all__", ())
                           if isinstance(getattr(package, n), type) and issubclass(getattr(package, n), base)
                           and not inspect.isabstract(getattr(package, n)))
            message = (f"{key}: unknown class {name!r}. Built-in names: {', '.join(known)}; a class of your own "
                       f"is named by its full class_path (my_package.module.MyClass).\n\n{message}")
        super().error(message, ex)


class EspoCLI(LightningCLI):
    """LightningCLI with espo's always-on callbacks (run summary, completion log, checkpoints)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunSummary, "summary")
        parser.add_lightning_class_args(CompletionLogger, "completions")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # As LightningCLI's, except that trainer.enable_checkpointing: false drops the checkpoint callback
        # (Lightning refuses a ModelCheckpoint then) instead of failing.
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        keys = self._parser(self.subcommand).callback_keys
        if config.get("enable_checkpointing") is False:
            keys = [key for key in keys if key != "checkpoint"]
        return self._instantiate_trainer(config, [self._get(self.config_init, key) for key in keys])


def with_objective_defaults(argv: list[str]) -> list[str]:
    """Gives an objective swapped by name on the command line its own defaults.

    jsonargparse keeps every setting of the config's objective that the new class also accepts, so
    ``--model.objective DiffuGRPO`` on an ESPO config would inherit ESPO's ``beta`` instead of d1's 0.04,
    and a comparison would silently not be the paper's. After a bare ``--model.objective NAME`` this
    inserts the class's defaults, as if typed there; settings given after it still override them.
    """
    out, i = [], 0
    while i < len(argv):
        token, name = argv[i], None
        if token.startswith("--model.objective="):
            name = token.partition("=")[2]
            out.append(token)
        elif token == "--model.objective" and i + 1 < len(argv):
            name = argv[i + 1]
            out += [token, name]
            i += 1
        else:
            out.append(token)
        cls = _objective_class(name) if name is not None else None
        for key, parameter in inspect.signature(cls).parameters.items() if cls is not None else ():
            if parameter.default is not inspect.Parameter.empty:
                value = parameter.default
                out += [f"--model.objective.init_args.{key}", value if isinstance(value, str) else json.dumps(value)]
        i += 1
    return out


def _objective_class(name: str) -> type | None:
    if name.lstrip().startswith("{"):
        return None
    if "." not in name:
        found = getattr(espo.objectives, name, None)
        return found if isinstance(found, type) else None
    module, _, attr = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None  # the parser reports the unknown class
    return found if isinstance(found, type) else None


def cli(args: list[str] | dict[str, Any] | None = None, run: bool = True) -> EspoCLI:
    """Builds (and by default runs) the CLI; the programmatic twin of the ``espo`` command.

    Args:
        args: Command-line arguments (default ``sys.argv[1:]``), as for ``LightningCLI``.
        run: Run the subcommand; False only parses and instantiates (then ``args`` has no subcommand).
    """
    if args is None or isinstance(args, (list, tuple)):
        args = with_objective_defaults([str(a) for a in (sys.argv[1:] if args is None else args)])
    return EspoCLI(
        DiffusionRL,
        Task,
        subclass_mode_data=True,
        parser_class=EspoArgumentParser,
        auto_configure_optimizers=False,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(args: list[str] | dict[str, Any] | None = None) -> None:
    """Entry point of the ``espo`` console script (returns nothing, so the exit status is 0 on success)."""
    cli(args)


if __name__ == "__main__":
    main()
