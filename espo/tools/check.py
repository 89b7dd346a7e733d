"""``espo check``: a config checked for the world size it declares, without loading weights.

    espo check --config configs/sdar_gsm8k.yaml --config configs/scale/fsdp_1node_8gpu.yaml

The files compose as ``espo fit`` composes them (later files and ``--key value`` overrides win). The check
parses and builds the settings objects (module, objective, sampler, task) but no trainer, no data and no
weights, for ``trainer.devices x trainer.num_nodes`` processes, and reuses the rules the run itself applies
(``Task.batch_per_process``, ``DiffusionRL.check_fit``, ``Evaluation.sampler_for``, ``check_sharded``,
``check_tensor_parallel``, ``check_model_dir``). It reads ``config.json`` and ``tokenizer_config.json`` of a
local model directory; a hub id is reported as not checked offline. Every problem is one line naming the
setting and the fix; the exit status is 1 when there is one. docs/robustness.md lists what is checked.
"""

from __future__ import annotations

import json
import math
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.cli import LightningCLI
from rich.console import Console
from rich.table import Table

from espo.loops.evaluation import Evaluation
from espo.models.loading import FAMILIES, check_model_dir, family_of, is_hub_id
from espo.module import DiffusionRL
from espo.objectives import Objective
from espo.sampling import BlockDiffusionSampler, Sampler
from espo.tasks.base import Task
from espo.tasks.data import is_local
from espo.tasks.testsets import resolve
from espo.train.policy import PolicySpec, check_sharded, check_tensor_parallel
from espo.train.schedules import WarmupSchedule, plan_schedule

# Families whose attention is block-causal: their config class carries the attention block.
BLOCK_FAMILIES = frozenset(name for name, fam in FAMILIES.items()
                           if "block_size" in getattr(fam.config_class, "__dataclass_fields__", {}))
_DATA_KEYS = ("train_file", "test_file", "train_source", "test_source")


@dataclass
class Report:
    """What ``check`` found: the effective run (rows), problems (one line each) and notes."""

    rows: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def run(self, check: Callable[[], Any], key: str = "") -> Any:
        """``check()``; a ValueError or FileNotFoundError becomes a problem, prefixed by ``key`` unless the
        message already names a setting."""
        try:
            return check()
        except (ValueError, FileNotFoundError) as err:
            message = " ".join(str(err).split())  # one line, whatever the message's own layout
            key = key or setting_of(err)
            named = message.startswith(("model.", "trainer.", "data."))
            self.errors.append(f"{key}: {message}" if key and not named else message)
            return None


def setting_of(err: BaseException) -> str:
    """The config key of the settings object whose constructor raised ``err`` (innermost first), or ""."""
    keys = ((Sampler, "model.sampler"), (Objective, "model.objective"), (Evaluation, "model.evaluation"),
            (PolicySpec, "model.policy"), (Task, "data"), (DiffusionRL, "model"))
    for frame, _ in reversed(list(traceback.walk_tb(err.__traceback__))):
        owner = frame.f_locals.get("self")
        for cls, key in keys:
            if isinstance(owner, cls):
                return key
    return ""


class ParseOnly:
    """Mixed into ``EspoCLI``: parses and instantiates the settings, builds no trainer, sets no seed."""

    def _set_seed(self) -> None:
        pass  # a check must not change the caller's random state

    def instantiate_trainer(self, **kwargs: Any) -> None:
        return None  # a GPU config is checked on any machine: the trainer settings are read from the config


def world_size(trainer: dict[str, Any], report: Report) -> tuple[int, int]:
    """``(processes, devices per node)`` that ``trainer.devices x trainer.num_nodes`` declare."""
    devices, nodes = trainer.get("devices", "auto"), int(trainer.get("num_nodes") or 1)
    if isinstance(devices, (list, tuple)):
        per_node = len(devices)
    elif isinstance(devices, str) and "," in devices:
        per_node = len([d for d in devices.split(",") if d.strip()])
    elif str(devices).isdigit() and int(devices) > 0:
        per_node = int(devices)
    else:
        per_node = 1
        report.notes.append(f"trainer.devices {devices!r} is decided on the machine: checked as 1 device per node "
                            "(add --trainer.devices N to check N)")
    return per_node * nodes, per_node


