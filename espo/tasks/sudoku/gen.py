"""A deterministic generator of 4x4 Sudoku puzzles with unique solutions.

Grids are 16-character strings read row by row: digits 1-4, ``'0'`` for a blank, 2x2 boxes. There are only
288 valid full grids, so a puzzle is a random grid with cells removed in random order, each removal kept only
if the solution stays unique. Every draw comes from a caller-supplied ``random.Random`` (or one seeded from a
stable hash in :func:`puzzle_at`), never from the global ``random`` state, so puzzle ``i`` of a seed is the
same on every machine and in every DataLoader worker.
"""

from __future__ import annotations

import functools
import random

from espo.rng import derive_seed

SIZE = 4
CELLS = SIZE * SIZE
# A 4x4 Sudoku needs at least 4 givens to have a unique solution, so 12 blanks is the most there can be.
MAX_BLANKS = 12
_DIGITS = (1, 2, 3, 4)

_ROWS = [[r * SIZE + c for c in range(SIZE)] for r in range(SIZE)]
_COLS = [[r * SIZE + c for r in range(SIZE)] for c in range(SIZE)]
_BOXES = [[(br + r) * SIZE + bc + c for r in range(2) for c in range(2)] for br in (0, 2) for bc in (0, 2)]
UNITS = _ROWS + _COLS + _BOXES
# The cells that share a row, column or box with each cell (itself excluded).
PEERS = [sorted({j for unit in UNITS if i in unit for j in unit} - {i}) for i in range(CELLS)]


def _cells(puzzle: str) -> list[int]:
    if not isinstance(puzzle, str) or len(puzzle) != CELLS or any(ch not in "01234" for ch in puzzle):
        raise ValueError(f"A 4x4 Sudoku is a string of 16 digits 0-4, got {puzzle!r}.")
    return [int(ch) for ch in puzzle]


def _search(cells: list[int], limit: int, found: list[str] | None) -> int:
    """Counts completions of ``cells`` (up to ``limit``), filling the most constrained blank first."""
    best, best_candidates = -1, None
    for i in range(CELLS):
        if cells[i]:
            continue
        used = {cells[j] for j in PEERS[i]}
        candidates = [d for d in _DIGITS if d not in used]
        if not candidates:
            return 0
        if best_candidates is None or len(candidates) < len(best_candidates):
            best, best_candidates = i, candidates
            if len(candidates) == 1:
                break
    if best_candidates is None:
        if found is not None:
            found.append("".join(map(str, cells)))
        return 1
    total = 0
    for digit in best_candidates:
        cells[best] = digit
        total += _search(cells, limit - total, found)
        cells[best] = 0
        if total >= limit:
            break
    return total


def _givens_consistent(cells: list[int]) -> bool:
    return all(not d or all(cells[j] != d for j in PEERS[i]) for i, d in enumerate(cells))


def count_solutions(puzzle: str, limit: int = 2) -> int:
    """The number of solutions of ``puzzle``, counting no further than ``limit`` (2 tells "is it unique")."""
    cells = _cells(puzzle)
    if not _givens_consistent(cells):
        return 0
    return _search(cells, limit, None)


def solve(puzzle: str) -> str | None:
    """A solution of ``puzzle`` (the first in search order if there are several), or None if it has none."""
    cells = _cells(puzzle)
    found: list[str] = []
    if _givens_consistent(cells):
        _search(cells, 1, found)
    return found[0] if found else None


def is_valid_solution(grid: str) -> bool:
    """Whether ``grid`` is a full 4x4 grid whose rows, columns and boxes each hold 1-4 exactly once."""
    if not isinstance(grid, str) or len(grid) != CELLS or any(ch not in "1234" for ch in grid):
        return False
    return all({grid[i] for i in unit} == set("1234") for unit in UNITS)


@functools.cache
def _all_grids() -> tuple[str, ...]:
    found: list[str] = []
    _search([0] * CELLS, 10**9, found)
    return tuple(sorted(found))


def all_solutions_grids() -> list[str]:
    """The 288 valid full 4x4 grids, sorted (enumerated once per process, then cached)."""
    return list(_all_grids())


def generate_puzzle(rng: random.Random, num_blanks: int, max_attempts: int = 10_000) -> tuple[str, str]:
    """A puzzle with exactly ``num_blanks`` blanks and a unique solution.

    Args:
        rng: The only source of randomness (the global ``random`` state is never touched).
        num_blanks: Blank cells wanted, 0 to :data:`MAX_BLANKS`.
        max_attempts: Grid/removal orders to try before giving up (greedy removal can get stuck early).

    Returns:
        ``(puzzle, solution)`` as 16-character strings.
    """
    if not 0 <= num_blanks <= MAX_BLANKS:
        raise ValueError(f"num_blanks must be in [0, {MAX_BLANKS}] for a unique 4x4 Sudoku, "
                         f"got {num_blanks}.")
    grids = _all_grids()
    for _ in range(max_attempts):
        solution = rng.choice(grids)
        cells = list(solution)
        order = list(range(CELLS))
        rng.shuffle(order)
        blanks = 0
        for i in order:
            if blanks == num_blanks:
                break
            cells[i] = "0"
            # The original solution always remains one, so "at most one more" is all uniqueness needs.
            if count_solutions("".join(cells)) == 1:
                blanks += 1
            else:
                cells[i] = solution[i]
        if blanks == num_blanks:
            return "".join(cells), solution
    raise RuntimeError(f"No unique 4x4 puzzle with {num_blanks} blanks after {max_attempts} attempts.")


def puzzle_at(
    seed: int, index: int, min_blanks: int, max_blanks: int, stream: str = "sudoku"
) -> dict[str, str]:
    """Puzzle number ``index`` of the stream ``(seed, stream)``: the same on every call and every machine.

    Args:
        seed: Seed of the puzzle stream.
        index: Position in the stream (each index has its own RNG, so any index is computed directly).
        min_blanks: Fewest blanks (the count is uniform in ``[min_blanks, max_blanks]``).
        max_blanks: Most blanks, at most :data:`MAX_BLANKS`.
        stream: Name of the stream, so that e.g. train and test puzzles come from unrelated draws.

    Returns:
        ``{"puzzle": str16, "solution": str16}``.
    """
    if not 0 <= min_blanks <= max_blanks <= MAX_BLANKS:
        raise ValueError(f"Need 0 <= min_blanks <= max_blanks <= {MAX_BLANKS}, "
                         f"got {min_blanks}, {max_blanks}.")
    rng = random.Random(derive_seed(seed, stream, index))
    puzzle, solution = generate_puzzle(rng, rng.randint(min_blanks, max_blanks))
    return {"puzzle": puzzle, "solution": solution}
