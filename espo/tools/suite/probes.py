"""The suite's probes: each a task, a model, a sampler and a budget, with the reward's known optimum.

``probe_config`` turns a probe into the ``espo fit`` config every objective of the suite runs on (the
objective section, seed, budget and logger are set per run by ``espo.tools.suite.run``). Sizes are chosen so
one run takes about a minute on 2 CPU threads with the demo's tiny model (0.8M parameters): 8 prompts x 6
completions of a 20-token canvas per rollout step, the demo's full fine-tuning at lr 1e-4 and μ 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEMO_MODEL = "checkpoints/tiny-sudoku-sft"
_PACKAGE = "espo.tools.suite.tasks"


@dataclass(frozen=True)
class Probe:
    """One probe of the suite.

    Attributes:
        name: Short name used on the command line and in the results.
        ability: What the probe isolates, in a line.
        task: The task's ``class_path``.
        task_args: Its ``init_args`` (besides batch size and seed).
        model: The warm start's directory.
        sampler: ``LLaDASampler`` settings of the rollouts.
        prompts: Prompts per rollout step.
        generations: Completions per prompt.
        rollout_steps: Rollout steps of a run.
        num_iterations: μ, optimiser steps per rollout step (a run may override it).
        lr: AdamW learning rate (a run may override it).
        optimum: The largest reward any completion can get.
        headline: The metric the probe is read by (``steps_to_90``, ``final_reward``, ``final_kl``, ...).
    """

    name: str
    ability: str
    task: str
    task_args: dict[str, Any] = field(default_factory=dict)
    model: str = DEMO_MODEL
    sampler: dict[str, Any] = field(default_factory=lambda: {"gen_length": 20, "block_length": 20, "steps": 20,
                                                             "temperature": 1.0})
    prompts: int = 8
    generations: int = 6
    rollout_steps: int = 30
    num_iterations: int = 2
    lr: float = 1.0e-4
    optimum: float = 1.0
    headline: str = "steps_to_90"


PROBES: dict[str, Probe] = {p.name: p for p in (
    Probe("token", "token preference: the share of one digit in the completion",
          f"{_PACKAGE}.TokenPreference", {"digit": "1"}),
    Probe("position", "credit on one position among 16: reward 1 iff completion cell 6 is '1'",
          f"{_PACKAGE}.PositionCredit", {"position": 6, "digit": "1"}),
    # For a puzzle on one line the demo model writes exactly 16 characters (192 of 192 samples at T 1, and at
    # canvases of 12-32 tokens): no group has a length spread and no objective could learn. For the puzzle as four
    # rows it writes 19 or 20 (22 % / 78 % of 96 samples, mixed in 7 of 16 groups); the target is 16.
    Probe("length", "a length / EOS target: reward peaks at 16 characters for a prompt the model answers with 19-20",
          f"{_PACKAGE}.LengthTarget", {"target": 16, "width": 4, "layout": "rows"}),
    Probe("kl", "KL control: rewrite the givens the reference copies; read with the final KL and drift",
          f"{_PACKAGE}.RewriteGivens", {}, headline="final_kl"),
)}
NOT_DONE = {"multiblock": "a multi-block dependency on checkpoints/testbed-sft (configs/testbed.yaml): sampling 16 "
                          "completions of 128 tokens (4 blocks of 32, dual cache) takes 2.7 s of CPU on one thread "
                          "and the update about as much again, so a run that learns needs several minutes, not one"}


def probe_config(probe: Probe, model: str | None = None) -> dict[str, Any]:
    """The ``espo fit`` config of a probe, before a run sets its objective, seed, budget and logger.

    Args:
        probe: The probe.
        model: Another warm start's directory (tests use a tiny random one); None: the probe's.
    """
    completions = probe.prompts * probe.generations
    return {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": probe.rollout_steps * probe.num_iterations,
                    "max_epochs": -1, "log_every_n_steps": 1, "enable_checkpointing": False,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "callbacks": [{"class_path": "espo.tools.suite.recorder.SuiteRecorder"}]},
        "model": {
            "policy": {"path": model or probe.model, "dtype": "float32"},
            "seed": 0, "num_generations": probe.generations, "num_iterations": probe.num_iterations,
            "batching": {"micro_batch_size": completions}, "stability": {"max_grad_norm": 1.0}, "val_examples": 0,
            "objective": {"class_path": "ESPO"},
            "sampler": {"class_path": "LLaDASampler", "init_args": dict(probe.sampler)},
            "optimizer": {"class_path": "torch.optim.AdamW",
                          "init_args": {"lr": probe.lr, "betas": [0.9, 0.99], "weight_decay": 0.0}},
        },
        "data": {"class_path": probe.task, "init_args": {**probe.task_args, "batch_size": probe.prompts, "seed": 0}},
        "completions": {"every_n_steps": max(1, probe.rollout_steps // 4), "num_rows": 0},  # kept in the file
    }
