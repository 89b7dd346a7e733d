"""The rollout stage: prompts in, a finished ``Rollout`` out (with its metrics and decoded samples).

``roll_out`` encodes the step's prompts (each repeated ``num_generations`` times) and then either samples
completions (``generate``: no grad, in chunks of ``rollout_batch_size``, under one FSDP2 all-gather, decoded
cut at the first EOS), scores them with the task's reward components and turns the rewards into the
objective's advantages, or, for an SFT objective, takes the task's reference completions as targets (and,
every ``sft_sample_every`` steps, still samples and scores to log the reward). Groups whose rewards are all
equal are dropped when asked. The completion mask is computed once, here. ``espo.loops.evaluation`` generates
through the same ``generate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from espo.models import DiffusionLM
from espo.objectives import Objective, Rollout
from espo.sampling import Sampler
from espo.scale import gathered
from espo.tasks.base import Task
from espo.train.memory import PhasePeak
from espo.train.tokens import completion_mask, encode_prompts, encode_targets


@dataclass(frozen=True)
class RolloutSettings:
    """The ``DiffusionRL`` settings the rollout stage reads (see ``DiffusionRL`` for each)."""

    num_generations: int
    rollout_batch_size: int | None
    max_prompt_length: int | None
    sft_sample_every: int
    filter_zero_std_groups: bool
    gather: bool
    log_memory: bool = True  # log memory/rollout, the phase's peak (espo.train.memory); DiffusionRL keeps it on


@dataclass
class RolloutResult:
    """What one rollout step hands on: the batch to train on, what to log, and the decoded samples.

    Attributes:
        rollout: The finished batch (possibly empty after group filtering).
        metrics: Rollout metrics (reward, its spread and components, lengths, throughput, advantages).
        samples: One record per completion (prompt, completion, reward, components); empty when not sampled.
        reward: The mean reward of the sampled completions, None when nothing was sampled.
    """

    rollout: Rollout
    metrics: dict[str, float]
    samples: list[dict[str, Any]] = field(default_factory=list)
    reward: float | None = None


@torch.no_grad()
def generate(policy: DiffusionLM, sampler: Sampler, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
             generator: torch.Generator, *, chunk: int | None = None, gather: bool = True
             ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Samples completions of prompt rows [N, P] and decodes them.

    Args:
        policy: The model that completes the prompts.
        sampler: The sampling algorithm; its ``gen_length`` is the canvas L.
        prompt_ids: Left-padded prompt rows [N, P] on the policy's device.
        prompt_mask: Their attention mask [N, P].
        generator: The only source of randomness.
        chunk: Rows per sampler call (None: all rows at once).
        gather: Under FSDP2, unshard the policy once for all chunks (one all-gather per rollout).

    Returns:
        The completion ids [N, L], their completion mask [N, L] (True through the first EOS) and the texts,
        each cut before its first EOS.
    """
    size = chunk or prompt_ids.shape[0]
    with gathered(policy if gather else None):
        sequences = torch.cat([
            sampler.sample(policy, prompt_ids[i:i + size], attention_mask=prompt_mask[i:i + size], generator=generator)
            for i in range(0, prompt_ids.shape[0], size)
        ])
    completion = sequences[:, prompt_ids.shape[1]:]
    mask = completion_mask(completion, policy.eos_token_ids, include_eos=True)
    # Within the mask the only EOS is the first one: dropping it leaves the text before it.
    keep = mask & ~torch.isin(completion, torch.tensor(policy.eos_token_ids, device=completion.device))
    texts = [policy.tokenizer.decode(row[m].tolist(), skip_special_tokens=True)
             for row, m in zip(completion.cpu(), keep.cpu(), strict=True)]
    return completion, mask, texts


