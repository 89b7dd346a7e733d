"""Hand-made rollouts and closed-form models the objective tests compute their expected values from."""

from __future__ import annotations

import torch

from espo.objectives import Rollout, group_advantages
from espo.train.tokens import completion_mask


def rollout(n: int = 6, prompt: int = 3, length: int = 4, seed: int = 0) -> Rollout:
    """Random ids, rewards (1, 0, 0 | 0.5, 0.5, 1) in groups of 3 with mean-baseline advantages; row 0 ends early."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (n, prompt + length), generator=g)
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.5, 0.5, 1.0])[:n]
    cmask = torch.ones(n, length, dtype=torch.bool)
    cmask[0, 2:] = False  # row 0 stops early (its EOS is at position 1)
    advantages = group_advantages(rewards, 3, baseline="mean")
    return Rollout(input_ids=ids, prompt_len=prompt, rewards=rewards, advantages=advantages, group_size=3,
                   completion_mask=cmask)


def fixed_logits_model(b: int, t: int, vocab: int = 64, seed: int = 3):
    """A plain callable whose logits ignore the input: log-probs are known in closed form."""
    table = torch.randn(b, t, vocab, generator=torch.Generator().manual_seed(seed))
    model = lambda x, attention_mask=None: table[: x.shape[0]].clone().requires_grad_(False)  # noqa: E731
    model.mask_token_id = 1
    return model, torch.log_softmax(table, -1)


PAD_EOS, EOT = 3, 4  # the model's EOS ids: the first pads (LLaDA's <|endoftext|>), the second ends a turn
# Row 0: 2 content tokens, <|eot_id|>, then padding; row 1: no <|eot_id|>; row 2: never ends.
COMPLETIONS = torch.tensor([[7, 8, EOT, PAD_EOS, PAD_EOS, PAD_EOS],
                            [7, PAD_EOS, PAD_EOS, PAD_EOS, PAD_EOS, PAD_EOS],
                            [7, 8, 9, 10, 11, 12],
                            [7, 8, 9, EOT, 5, PAD_EOS]])


def padding_eos_rollout() -> Rollout:
    """Four rows of ``COMPLETIONS`` in groups of 2, with both masks: through the first EOS of any kind and through
    the first padding EOS."""
    prompts = torch.tensor([[20, 21, 22]]).repeat(4, 1)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0])
    return Rollout(
        input_ids=torch.cat([prompts, COMPLETIONS], 1), prompt_len=3, rewards=rewards,
        advantages=group_advantages(rewards, 2), group_size=2,
        completion_mask=completion_mask(COMPLETIONS, (PAD_EOS, EOT), include_eos=True),
        padding_eos_mask=completion_mask(COMPLETIONS, (PAD_EOS,), include_eos=True))


VOCAB = 30


class Uniform(torch.nn.Module):
    """log p = -log V for every token at every position."""

    mask_token_id = 29

    def forward(self, x, attention_mask=None):
        return torch.zeros(*x.shape, VOCAB)


def two_prompt_rollout(model, prompt: int = 8, length: int = 32, group: int = 6) -> Rollout:
    """2 prompts x ``group`` completions of ``model``'s vocabulary: the second prompt left-padded by 3, each
    completion stopping at an EOS at a random position, then padding (the same every call)."""
    g = torch.Generator().manual_seed(0)
    vocab, eos = model.network.config.vocab_size, model.eos_token_ids[0]
    allowed = torch.tensor([i for i in range(vocab) if i not in (model.mask_token_id, eos)])
    draw = lambda *shape: allowed[torch.randint(0, len(allowed), shape, generator=g)]  # noqa: E731
    prompts = draw(2, prompt).repeat_interleave(group, 0)  # [2G, P]
    attention = torch.ones(2 * group, prompt + length, dtype=torch.long)
    prompts[group:, :3], attention[group:, :3] = eos, 0
    completion = draw(2 * group, length)
    for r, stop in enumerate(torch.randint(4, length, (2 * group,), generator=g).tolist()):
        completion[r, stop:] = eos
    rewards = torch.rand(2 * group, generator=g)
    mask = completion_mask(completion, [eos], include_eos=True)
    return Rollout(input_ids=torch.cat([prompts, completion], 1), prompt_len=prompt, rewards=rewards,
                   advantages=group_advantages(rewards, group, baseline="mean"), group_size=group,
                   completion_mask=mask, attention_mask=attention, padding_eos_mask=mask)
