"""Reward execution cost: inline vs the process pool, and the sandbox's cost per program.

    python bench/rewards.py

Prints seconds per rollout batch (96 completions, as one ESPO rollout round of 16 prompts x 6) for each
variant, measured side by side in one process, and the ratios. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import platform
import time

import torch

from espo.rewards.sandbox import run_tests
from espo.tasks import MATH500, Countdown


def timed(fn, repeats: int = 3) -> float:
    fn()  # warm-up (worker start, imports)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}")
    cd = {"numbers": [3, 5, 7], "target": 22}
    texts = [f"<reasoning>\nstep {i}\n</reasoning>\n<answer>\n3*5+{i % 9}\n</answer>" for i in range(96)]
    inline, pooled = Countdown(reward_workers=0), Countdown(reward_workers=2)
    a = timed(lambda: inline.reward(texts, [cd] * 96))
    b = timed(lambda: pooled.reward(texts, [cd] * 96))
    print(f"Countdown reward, 96 completions: inline {a * 1e3:.1f} ms, pool(2) {b * 1e3:.1f} ms, "
          f"pool/inline {b / a:.1f}x")
    pooled.pool.close()

    ex = {"problem": "p", "answer": "\\frac{1}{2}", "solution": "so $\\boxed{\\frac{1}{2}}$"}
    answers = ["\\boxed{0.5}", "\\boxed{\\frac{2}{4}}", "\\boxed{3}", "x = \\boxed{\\sqrt{2}/2}"]
    texts = [f"Reasoning {i}. The answer is {answers[i % 4]}." for i in range(96)]
    inline, pooled = MATH500(protocol="espo", reward_workers=0), MATH500(protocol="espo", reward_workers=2)
    a = timed(lambda: inline.reward(texts, [ex] * 96), repeats=1)
    b = timed(lambda: pooled.reward(texts, [ex] * 96), repeats=1)
    print(f"MATH math-verify, 96 completions: inline {a:.2f} s, pool(2) {b:.2f} s, pool/inline {b / a:.2f}x")
    pooled.pool.close()

    code = "def add(a, b):\n    return a + b\n"
    tests = [f"assert add({i}, 1) == {i + 1}" for i in range(5)]
    s = timed(lambda: run_tests(code, tests), repeats=5)
    print(f"sandbox: one program with 5 tests {s * 1e3:.0f} ms (process start, isolation, 5 forks)")


if __name__ == "__main__":
    main()
