"""The two sides of ``bench/vs_official.py``: one ESPO rollout step each, cut into the same contiguous phases.

Each ``run_*`` runs in its own process (``vs_official.py --worker``) and returns a JSON-able dict: per phase
CPU and wall seconds, the resident-set high-water mark and (``--allocated``) the torch-allocator peak; the
resident set at the step's start; package versions.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CLEAR_REFS, STATUS = Path("/proc/self/clear_refs"), Path("/proc/self/status")
RANGE = "vs_official phase: "


def _status(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"{field} not in {STATUS}")


class PhaseClock:
    """Contiguous phases: ``mark(name)`` ends the running phase (if any) and starts ``name``; ``end()`` ends the last.

    Each phase gets CPU and wall seconds and its resident-set high-water mark (reset to the current resident set
    when it starts). With ``allocated`` a profiler records torch's allocations from the step's start on, each phase
    is a ``record_function`` range, and ``result`` adds the most bytes torch had allocated at once above what was
    allocated when the step started: gradients, optimiser state and every transient, not the weights (espo's
    loader keeps them in memory the allocator does not see, transformers' in memory it does: counting from the
    step's start measures both sides alike).
    """

    def __init__(self, allocated: bool) -> None:
        self.phases: dict[str, dict[str, float]] = {}
        self.current: tuple[str, float, float, Any] | None = None
        self.rss_start = 0
        self.kinds: dict[str, dict[str, int]] = {}  # anonymous and file-backed resident bytes at start and end
        self.prof = None
        self.spans: dict[str, int] = {}  # allocator peaks of the finer ranges of ``span``
        if allocated:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)

    def mark(self, name: str | None) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        if self.current is None and not self.phases:  # the step starts
            self.rss_start = _status("VmRSS")
            self.kinds = {"start": {k: _status(k) for k in ("RssAnon", "RssFile")}}
            if self.prof is not None:
                self.prof.__enter__()
        else:
            prev, cpu0, wall0, scope = self.current
            if scope is not None:
                scope.__exit__(None, None, None)
            self.phases[prev] = {"cpu": cpu - cpu0, "wall": wall - wall0, "rss_peak": _status("VmHWM")}
        self.current = None
        if name is not None:
            CLEAR_REFS.write_text("5")  # the high-water mark restarts from the current resident set
            scope = None
            if self.prof is not None:
                scope = torch.profiler.record_function(RANGE + name)
                scope.__enter__()
            self.current = (name, time.process_time(), time.perf_counter(), scope)

    def end(self) -> None:
        self.mark(None)
        self.kinds["end"] = {k: _status(k) for k in ("RssAnon", "RssFile")}

    def span(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` run inside a range ``name`` of its own (profiling only: a finer allocator peak, no clock)."""
        if self.prof is None:
            return fn

        @functools.wraps(fn)
        def spanned(*a: Any, **k: Any) -> Any:
            with torch.profiler.record_function(RANGE + name):
                return fn(*a, **k)
        return spanned

    def result(self) -> dict[str, Any]:
        if self.prof is not None:
            self.prof.__exit__(None, None, None)
            for name, value in _allocated_peaks(self.prof).items():
                if name in self.phases:
                    self.phases[name]["allocated_peak"] = value
                else:
                    self.spans[name] = value
        return {"phases": self.phases, "rss_start": self.rss_start, "spans": self.spans, "rss_kinds": self.kinds}


def _allocated_peaks(prof: Any) -> dict[str, int]:
    """Each phase's most bytes allocated at once above the step's start (``bench/profiler_peaks.py``)."""
    from profiler_peaks import range_peaks

    return range_peaks(prof, RANGE)


def _prompts(args: argparse.Namespace, vocab: int) -> torch.Tensor:
    """The shared prompts [prompts, prompt_len]: ids 3 .. vocab-2 (no special id), seed 1."""
    g = torch.Generator().manual_seed(1)
    return torch.randint(3, vocab - 1, (args.prompts, args.prompt_len), generator=g)


def _wrap(fn: Callable[..., Any], before: Callable[[], None], after: Callable[[], None]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapped(*a: Any, **k: Any) -> Any:
        before()
        out = fn(*a, **k)
        after()
        return out
    return wrapped


def run_espo(args: argparse.Namespace) -> dict[str, Any]:
    """espo's step: the sampler, then ``espo.train.update.update`` (prepare, μ optimiser steps)."""
    clock = PhaseClock(args.allocated)
    import espo
    from espo.models import load_model
    from espo.objectives import ESPO, Rollout
    from espo.sampling import LLaDASampler
    from espo.train.rollout import RolloutResult
    from espo.train.tokens import completion_mask
    from espo.train.update import Counters, UpdateSettings, update

    policy = load_model(args.checkpoint, dtype=torch.float32)
    reference = load_model(args.checkpoint, dtype=torch.float32).requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6, betas=(0.9, 0.99), weight_decay=0.1)
    prompt = _prompts(args, policy.network.config.rows).repeat_interleave(args.generations, 0)
    sampler = LLaDASampler(gen_length=args.length, block_length=32, steps=int(args.length * args.steps_ratio),
                           temperature=0.0, cache=args.cache, threshold=args.threshold)
    objective = ESPO(beta=args.beta, num_mc=args.num_mc)
    objective.prepare = _wrap(objective.prepare, lambda: clock.mark("old + ref"), lambda: clock.mark("update"))
    objective.loss = clock.span("update: loss forward", objective.loss)
    optimizer.step = clock.span("update: optimiser step", optimizer.step)
    rewards = torch.rand(len(prompt), generator=torch.Generator().manual_seed(2))
    settings = UpdateSettings(num_iterations=args.iterations, micro_batch_size=None, max_grad_norm=0.2, seed=0,
                              max_consecutive_skips=None, log_memory=False)  # this bench resets the peaks itself
    counters = Counters()

    clock.mark("rollout")
    sequences = sampler.sample(policy, prompt, eos_ids=policy.eos_token_ids)
    completion = sequences[:, args.prompt_len:]
    eos = list(policy.eos_token_ids)
    rollout = Rollout(input_ids=sequences, prompt_len=args.prompt_len, rewards=rewards,
                      advantages=objective.advantages(rewards, args.generations), group_size=args.generations,
                      completion_mask=completion_mask(completion, eos, include_eos=True),
                      attention_mask=torch.ones_like(sequences),
                      padding_eos_mask=completion_mask(completion, eos[:1], include_eos=True))
    counters.start_step()
    update(RolloutResult(rollout, {}), policy=policy, reference=reference, objective=objective, optimizer=optimizer,
           scheduler=None, backward=clock.span("update: backward", lambda loss: loss.backward()), counters=counters,
           settings=settings)
    clock.end()
    return {**clock.result(), "versions": {"espo": str(Path(espo.__file__).parent), "torch": torch.__version__}}


def _load(name: str, path: Path) -> Any:
    """Imports the official file at ``path`` as module ``name`` (its package is also called espo)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_official(args: argparse.Namespace) -> dict[str, Any]:
    """The official trainer's step: ``ESPOTrainer.train`` for μ optimiser steps on one generation batch."""
    clock = PhaseClock(args.allocated)
    import datasets
    import transformers
    import trl
    from official_checkpoint import token
    from transformers import AutoModel, AutoTokenizer, TrainerCallback

    root = Path(args.official)
    configs = _load("official_espo_configs", root / "espo" / "configs.py")
    official = _load("official_espo_trainer", root / "espo" / "espo_trainer.py")
    # As the official get_model loads it.
    model = AutoModel.from_pretrained(args.checkpoint, trust_remote_code=True, torch_dtype=torch.float32,
                                      use_cache=False)
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    prompt_ids = _prompts(args, model.config.embedding_size)
    prompts = [" ".join(token(i) for i in row) for row in prompt_ids.tolist()]
    encoded = tokenizer(text=prompts, return_tensors="pt", padding=True, add_special_tokens=False)["input_ids"]
    if not torch.equal(encoded, prompt_ids):  # the official trainer tokenises the text: it must see the same ids
        raise RuntimeError(f"the prompts tokenise to {encoded.tolist()}, not {prompt_ids.tolist()}")
    rows = args.prompts * args.generations
    rewards = torch.Generator().manual_seed(2)

    def random_reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        return torch.rand(len(prompts), generator=rewards).tolist()

    class StepBounds(TrainerCallback):
        def on_step_begin(self, train_args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 0:
                clock.mark("rollout")

        def on_pre_optimizer_step(self, train_args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if clock.prof is not None:  # the optimiser step's own range (profiling only)
                self.scope = torch.profiler.record_function(RANGE + "update: optimiser step")
                self.scope.__enter__()

        def on_optimizer_step(self, train_args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if clock.prof is not None:
                self.scope.__exit__(None, None, None)

        def on_step_end(self, train_args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == args.iterations:
                clock.end()

    config = configs.GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="vs_official_"), per_device_train_batch_size=rows,
        gradient_accumulation_steps=1, num_generations=args.generations, num_iterations=args.iterations,
        max_steps=args.iterations, learning_rate=1e-6, adam_beta1=0.9, adam_beta2=0.99, weight_decay=0.1,
        max_grad_norm=0.2, beta=args.beta, epsilon=0.2, scale_rewards=False, bf16=False, use_cpu=True,
        report_to=[], logging_steps=1000, save_strategy="no", seed=42, max_prompt_length=400,
        max_completion_length=args.length, diffusion_steps=int(args.length * args.steps_ratio),
        generation_batch_size=rows, generation_temperature=0.0, num_mc=args.num_mc, reduce_var=True,
        log_completions=False, disable_tqdm=True, dataloader_num_workers=0)
    trainer = official.ESPOTrainer(model=model, reward_funcs=[random_reward], args=config,
                                   train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in prompts]),
                                   processing_class=tokenizer, callbacks=[StepBounds()])
    # The shims: LLaDA-8B's mask id is hard-coded in the LLaDA branch; this vocabulary has 1,024 ids.
    mask_id = model.config.mask_token_id
    trainer.processing_class.mask_token_id = mask_id
    trainer.generate = functools.partial(trainer.generate, mask_id=mask_id)
    passes = int(args.iterations > 1) + int(args.beta != 0.0)
    calls = [0]

    def before() -> None:
        if calls[0] == 0:
            clock.mark("old + ref")

    def after() -> None:
        calls[0] += 1
        if calls[0] == passes:
            clock.mark("update")

    trainer._get_elbo_by_chunk = _wrap(trainer._get_elbo_by_chunk, before, after)
    trainer.compute_loss = clock.span("update: loss forward", trainer.compute_loss)
    trainer.accelerator.backward = clock.span("update: backward", trainer.accelerator.backward)
    trainer.train()
    versions = {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
                "official": str(root)}
    return {**clock.result(), "versions": versions}
