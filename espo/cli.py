"""The ``espo`` command: LightningCLI over ``DiffusionRL`` and any ``Task``, and the tool verbs.

    espo fit --config configs/demo.yaml
    espo fit --config configs/demo.yaml --model.objective DiffuGRPO --model.objective.init_args.beta 0.01
    espo fit --config configs/demo.yaml --print_config
    espo check --config configs/code.yaml --config configs/scale/fsdp_1node_8gpu.yaml   # espo/tools/check.py

Objectives, samplers and tasks are named by class (``ESPO``, ``Sudoku``) because their packages import
every built-in class; a user's own subclass is named by its full ``class_path``. Configs may interpolate
values with OmegaConf (``${model.num_generations}``). Every run gets a ``summary.json`` and a completion log.

Errors read as a good command line's do: a parse error prints its message and where to find the options
(not 85 lines of usage), a config file that is not valid YAML is named with the line and column, and an
error raised after parsing (bad data, a missing model directory) prints one message instead of a traceback
(``ESPO_TRACEBACK=1`` shows it). With ``--ckpt_path``, the settings given in the config and on the command
line are the ones used: the checkpoint's saved hyper-parameters never override them (differences are listed).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

import yaml
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

import espo.objectives  # noqa: F401 - registers the built-in objectives for short class names
import espo.sampling  # noqa: F401
import espo.tasks  # noqa: F401
from espo.callbacks.checkpointing import RunCheckpoint
from espo.callbacks.completions import CompletionLogger
from espo.callbacks.summary import RunSummary
from espo.module import DiffusionRL
from espo.tasks.base import Task
from espo.train.sizes import Batching
from espo.train.update import Stability

# Lightning 2.6 with torch >= 2.13 warns about its own pytree use on every run; it is not actionable here.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
# espo passes the command line to LightningCLI explicitly (with the objective defaults inserted), so sys.argv
# holds the same arguments: Lightning's warning about both being given would print on every command. (sys.argv
# itself must stay: Lightning's multi-process launcher starts the other ranks from it.)
warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python",
                        category=Warning)


class _NoAdvert(logging.Filter):
    """Drops two lines Lightning prints on every run that say nothing about it: an advert ("Tip: ... try
    installing litlogger") and a note that the configs' own model summary (``espo.callbacks.progress``) is in use."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "litlogger" not in message and "Skipping setting a default `ModelSummary`" not in message


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvert())


# Keys whose value names a class: the package of its built-in classes and their base class.
_CLASS_KEYS = {"model.objective": (espo.objectives, espo.objectives.Objective),
               "model.sampler": (espo.sampling, espo.sampling.Sampler), "data": (espo.tasks, Task)}
_KEY = re.compile(r'Parser key "([\w.]+)"')
_UNKNOWN_NAME = re.compile(r"Expected a dot import path string: (\S+)")
#: Settings that DiffusionRL groups: flat name -> its group (model.micro_batch_size is model.batching.micro_batch_size).
GROUPED_SETTINGS = {field.name: group for group, settings in (("batching", Batching), ("stability", Stability))
                    for field in dataclasses.fields(settings)}


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
        if not self.exit_on_error or callable(self._error_handler):
            super().error(message, ex)
        # The message, then where the options are: the usage block is the help's job (--help).
        parser = getattr(ex, "subcommand_parser", None) or self
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.write(f"(run '{parser.prog.replace(' [options]', '')} --help' for the options)\n")
        self.exit(2)


