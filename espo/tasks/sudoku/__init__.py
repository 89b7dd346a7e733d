"""4x4 Sudoku: the papers' task (``task``) and its data (``data``, ``gen``), the testbed's step-trace variant
(``trace``) and the breakdown of its completions (``trace_anatomy``)."""

from espo.tasks.sudoku.task import Sudoku
from espo.tasks.sudoku.trace import SudokuTrace

__all__ = ["Sudoku", "SudokuTrace"]
