"""Normalising over the whole rollout: the objective no longer depends on micro_batch_size, nor on the ranks.

A 2-process gloo run (tests/objectives/rollout_scale_worker.py, in a subprocess) holds half of the rollout per rank; its
rank-averaged gradient equals the one process gradient over all rows, with any micro-batch size.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from espo.models import tiny_model
from espo.objectives import ESPO, SPG, DiffuGRPO, Rollout, group_advantages
from espo.objectives.rollout_scale import rollout_token_scale

REPO = Path(__file__).resolve().parents[2]
SMALL = {"n_layers": 2, "d_model": 32, "n_heads": 2, "n_kv_heads": 2, "mlp_hidden_size": 64}
P, L = 3, 8
OBJECTIVES = {
    # No prompt masking: the estimator is then the same for any split of the rows.
    "diffu_grpo": lambda: DiffuGRPO(beta=0.0, p_mask_prompt=0.0, loss_reduction="rollout"),
    "diffu_grpo_token": lambda: DiffuGRPO(beta=0.0, p_mask_prompt=0.0, loss_reduction="token"),
}


def make_rollout() -> Rollout:
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(5, 60, (8, P + L), generator=g)
    lengths = torch.tensor([1, 8, 3, 5, 2, 8, 6, 4])  # counted tokens per row: very unequal
    mask = torch.arange(L)[None, :] < lengths[:, None]
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.2, 0.9, 0.1, 0.0, 0.7])
    return Rollout(input_ids=ids, prompt_len=P, rewards=rewards, advantages=group_advantages(rewards, 2),
                   group_size=2, completion_mask=mask, padding_eos_mask=mask)


def gradients(objective, rollout: Rollout, micro_batch_size: int) -> torch.Tensor:
    """The update's gradient: micro-batch losses weighted by rows (espo.train.update), summed."""
    model = tiny_model(seed=0, **SMALL)
    objective.prepare(model, None, rollout, num_iterations=1, micro_batch_size=micro_batch_size,
                      generator=torch.Generator().manual_seed(0))
    for mb in rollout.split(micro_batch_size):
        loss, _ = objective.loss(model, mb, 0)
        (loss * len(mb) / len(rollout)).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def espo_masks(rollout: Rollout) -> torch.Tensor:
    objective = ESPO(beta=0.0, num_mc=2, stratify="rollout")
    objective.prepare(tiny_model(seed=0, **SMALL), None, rollout, num_iterations=2, micro_batch_size=2,
                      generator=torch.Generator().manual_seed(3))
    return rollout.extras["elbo_masks"]  # [N, μ, M, L]


def test_rollout_scale_by_hand():
    counted = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert rollout_token_scale(counted) == pytest.approx(2 * 1 / 3)  # N · W / T


@pytest.mark.parametrize("make", [
    lambda: DiffuGRPO(beta=0.0, loss_reduction="rollout"),
    lambda: SPG(block_length=4, loss_reduction="rollout"),
], ids=["diffu_grpo", "spg"])
def test_rollout_reduction_does_not_depend_on_the_micro_batch_size(make):
    whole = gradients(make(), make_rollout(), micro_batch_size=8)
    for size in (1, 3, 5):
        # Splitting the rows regroups every gradient sum (per micro-batch, then across them) and changes the
        # matmul shapes: a reordered float32 sum of ≲ 16 partial sums errs by ≲ 16·ε32·Σ|terms|, and for an
        # entry that cancels Σ|terms| is of the gradient's scale (max|g| ≈ 0.4), not of the entry: hence an
        # absolute 1e-6 (≈ 16·ε32·0.4; loosened from 1e-7 for that reason), rtol 1e-5 for the rest (observed
        # 8e-8). The next test shows the micro-batch reductions differ by 4e-2.
        torch.testing.assert_close(gradients(make(), make_rollout(), micro_batch_size=size), whole,
                                   rtol=1e-5, atol=1e-6)


def test_micro_batch_reductions_do_depend_on_it():  # why the option exists
    for make in (lambda: DiffuGRPO(beta=0.0, loss_reduction="token"), lambda: SPG(block_length=4)):
        # They differ by ≈ 4e-2 (observed), 10^4 times the tolerances' float32 allowance.
        assert not torch.allclose(gradients(make(), make_rollout(), 8), gradients(make(), make_rollout(), 3),
                                  rtol=1e-4, atol=1e-6)


def test_espo_rollout_stratification_spreads_counts_over_every_row():
    masks = espo_masks(make_rollout())  # micro-batches of 2 rows, one stratified group of 8
    counts = masks.sum(-1)  # [8, μ, M]
    spread = (counts - counts[:1]) % (L + 1)  # offsets of the rows from row 0, per draw
    expected = torch.tensor([(2 * r * (L + 1) + 8) // 16 for r in range(8)])  # r(L+1)/8 rounded half up
    assert torch.equal(spread, expected[:, None, None].expand_as(spread))


@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path):
    out = tmp_path / "grads.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    worker = REPO / "tests" / "objectives" / "rollout_scale_worker.py"
    done = subprocess.run([sys.executable, str(worker), str(out)], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    sharded = torch.load(out)
    for size in (3, 8):
        single = gradients(OBJECTIVES["diffu_grpo"](), make_rollout(), micro_batch_size=size)
        # As for micro-batches, plus gloo's sum of two rank gradients: a reordered float32 sum, ≲ 16·ε32·max|g|
        # absolute for entries that cancel (loosened from 1e-7 to 1e-6 for that reason; observed 3e-8).
        torch.testing.assert_close(sharded["diffu_grpo"], single, rtol=1e-5, atol=1e-6)
    token = gradients(OBJECTIVES["diffu_grpo_token"](), make_rollout(), micro_batch_size=8)
    # Per-rank token means differ from the global one by ≈ 6e-2 (observed), far outside the float32 allowance.
    assert not torch.allclose(sharded["diffu_grpo_token"], token, rtol=1e-4, atol=1e-6)
    assert torch.equal(sharded["espo_masks"], espo_masks(make_rollout()))  # each rank's slice of the same draw
