"""The fast likelihood paths change no number: every objective's prepared passes, losses and gradients equal the
plain computation (full logits, then indexed).

The plain computation is how the likelihoods were computed before the head ran on the needed positions only
(d1's one-step and coupled-GRPO's estimators computed full [K, V] logits at every completion position and a
cross-entropy on them): a callable that returns full logits takes that path through ``token_logprobs``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from espo.models import tiny_model
from espo.objectives import ESPO, WD1, CoupledGRPO, DiffuGRPO, Objective, Rollout
from tests.conftest import SMALL
from tests.objectives.rollouts import two_prompt_rollout


class FullLogits(nn.Module):
    """The plain path: a model without ``hidden_states``/``lm_head``, so likelihoods index full logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.mask_token_id = model.mask_token_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids, attention_mask)


OBJECTIVES = {
    "espo": lambda: ESPO(beta=0.01, num_mc=2),
    "d1": lambda: DiffuGRPO(beta=0.04),
    "wd1_anchor": lambda: WD1(anchor_beta=0.01),
    "coupled": lambda: CoupledGRPO(beta=0.01),
}


def passes(objective: Objective, policy: nn.Module, reference: nn.Module, rollout: Rollout
           ) -> tuple[dict[str, torch.Tensor], list[tuple[torch.Tensor, list[torch.Tensor]]]]:
    """The prepared extras, then (loss, gradients) at inner iterations 0 and 1, on fresh copies of the masks."""
    objective.prepare(policy, reference, rollout, num_iterations=2, micro_batch_size=len(rollout),
                      generator=torch.Generator().manual_seed(5))
    params = [p for p in policy.parameters() if p.requires_grad]
    out = []
    for j in (0, 1):
        loss, _ = objective.loss(policy, rollout, j)
        out.append((loss.detach(), list(torch.autograd.grad(loss, params))))
    return dict(rollout.extras), out


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_fast_likelihood_passes_give_the_plain_computations_losses_and_gradients(name: str):
    policy, reference = tiny_model(seed=0, **SMALL), tiny_model(seed=1, **SMALL).requires_grad_(False)
    rollout = two_prompt_rollout(policy)
    fast_extras, fast = passes(OBJECTIVES[name](), policy, reference, two_prompt_rollout(policy))
    plain_extras, plain = passes(OBJECTIVES[name](), FullLogits(policy), FullLogits(reference), rollout)
    # Float32 throughout. The paths differ only in summation order: the head matmul over a different set of
    # rows (per-row dot products of d = 32 terms, blocked differently) and, in the backward, the head's
    # weight gradient summed chunk by chunk (<= 256 positions per chunk, 1,152 positions at most) instead of
    # in one matmul. Reordering a float32 sum of n terms moves it by at most about n * 6e-8 of the sum of
    # magnitudes: ~7e-5 for n = 1,152, so 1e-4 relative; gradients that cancel to near zero get an absolute
    # floor of 1e-4 of the largest gradient entry of the tensor.
    assert fast_extras.keys() == plain_extras.keys()
    for key in fast_extras:
        torch.testing.assert_close(fast_extras[key], plain_extras[key], rtol=1e-4, atol=1e-5, equal_nan=True)
    for (fast_loss, fast_grads), (plain_loss, plain_grads) in zip(fast, plain, strict=True):
        torch.testing.assert_close(fast_loss, plain_loss, rtol=1e-4, atol=1e-7)
        for a, b in zip(fast_grads, plain_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()) + 1e-12)
