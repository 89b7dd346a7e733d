"""Rollouts of ``DiffusionRL``: prompts in, scored completions out, with what a step logs about them.

``roll_out`` samples ``num_generations`` completions per prompt (no grad, the rollout stream of the step),
decodes them cut at the first EOS, scores them with the task's reward components and returns the completion
tokens, the summed rewards and the rollout metrics. It also appends the mean reward to
``module.reward_history`` (``summary.json``) and keeps the step's samples in ``module.last_samples`` (the
``CompletionLogger``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from espo.rng import make_generator
from espo.tasks.base import Prompt, Task
from espo.tokens import completion_mask, encode_prompts

if TYPE_CHECKING:
    from espo.module import DiffusionRL


def encode(module: DiffusionRL, prompts: list[Prompt]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt ids and attention mask on the module's device; left-truncation is counted and logged."""
    ids, mask, truncated = encode_prompts(module.policy.tokenizer, prompts, module.max_prompt_length)
    if truncated:
        module.log("prompts_truncated", float(truncated), on_step=True)
    return ids.to(module.device), mask.to(module.device)


def roll_out(module: DiffusionRL, task: Task, batch: list[dict[str, Any]], examples: list[dict[str, Any]],
             prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, step: int
             ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Samples and scores one rollout batch.

    Args:
        module: The module whose policy and sampler complete the prompts.
        task: The task that scores the completions.
        batch: The step's prompt examples (B).
        examples: ``batch`` with each example repeated ``num_generations`` times (B*G).
        prompt_ids: Prompt rows [B*G, P] on the module's device, each prompt repeated G times.
        prompt_mask: Their attention mask [B*G, P].
        step: The rollout step, which keys the sampling stream.

    Returns:
        The completion tokens [B*G, L], the rewards [B*G] (float32, on CPU) and the rollout metrics.
    """
    start = time.perf_counter()
    # On the policy's device: drawing [B, block, V] float64 noise on CPU and copying it would dominate on GPU.
    generator = make_generator(module.seed, "rollout", step, device=module.device)
    sequences = module.sample(prompt_ids, prompt_mask, generator)
    seconds = time.perf_counter() - start
    completion = sequences[:, prompt_ids.shape[1]:]
    texts = module.decode(completion)
    components = task.rewards(texts, examples)  # under the reward deadline, values checked
    rewards = torch.tensor([sum(v) for v in zip(*components.values(), strict=True)], dtype=torch.float32)
    metrics = reward_metrics(module, rewards, components, completion, seconds)
    metrics.update(task.reward_stats())
    module.reward_history.append((step, float(rewards.mean())))
    remember(module, task, step, batch, texts, rewards, components)
    return completion, rewards, metrics


def reward_metrics(module: DiffusionRL, rewards: torch.Tensor, components: dict[str, list[float]],
                   completion: torch.Tensor, seconds: float) -> dict[str, float]:
    """Reward mean, spread and components, completion length and rollout throughput."""
    lengths = completion_mask(completion, module.policy.eos_token_ids, include_eos=True).sum(-1).float()
    out = {"reward": float(rewards.mean()), "reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
           "completion_length": float(lengths.mean()), "time/rollout": seconds,
           "tokens_per_second": completion.numel() / max(seconds, 1e-9)}
    if module.num_generations > 1:
        grouped = rewards.view(-1, module.num_generations)
        out["zero_std_groups"] = float((grouped.max(-1).values - grouped.min(-1).values < 1e-6).float().mean())
    out.update({f"reward/{name}": sum(values) / len(values) for name, values in components.items()})
    return out


def remember(module: DiffusionRL, task: Task, step: int, batch: list[dict], texts: list[str],
             rewards: torch.Tensor, components: dict[str, list[float]]) -> None:
    """Keeps the step's samples (prompt, completion, reward and components) in ``module.last_samples``."""
    prompts = [task.prompt(ex) for ex in batch for _ in range(module.num_generations)]
    module.last_samples = [
        {"step": step, "prompt": p if isinstance(p, str) else p[-1]["content"], "completion": t,
         "reward": float(r), **{name: values[i] for name, values in components.items()}}
        for i, (p, t, r) in enumerate(zip(prompts, texts, rewards.tolist(), strict=True))
    ]
