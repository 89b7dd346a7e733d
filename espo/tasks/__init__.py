"""Tasks: the ``Task`` base and the built-in verifiable-reward tasks.

Every built-in task is imported here so configs can say ``class_path: Sudoku``; a task of your own is
named by its full ``class_path`` (``my_lab.tasks.MyTask``).
"""

from espo.tasks.base import Task
from espo.tasks.code import Code
from espo.tasks.countdown import Countdown
from espo.tasks.gsm8k import GSM8K
from espo.tasks.math500 import MATH500
from espo.tasks.sudoku import Sudoku
from espo.tasks.sudoku.trace import SudokuTrace

__all__ = ["GSM8K", "MATH500", "Code", "Countdown", "Sudoku", "SudokuTrace", "Task"]