def check_strategy(trainer: dict[str, Any], model: Any, world: int, per_node: int, report: Report) -> str:
    """FSDP2 (``ModelParallelStrategy``): mesh sizes and a policy that can be sharded. Returns its name."""
    strategy = trainer.get("strategy", "auto")
    if not hasattr(strategy, "get") or not str(strategy.get("class_path", "")).endswith("ModelParallelStrategy"):
        return str(getattr(strategy, "class_path", strategy)).rpartition(".")[2]
    init = strategy.get("init_args") or {}
    data = init.get("data_parallel_size", "auto")
    tensor = init.get("tensor_parallel_size", "auto")
    # Lightning's defaults: data_parallel_size = num_nodes, tensor_parallel_size = devices per node.
    data = int(trainer.get("num_nodes") or 1) if data == "auto" else int(data)
    tensor = per_node if tensor == "auto" else int(tensor)
    report.run(lambda: check_tensor_parallel(tensor), f"trainer.strategy.init_args.tensor_parallel_size={tensor}")
    if tensor == 1 and data != world:
        report.errors.append(f"trainer.strategy.init_args.data_parallel_size={data} must equal trainer.devices x "
                             f"trainer.num_nodes = {world}; set data_parallel_size: {world}.")
    report.run(lambda: check_sharded(model.policy_spec), "model.policy")
    return f"ModelParallelStrategy (FSDP2, data_parallel_size {data})"


def check_model(model: Any, report: Report) -> dict[str, Any] | None:
    """The model directory (config.json, weights) and the sampler and objective that fit its family."""
    path = str(model.policy_spec.path)
    if is_hub_id(path):
        report.notes.append(f"model.policy.path {path}: a hub id, not checked offline (family, tokenizer)")
        return None
    directory = Path(path).expanduser()
    if not directory.is_dir():
        report.errors.append(f"model.policy.path {path}: no such model directory; point it at a directory with "
                             "config.json, weights and tokenizer files, or at an owner/name hub id.")
        return None
    report.run(lambda: check_model_dir(directory), f"model.policy.path {path}")
    if not (directory / "config.json").is_file():
        return None
    raw = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    family, sampler = family_of(raw), model.sampler
    if family not in FAMILIES:
        report.errors.append(f"model.policy.path {path}: model_type {raw.get('model_type')!r} has no native "
                             f"implementation (native: {', '.join(sorted(FAMILIES))}); use a model of those families.")
        return raw
    block = family in BLOCK_FAMILIES
    name = type(sampler).__name__
    if block and not isinstance(sampler, BlockDiffusionSampler):
        report.errors.append(f"model.sampler: {name} on a block-diffusion model ({family}, {path}); use "
                             "BlockDiffusionSampler with the model's block_length.")
    elif not block and isinstance(sampler, BlockDiffusionSampler):
        report.errors.append(f"model.sampler: BlockDiffusionSampler needs a block-diffusion model (SDAR, LLaDA2), "
                             f"but {path} is {family}; use LLaDASampler or DreamSampler.")
    elif block and raw.get("block_size") not in (None, sampler.block_length):
        report.errors.append(f"model.sampler.init_args.block_length={sampler.block_length} differs from the model's "
                             f"attention block {raw['block_size']} (config.json block_size); set it to "
                             f"{raw['block_size']}.")
    objective = model.objective
    if block and not objective.supports_block_diffusion:  # the objective's own flag, as check_model reads it
        name = type(objective).__name__
        report.errors.append(f"model.objective: {name} on a block-diffusion model ({family}) is not supported as the "
                             f"paper ran it: {objective.block_diffusion_reason} (or {name} on LLaDA or Dream).")
    return raw


class _Probe(dict):
    """An example whose every field is a placeholder: enough to see whether a task's prompt is chat messages."""

    def __missing__(self, key: str) -> str:
        return "0"


