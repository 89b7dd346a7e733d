"""The probe tasks of the objective-behaviour suite: 4x4 Sudoku prompts with rewards that isolate one ability.

Each probe keeps :class:`~espo.tasks.sudoku.Sudoku`'s prompts (the raw 16-digit puzzle and a newline, the
demo model's format) and data, and replaces the reward with one whose optimum is known (1.0 for every probe)
and reachable by the policy whatever the puzzle. The completion a reward sees is the decoded text cut at
its first EOS (``espo.rollout.generate``), so a length is a count of characters, one per token of the demo's
character tokenizer. The evaluation score equals the reward.
"""

from __future__ import annotations

from typing import Any, Literal

from espo.tasks.base import Prompt
from espo.tasks.sudoku import Sudoku

DIGITS = "1234"


def digit_share(text: str, digit: str) -> float:
    """The share of ``digit`` among the characters of ``text`` (0 for an empty completion)."""
    return text.count(digit) / len(text) if text else 0.0


def position_hit(text: str, position: int, digit: str) -> float:
    """1.0 when character ``position`` (0-based) of ``text`` is ``digit``, else 0.0 (also when too short)."""
    return float(len(text) > position and text[position] == digit)


def length_reward(text: str, target: int, width: int) -> float:
    """``max(0, 1 - |len(text) - target| / width)``: 1.0 at the target length, 0 at ``width`` or more away."""
    return max(0.0, 1.0 - abs(len(text) - target) / width)


def rewritten_givens(text: str, puzzle: str) -> float:
    """The share of the puzzle's given cells where ``text`` holds a *different* digit 1-4.

    A missing or non-digit character counts as not rewritten, so an empty completion scores 0, not 1.
    """
    givens = [i for i, ch in enumerate(puzzle) if ch != "0"]
    if not givens:
        return 0.0
    changed = sum(i < len(text) and text[i] in DIGITS and text[i] != puzzle[i] for i in givens)
    return changed / len(givens)


class ProbeTask(Sudoku):
    """A Sudoku-prompted probe: subclasses define ``probe_reward``; reward and score are both that value.

    Args:
        num_train: Generated training puzzles (each seed draws its own).
        min_blanks: Fewest blank cells of a puzzle.
        max_blanks: Most blank cells of a puzzle.
        num_test: Generated held-out puzzles (``espo test``/validation only; the suite does not validate).
        batch_size: Prompts per rollout step.
        eval_batch_size: Prompts per evaluation batch.
        seed: Seed of the generated training puzzles and their order.
    """

    reward_name: str = "probe"

    def __init__(self, num_train: int = 1024, min_blanks: int = 6, max_blanks: int = 10, num_test: int = 64,
                 batch_size: int = 8, eval_batch_size: int = 64, seed: int = 0) -> None:
        super().__init__(prompt_format="raw", num_train=num_train, min_blanks=min_blanks, max_blanks=max_blanks,
                         num_test=num_test, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)

    def probe_reward(self, text: str, example: dict[str, Any]) -> float:
        """The reward of one completion, in [0, 1]."""
        raise NotImplementedError

    def eval_prompt(self, example: dict[str, Any]) -> Prompt:
        return self.prompt(example)  # the probe's own prompt, not the Sudoku protocol's

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return {self.reward_name: float(self.probe_reward(completion, example))}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return float(self.probe_reward(completion, example))