class EspoCLI(LightningCLI):
    """LightningCLI with espo's always-on callbacks (run summary, completion log, checkpoints)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunSummary, "summary")
        parser.add_lightning_class_args(CompletionLogger, "completions")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # As LightningCLI's, except that trainer.enable_checkpointing: false drops the checkpoint callback
        # (Lightning refuses a ModelCheckpoint then) instead of failing, unless checkpoints were asked for.
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        parser = self._parser(self.subcommand)
        keys = parser.callback_keys
        if config.get("enable_checkpointing") is False:
            asked = changed_settings(self._get(self.config, "checkpoint"), parser.get_defaults().get("checkpoint"))
            if asked and self.subcommand == "fit":
                raise ValueError(f"checkpoint.{asked[0]} asks for checkpoints, but trainer.enable_checkpointing is "
                                 "false (configs/demo.yaml sets it), so none would be written. Add "
                                 "--trainer.enable_checkpointing true.")
            keys = [key for key in keys if key != "checkpoint"]
        return self._instantiate_trainer(config, [self._get(self.config_init, key) for key in keys])

    def _parse_ckpt_path(self) -> None:
        # LightningCLI applies the checkpoint's saved hyper-parameters on top of the parsed config, so
        # ``espo test --ckpt_path X --model.evaluation.lengths [16]`` evaluated at the saved lengths. Here the settings
        # the user gave win; the ones that differ from the checkpoint's are listed.
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not path or not Path(path).is_file():
            return
        import torch

        try:
            saved = torch.load(path, weights_only=True, map_location="cpu", mmap=True).get("hyper_parameters", {})
        except Exception:  # noqa: BLE001 - hyper-parameters that do not load safely are not consulted at all
            return
        model = self.config[subcommand].get("model")
        for key in changed_settings(model, {k: v for k, v in saved.items() if not k.startswith("_")}):
            rank_zero_info(f"espo: --ckpt_path: using model.{key}={_show(_lookup(model, key))} from your settings "
                           f"(the checkpoint was written with {_show(_lookup(saved, key))})")


def with_objective_defaults(argv: list[str]) -> list[str]:
    """Gives an objective swapped by name on the command line its own defaults.

    jsonargparse keeps every setting of the config's objective that the new class also accepts, so
    ``--model.objective DiffuGRPO`` on an ESPO config would inherit ESPO's ``beta`` instead of d1's 0.04,
    and a comparison would silently not be the paper's. After ``--model.objective NAME`` (or its long
    spelling ``--model.objective.class_path NAME``) this inserts the class's defaults, as if typed there;
    settings given after it still override them.
    """
    out, i = [], 0
    while i < len(argv):
        token, name = argv[i], None
        if token.startswith(("--model.objective=", "--model.objective.class_path=")):
            name = token.partition("=")[2]
            out.append(token)
        elif token in ("--model.objective", "--model.objective.class_path") and i + 1 < len(argv):
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


def changed_settings(given: Any, reference: Any, prefix: str = "") -> list[str]:
    """Dotted keys of ``reference`` whose value in ``given`` differs (nested dicts and Namespaces compared by key)."""
    given, reference = _plain(given), _plain(reference)
    if not isinstance(reference, dict) or not isinstance(given, dict):
        return []
    out: list[str] = []
    for key, value in reference.items():
        mine = given.get(key)
        if isinstance(value, dict) and isinstance(mine, dict):
            out += changed_settings(mine, value, f"{prefix}{key}.")
        elif key in given and mine != value:
            out.append(f"{prefix}{key}")
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # settings groups saved as dataclasses
        value = dataclasses.asdict(value)
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict) and set(value) <= {"class_path", "init_args"} and "init_args" in value:
        value = value["init_args"]  # a class given by path compares by its arguments
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return list(value)
    return value


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = _plain(tree).get(part) if isinstance(_plain(tree), dict) else None
    return tree


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (int, float, str, list, dict, type(None), bool)) else repr(value)


def with_grouped_settings(argv: list[str]) -> list[str]:
    """Reads the flat spelling of grouped settings (``model.micro_batch_size``) as the grouped one, with a note.

    Configs written before ``DiffusionRL`` grouped its batch and stability settings, saved run configs included,
    spell them flat. ``--model.micro_batch_size 4`` becomes ``--model.batching.micro_batch_size 4``; a
    ``--config`` file with flat keys is passed on as its regrouped YAML text. Each moved key prints one line
    naming its new place.
    """
    out = []
    for i, token in enumerate(argv):
        flag, eq, value = token.partition("=")
        key = flag[len("--model."):] if flag.startswith("--model.") else ""
        if key in GROUPED_SETTINGS:
            token = f"--model.{GROUPED_SETTINGS[key]}.{key}{eq}{value}"
            _note_moved(key, "the command line")
        elif flag == "--config" and eq:
            token = f"--config={_regrouped(value)}"
        elif i and argv[i - 1] in ("-c", "--config"):
            token = _regrouped(token)
        out.append(token)
    return out


def _regrouped(path: str) -> str:
    """``path``, or the regrouped YAML text of that file when its ``model`` spells a grouped setting flat."""
    file = Path(path).expanduser()
    if not file.is_file():
        return path  # inline YAML is read as given; a missing file is reported by check_config_files
    config = yaml.safe_load(file.read_text(encoding="utf-8"))
    model = config.get("model") if isinstance(config, dict) else None
    flat = [key for key in model if key in GROUPED_SETTINGS] if isinstance(model, dict) else []
    if not flat:
        return path
    model = dict(model)
    for key in flat:
        group = dict(model.get(GROUPED_SETTINGS[key]) or {})
        if key in group:
            raise ValueError(f"{path} sets both model.{key} and model.{GROUPED_SETTINGS[key]}.{key}; keep the second.")
        group[key] = model.pop(key)
        model[GROUPED_SETTINGS[key]] = group
        _note_moved(key, path)
    return yaml.safe_dump({**config, "model": model}, sort_keys=False)


def _note_moved(key: str, source: str) -> None:
    rank_zero_info(f"espo: model.{key} ({source}) is now model.{GROUPED_SETTINGS[key]}.{key}; read as such "
                   "(the flat spelling is deprecated)")


def check_config_files(args: list[str]) -> None:
    """Exits with a message naming the file, line and column when a ``--config`` file is missing or not YAML."""
    paths = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-c", "--config")]
    paths += [a.partition("=")[2] for a in args if a.startswith("--config=")]
    for path in paths:
        if path.lstrip().startswith(("{", "[")) or "\n" in path:
            continue  # an inline YAML/JSON string: jsonargparse reports it
        file = Path(path).expanduser()
        if not file.is_file():
            sys.stderr.write(f"error: --config {path}: no such file\n")
            raise SystemExit(2)
        try:
            yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err)
            sys.stderr.write(f"error: --config {path}: not valid YAML{where}: {problem}\n")
            raise SystemExit(2) from None


def cli(args: list[str] | dict[str, Any] | None = None, run: bool = True,
        cli_class: type[EspoCLI] = EspoCLI) -> EspoCLI:
    """Builds (and by default runs) the CLI; the programmatic twin of the ``espo`` command.

    Args:
        args: Command-line arguments (default ``sys.argv[1:]``), as for ``LightningCLI``.
        run: Run the subcommand; False only parses and instantiates (then ``args`` has no subcommand).
        cli_class: ``EspoCLI`` or a subclass (``espo check`` builds no trainer).
    """
    if args is None or isinstance(args, (list, tuple)):
        args = with_objective_defaults([str(a) for a in (sys.argv[1:] if args is None else args)])
        check_config_files(args)
        args = with_grouped_settings(args)
    return cli_class(
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


# Errors a user's input causes (data, paths, settings): one line each, not a traceback into Lightning.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


#: The tool verbs beside Lightning's fit/validate/test/predict: verb -> (module with ``main(argv)``, summary).
TOOLS: dict[str, tuple[str, str]] = {
    "check": ("espo.tools.check", "validate configs for the world size they declare, without loading weights"),
    "compare": ("espo.tools.compare", "run objectives on one config or their paper recipes; table and plot"),
    "suite": ("espo.tools.suite.cli", "run objectives on small probes with a known optimum; table and plot"),
    "export": ("espo.scale.export", "write a checkpoint's policy as a model directory load_model reads"),
    "tiny-model": ("espo.models.__main__", "write a tiny random LLaDA checkpoint (demo or testbed size)"),
    "anatomy": ("espo.tasks.sudoku.trace_anatomy", "where SudokuTrace completions go wrong, from espo test files"),
}


def _tool_help() -> str:
    width = max(map(len, TOOLS))
    rows = "\n".join(f"  {verb:<{width}}  {summary}" for verb, (_, summary) in TOOLS.items())
    return f"espo's tool verbs ('espo VERB --help' for each):\n{rows}\n\n"


def main(args: list[str] | dict[str, Any] | None = None) -> None:
    """Entry point of the ``espo`` console script (returns nothing, so the exit status is 0 on success)."""
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, (list, tuple)) and argv and argv[0] in TOOLS:
        # Verbs are named by module path, as console scripts are: the tools import the CLI, never the reverse.
        status = importlib.import_module(TOOLS[argv[0]][0]).main([str(a) for a in argv[1:]])
        if isinstance(status, int) and status:
            raise SystemExit(status)  # espo check: 1 when a config has a problem
        return
    if isinstance(argv, (list, tuple)) and list(argv) in ([], ["-h"], ["--help"]):
        sys.stdout.write(_tool_help())
    try:
        cli(args)
    except USER_ERRORS as err:
        if os.environ.get("ESPO_TRACEBACK"):
            raise
        sys.stderr.write(f"error: {err}\n(set ESPO_TRACEBACK=1 to see where it was raised)\n")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