def gives_chat(task: Any) -> bool | None:
    """Whether the task's training or evaluation prompt is chat messages (None: its prompt needs real data)."""
    try:
        return isinstance(task.prompt(_Probe()), list) or isinstance(task.eval_prompt(_Probe()), list)
    except Exception:  # noqa: BLE001 - a prompt that needs real fields is checked when the data loads
        return None


def has_chat_template(directory: Path) -> bool:
    """A chat template in ``tokenizer_config.json`` or beside it (``chat_template.jinja``/``.json``)."""
    config = directory / "tokenizer_config.json"
    if config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("chat_template"):
        return True
    return any((directory / name).is_file() for name in ("chat_template.jinja", "chat_template.json"))


def check_tokenizer(task: Any, path: str, local: bool, report: Report) -> None:
    """A task that gives chat messages needs a chat template (read from the local model directory only)."""
    chat = gives_chat(task)
    kind = {True: "chat messages", False: "plain text", None: "not known without data"}[chat]
    report.rows.append(("task", f"{type(task).__name__} (protocol {getattr(task, 'protocol', '?')}, {kind})"))
    if chat and local and not has_chat_template(Path(str(path)).expanduser()):
        fix = " or data.init_args.prompt_format: raw" if hasattr(task, "prompt_format") else ""
        report.errors.append(f"model.policy.path {path}: the tokenizer has no chat template (tokenizer_config.json "
                             f"chat_template), but {type(task).__name__} gives chat messages; use a tokenizer with a "
                             f"template{fix}.")


def check_data(task: Any, report: Report) -> None:
    """Local data files the task names must exist; hub datasets are noted."""
    for key in _DATA_KEYS:
        value = getattr(task, key, None)
        if not value:
            continue
        if key.endswith("_file") or is_local(str(value)):
            try:  # espo:<file> names a test set shipped with the package
                found = Path(resolve(str(value))).expanduser().is_file()
            except FileNotFoundError:
                found = False
            if not found:
                report.errors.append(f"data.init_args.{key} {value}: no such file; fix the path (null where the "
                                     "task generates its data).")
        else:
            report.notes.append(f"data.init_args.{key} {value}: a hub dataset, not checked offline")


def check_schedule(model: Any, trainer: dict[str, Any], report: Report) -> None:
    """The run's length in optimiser and rollout steps, and the warm-up it plans."""
    mu, max_steps, max_epochs = model.num_iterations, trainer.get("max_steps") or -1, trainer.get("max_epochs")
    if max_steps > 0:
        rollouts = math.ceil(max_steps / mu)
        extra = "" if max_steps % mu == 0 else f" (the last rollout step finishes: {rollouts * mu} optimiser steps)"
        report.rows.append(("optimiser steps", f"trainer.max_steps {max_steps} = {rollouts} rollout steps x "
                            f"model.num_iterations {mu}{extra}"))
    elif max_epochs is not None and max_epochs > 0:
        report.rows.append(("optimiser steps", f"{max_epochs} epoch(s) of the training split x model.num_iterations "
                            f"{mu} per rollout step (the split's size is known at setup)"))
    if model.scheduler_factory is None:
        return
    scheduler = model.scheduler_factory(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0))
    if not isinstance(scheduler, WarmupSchedule):
        report.rows.append(("learning-rate schedule", type(scheduler).__name__))
        return
    if scheduler.warmup_steps is not None or scheduler.warmup_ratio == 0:
        warmup = f"{scheduler.warmup()} optimiser steps" + (" (warmup_steps)" if scheduler.warmup_steps else "")
    elif scheduler.plan_source == "epoch":
        warmup = (f"ceil({scheduler.warmup_ratio} x {scheduler.epochs} epoch(s) of the training split), planned at "
                  "setup")
    elif scheduler.plan_source == "trainer" and max_steps <= 0 and max_epochs is not None and max_epochs > 0:
        warmup = f"ceil({scheduler.warmup_ratio} x {max_epochs} epoch(s) of the training split), planned at setup"
    else:
        report.run(lambda: plan_schedule(scheduler, max_steps=max_steps, max_epochs=None, epoch_steps=1),
                   "model.lr_scheduler")
        if scheduler.total is None:
            return
        warmup = f"{scheduler.warmup()} optimiser steps (warmup_ratio {scheduler.warmup_ratio} of {scheduler.total})"
    report.rows.append(("warm-up", f"{warmup}, then {scheduler.decay}"))