def roll_out(policy: DiffusionLM, sampler: Sampler, task: Task, objective: Objective, batch: list[dict[str, Any]],
             generator: torch.Generator, *, step: int, settings: RolloutSettings) -> RolloutResult:
    """One rollout step's batch, ready for the update.

    Args:
        policy: The policy that completes the prompts.
        sampler: The rollout sampler.
        task: The task that renders prompts, scores completions and supplies SFT targets.
        objective: The objective whose advantages (and need for rollouts) apply.
        batch: The step's prompt examples (B).
        generator: The step's rollout stream, on the policy's device.
        step: The rollout step (recorded with the samples).
        settings: The rollout settings.
    """
    g, device = settings.num_generations, generator.device  # the generator lives on the policy's device
    peak = PhasePeak(device, settings.log_memory).start()
    rendered = [task.prompt(ex) for ex in batch]
    examples = [ex for ex in batch for _ in range(g)]
    ids, mask, truncated = encode_prompts(policy.tokenizer, rendered, settings.max_prompt_length)
    ids, mask = ids.to(device).repeat_interleave(g, 0), mask.to(device).repeat_interleave(g, 0)
    metrics = {"prompts_truncated": float(truncated)} if truncated else {}
    records, reward = [], None
    if objective.requires_rollouts or (settings.sft_sample_every and step % settings.sft_sample_every == 0):
        start = time.perf_counter()
        completion, cmask, texts = generate(policy, sampler, ids, mask, generator, chunk=settings.rollout_batch_size,
                                            gather=settings.gather)
        seconds = time.perf_counter() - start
        components = task.rewards(texts, examples)  # under the reward deadline, values checked
        rewards = torch.tensor([sum(v) for v in zip(*components.values(), strict=True)], dtype=torch.float32)
        metrics.update(reward_metrics(rewards, components, cmask, g, seconds))
        metrics.update(task.reward_stats())
        reward = float(rewards.mean())
        records = samples(step, [p for p in rendered for _ in range(g)], texts, rewards, components)
    if objective.requires_rollouts:
        advantages = objective.advantages(rewards, g)
        metrics.update(advantage_mean=float(advantages.mean()), advantage_abs=float(advantages.abs().mean()))
    else:
        completion = encode_targets(policy.tokenizer, [task.target(ex) for ex in examples], sampler.gen_length,
                                    policy.eos_token_ids[0]).to(device)
        cmask = completion_mask(completion, policy.eos_token_ids, include_eos=True)
        rewards = advantages = torch.zeros(completion.shape[0])
    rows = torch.ones(len(examples), dtype=torch.bool)
    if settings.filter_zero_std_groups and objective.requires_rollouts:
        keep = rewards.view(-1, g).max(-1).values - rewards.view(-1, g).min(-1).values >= 1e-6  # [B]
        metrics["filtered_groups"] = 1.0 - float(keep.float().mean())
        rows = keep.repeat_interleave(g)  # [B*G]
    on_device = rows.to(device)
    ids, mask, completion, cmask = ids[on_device], mask[on_device], completion[on_device], cmask[on_device]
    rollout = Rollout(
        input_ids=torch.cat([ids, completion], dim=1), prompt_len=ids.shape[1], rewards=rewards[rows].to(device),
        advantages=advantages[rows].to(device), group_size=g, completion_mask=cmask,
        attention_mask=torch.cat([mask, torch.ones_like(completion)], dim=1),
        # d1/wd1 count tokens through the first padding EOS (the tokenizer's eos_token), not any EOS id.
        padding_eos_mask=completion_mask(completion, policy.eos_token_ids[:1], include_eos=True))
    metrics.update(peak.metrics("rollout"))
    return RolloutResult(rollout, metrics, records, reward)


def reward_metrics(rewards: torch.Tensor, components: dict[str, list[float]], cmask: torch.Tensor, group_size: int,
                   seconds: float) -> dict[str, float]:
    """Reward mean, spread and components, completion length and rollout throughput."""
    lengths = cmask.sum(-1).float()
    out = {"reward": float(rewards.mean()), "reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
           "completion_length": float(lengths.mean()), "time/rollout": seconds,
           "tokens_per_second": cmask.numel() / max(seconds, 1e-9)}
    if group_size > 1:
        grouped = rewards.view(-1, group_size)
        out["zero_std_groups"] = float((grouped.max(-1).values - grouped.min(-1).values < 1e-6).float().mean())
    out.update({f"reward/{name}": sum(values) / len(values) for name, values in components.items()})
    return out


def samples(step: int, prompts: list[Any], texts: list[str], rewards: torch.Tensor,
            components: dict[str, list[float]]) -> list[dict[str, Any]]:
    """One record per completion (prompt, completion, reward and components) for the completion log."""
    return [
        {"step": step, "prompt": p if isinstance(p, str) else p[-1]["content"], "completion": t,
         "reward": float(r), **{name: values[i] for name, values in components.items()}}
        for i, (p, t, r) in enumerate(zip(prompts, texts, rewards.tolist(), strict=True))
    ]