class TokenPreference(ProbeTask):
    """(a) Token preference: the reward is the share of ``digit`` in the completion (the issue-26 probe).

    Isolates the plainest policy-gradient signal: every position can earn reward the same way. The demo model
    starts near 0.25 (digits are about uniform); a completion of only ``digit`` scores 1.0, at any length.

    Args:
        digit: The preferred character.
        **kwargs: :class:`ProbeTask`'s data settings.
    """

    reward_name = "digit_share"

    def __init__(self, digit: Literal["1", "2", "3", "4"] = "1", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.digit = digit

    def probe_reward(self, text: str, example: dict[str, Any]) -> float:
        return digit_share(text, self.digit)


class PositionCredit(ProbeTask):
    """(b) Credit on one position among many: reward 1 iff character ``position`` of the completion is ``digit``.

    One token of the 16-17 decides the sequence's reward, so a sequence-level objective must assign the credit
    through its likelihood estimate. The cell is blanked in the prompt (a given cell would be copied), so the
    demo model's answer there follows the Sudoku constraints: ``digit`` about a quarter of the time, more or
    less by puzzle, and rewriting it against the constraints is what the optimum asks.

    Args:
        position: The 0-based completion position (a grid cell for positions below 16).
        digit: The character wanted there.
        **kwargs: :class:`ProbeTask`'s data settings.
    """

    reward_name = "position_hit"

    def __init__(self, position: int = 6, digit: Literal["1", "2", "3", "4"] = "1", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 <= position < 16:
            raise ValueError(f"position must be a grid cell 0-15, got {position}.")
        self.position = position
        self.digit = digit

    def prompt(self, example: dict[str, Any]) -> Prompt:
        puzzle = example["puzzle"]
        return puzzle[:self.position] + "0" + puzzle[self.position + 1:] + "\n"

    def probe_reward(self, text: str, example: dict[str, Any]) -> float:
        return position_hit(text, self.position, self.digit)


class LengthTarget(ProbeTask):
    """(c) Length / EOS target: reward ``max(0, 1 - |length - target| / width)`` of the completion cut at its EOS.

    Isolates learning *where to stop*: the reward lives in the EOS token's position, not in any digit. For a
    puzzle on one line the demo model always writes 16 characters, so the suite shows it as four rows of four
    (``layout="rows"``), a prompt it was never trained on, where it writes 19 or 20 characters (reward 0.25 or
    0 at the suite's target 16, width 4). The optimum stops after ``target`` characters; the reward grows by
    ``1 / width`` per character closer, so the policy can walk there from where it explores.

    Args:
        target: The rewarded length in characters (tokens).
        width: Lengths this far from the target or farther score 0.
        layout: ``"line"``: the puzzle and a newline (Sudoku's raw prompt); ``"rows"``: four lines of four.
        **kwargs: :class:`ProbeTask`'s data settings.
    """

    reward_name = "length"

    def __init__(self, target: int = 16, width: int = 4, layout: Literal["line", "rows"] = "rows",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if target < 0 or width < 1:
            raise ValueError(f"target must be >= 0 and width >= 1, got {target}, {width}.")
        if layout not in ("line", "rows"):
            raise ValueError(f"layout must be 'line' or 'rows', got {layout!r}.")
        self.target = target
        self.width = width
        self.layout = layout

    def prompt(self, example: dict[str, Any]) -> Prompt:
        puzzle = example["puzzle"]
        if self.layout == "line":
            return puzzle + "\n"
        return "".join(puzzle[r:r + 4] + "\n" for r in range(0, 16, 4))

    def probe_reward(self, text: str, example: dict[str, Any]) -> float:
        return length_reward(text, self.target, self.width)


class RewriteGivens(ProbeTask):
    """(d) KL control: the reward is the share of the puzzle's given cells the completion changes.

    The reward is the reverse of what the reference was fine-tuned for (copying the givens, which the demo
    model does about 80 % of the time at temperature 1), so reward can only be bought with distance from the
    reference: the probe reads the objective's final KL and the suite's reference drift beside the reward.
    The demo model starts near 0.2; the optimum (1.0) writes another digit in every given cell.

    Args:
        **kwargs: :class:`ProbeTask`'s data settings.
    """

    reward_name = "rewritten_givens"

    def probe_reward(self, text: str, example: dict[str, Any]) -> float:
        return rewritten_givens(text, example["puzzle"])
