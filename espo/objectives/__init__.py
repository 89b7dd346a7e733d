"""Objectives: the ``Objective`` base, likelihood estimators, advantages, KL, and every objective.

Every built-in objective is imported here so configs and the CLI can name it by class name alone
(``--model.objective ESPO``, ``DiffuGRPO``, ``WD1``, ``CoupledGRPO``, ``SPG``, ``MaskedSFT``); third-party
objectives use their full ``class_path``.

Likelihood estimators: ``mc_elbo`` (ESPO's coupled Monte-Carlo ELBO), ``mean_field`` (d1's one-step
estimator with prompt masking), ``coupled_pair`` (coupled-GRPO's complementary pair), ``spg_bounds`` (SPG's
block-wise lower/upper surrogates). Advantages: ``advantages``; KL estimators: ``kl``.
"""

from espo.objectives.advantages import group_advantages
from espo.objectives.base import Objective, Rollout
from espo.objectives.coupled_grpo import CoupledGRPO
from espo.objectives.coupled_pair import coupled_logps, sample_coupled_masks
from espo.objectives.diffu_grpo import DiffuGRPO
from espo.objectives.espo import ESPO, espo_loss
from espo.objectives.kl import kl_estimate
from espo.objectives.mc_elbo import elbo, elbo_from_masks, sample_masks
from espo.objectives.mean_field import mean_field_logps, sample_prompt_masks, token_logps
from espo.objectives.sft import MaskedSFT
from espo.objectives.spg import SPG
from espo.objectives.spg_bounds import sample_block_masks, spg_bounds
from espo.objectives.token_ppo import TokenPPO, clipped_token_loss
from espo.objectives.wd1 import WD1, wd1_weights

__all__ = [
    "ESPO", "SPG", "WD1", "CoupledGRPO", "DiffuGRPO", "MaskedSFT", "Objective", "Rollout", "TokenPPO",
    "clipped_token_loss", "coupled_logps", "elbo", "elbo_from_masks", "espo_loss", "group_advantages",
    "kl_estimate", "mean_field_logps", "sample_block_masks", "sample_coupled_masks", "sample_masks",
    "sample_prompt_masks", "spg_bounds", "token_logps", "wd1_weights",
]
