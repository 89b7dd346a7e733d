"""``policy.compile_update: true``: the policy's likelihood passes through ``torch.compile``, with recompiles counted.

The update's passes (the old-policy pass of ``prepare`` and each micro-batch's current pass with its
backward) spend what the matmuls leave on elementwise work of the body: norms, rotary embeddings, SiLU gates,
residual sums (``bench/update_roofline.py`` shows it). Compiling the body fuses them. :class:`CompiledPolicy`
hands the objectives a policy whose ``hidden_states`` (and, for block diffusion, ``hidden_states_with_context``)
run compiled with symbolic sizes (``dynamic=True``, as the sampler's ``compile``): rows, views and prompt
widths vary between steps without a graph each. What stays specialised is the code path (gradients on or off,
a padding mask or none), so a run compiles a handful of graphs in its first step and none after;
:class:`RecompileWatch` counts them and warns when a later step compiles again. The reference passes stay
eager (a LoRA reference is the same network with its adapter switched off, a different trace).

Numbers: fused kernels round differently, so losses and gradients equal the eager ones to float tolerance, not bit
for bit. Single device only: under FSDP2 the sharded blocks' hooks would be traced too (``check_sharded`` refuses
it).
"""

from __future__ import annotations

import warnings
from typing import Any

from espo.sampling.compiled import compiled, recompiles


class CompiledPolicy:
    """A policy whose body runs compiled; every other attribute (head, ids, parameters) is the policy's own.

    Args:
        policy: A ``DiffusionLM`` (or a model exposing ``hidden_states``).
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.hidden_states = compiled(policy.hidden_states)
        if getattr(policy, "is_block_diffusion", False):
            self.hidden_states_with_context = compiled(policy.hidden_states_with_context)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.policy(*args, **kwargs)


class RecompileWatch:
    """Counts the graphs compiled during one update and warns when a step after the first compiles any."""

    def __init__(self) -> None:
        self.start = recompiles()

    def finish(self, step: int) -> dict[str, float]:
        """``{"compile/graphs": graphs compiled during this update}``; warns if ``step`` > 0 compiled any."""
        graphs = recompiles() - self.start
        if graphs and step > 0:
            warnings.warn(f"compile_update: rollout step {step} compiled {graphs} new graph(s); every step after "
                          "the first should reuse the first step's graphs (a shape or code path that changes "
                          "between steps?). torch._dynamo.config.recompile_limit bounds them per function.",
                          stacklevel=2)
        return {"compile/graphs": float(graphs)}
