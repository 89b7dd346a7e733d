"""Tasks: the ``Task`` base and the built-in verifiable-reward tasks.

Every built-in task is imported here so configs can say ``class_path: Sudoku``; a task of your own is
named by its full ``class_path`` (``my_lab.tasks.MyTask``).
"""

from espo.tasks.base import Task
from espo.tasks.sudoku import Sudoku

__all__ = ["Sudoku", "Task"]
