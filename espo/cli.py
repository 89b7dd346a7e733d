"""The ``espo`` command: LightningCLI over ``DiffusionRL`` and any ``Task``.

    espo fit --config configs/demo.yaml
    espo fit --config configs/demo.yaml --model.objective ESPO --model.objective.init_args.beta 0.01
    espo fit --config configs/demo.yaml --print_config

Objectives, samplers and tasks are named by class (``ESPO``, ``Sudoku``) because their packages import
every built-in class; a user's own subclass is named by its full ``class_path``. Configs may interpolate
values with OmegaConf (``${model.num_generations}``). Every run gets a ``summary.json`` and a completion log.
"""

from __future__ import annotations

import warnings
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import espo.objectives  # noqa: F401 - registers the built-in objectives for short class names
import espo.sampling  # noqa: F401
import espo.tasks  # noqa: F401
from espo.module import DiffusionRL
from espo.sampling.callback import CompletionLogger
from espo.summary import RunSummary
from espo.tasks.base import Task

# Lightning 2.6 with torch >= 2.13 warns about its own pytree use on every run; it is not actionable here.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)


class EspoCLI(LightningCLI):
    """LightningCLI with espo's always-on callbacks (run summary, completion log)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunSummary, "summary")
        parser.add_lightning_class_args(CompletionLogger, "completions")


def cli(args: list[str] | dict[str, Any] | None = None, run: bool = True) -> EspoCLI:
    """Builds (and by default runs) the CLI; the programmatic twin of the ``espo`` command.

    Args:
        args: Command-line arguments (default ``sys.argv[1:]``), as for ``LightningCLI``.
        run: Run the subcommand; False only parses and instantiates (then ``args`` has no subcommand).
    """
    return EspoCLI(
        DiffusionRL,
        Task,
        subclass_mode_data=True,
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