def check(args: list[str], build: Callable[..., LightningCLI], base: type[LightningCLI]) -> Report:
    """Checks the config that ``args`` (``--config`` files and overrides) give; ``build`` is ``espo.cli.cli``."""
    report = Report()
    configs = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-c", "--config")]
    report.rows.append(("config", " + ".join(configs) or "(command line only)"))
    parsed = report.run(lambda: build(args, run=False, cli_class=type("EspoCheck", (ParseOnly, base), {})))
    if parsed is None:
        return report
    model, task, trainer = parsed.model, parsed.datamodule, parsed.config.get("trainer")
    trainer = trainer.as_dict() if hasattr(trainer, "as_dict") else dict(trainer or {})
    world, per_node = world_size(trainer, report)
    strategy = check_strategy(trainer, model, world, per_node, report)
    report.rows.append(("processes", f"{world} = trainer.devices {trainer.get('devices')} x trainer.num_nodes "
                        f"{trainer.get('num_nodes') or 1}, {strategy}, precision "
                        f"{trainer.get('precision') or '32-true'}"))
    raw = check_model(model, report)
    family = family_of(raw) if raw is not None else "not checked offline"
    report.rows.append(("model", f"{model.policy_spec.path} ({family})"))
    sampler = model.sampler
    report.rows.append(("objective", type(model.objective).__name__))
    report.rows.append(("sampler", f"{type(sampler).__name__}: {sampler.gen_length} tokens, block "
                        f"{getattr(sampler, 'block_length', None)}, {getattr(sampler, 'steps', '?')} steps"))
    check_tokenizer(task, model.policy_spec.path, raw is not None, report)
    check_data(task, report)
    prompts = report.run(lambda: task.batch_per_process(world), "data.init_args.batch_size")
    if prompts is not None:
        sizes = report.run(lambda: model.check_fit(prompts, world, trainer.get("precision")))
        report.rows.append(("data.init_args.batch_size", f"{task.batch_size} prompts per step over all processes "
                            f"= {prompts} per process x {world}"))
        rows = sizes.rows() if sizes is not None else []
        per_process = ("prompts", "completions", "sampler calls", "micro-batches")
        report.rows += [(f"{n} (per process)" if n.startswith(per_process) else n, v) for n, v in rows]
    evaluation = model.evaluation
    validated = [sampler.gen_length] if model.validation.num_examples else []  # held-out score at the canvas
    for length in sorted({*(evaluation.lengths or [sampler.gen_length]), *validated}):
        if report.run(lambda n=length: evaluation.sampler_for(sampler, n, *evaluation.schedule(n)),
                      f"model.evaluation (length {length})") is None:
            break  # one line for one problem, not one per length
    check_schedule(model, trainer, report)
    return report


def main(args: list[str], build: Callable[..., LightningCLI] | None = None,
         base: type[LightningCLI] | None = None) -> int:
    """``espo check``: prints the effective run, the notes and one line per problem; 1 when there is one.

    ``build``/``base`` default to the ``espo`` command's own ``cli`` and ``EspoCLI`` (tests may pass others).
    """
    if build is None or base is None:
        from espo.cli import EspoCLI, cli  # tools sit above the entry point: it names them, never imports them

        build, base = build or cli, base or EspoCLI
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(__doc__)
        return 0 if args else 2
    report = check(args, build, base)
    table = Table(title="espo check: the effective run", show_header=False)
    for name, value in report.rows:
        table.add_row(name, value)
    Console(width=max(Console().width, 120)).print(table)
    for note in report.notes:
        sys.stdout.write(f"note: {note}\n")
    sys.stdout.flush()  # the table and notes before the problems, as a terminal shows both streams
    for error in report.errors:
        sys.stderr.write(f"error: {error}\n")
    sys.stderr.flush()
    verdict = f"{len(report.errors)} problem(s)" if report.errors else "no problems found"
    sys.stdout.write(f"espo check: {verdict}\n")
    return 1 if report.errors else 0
