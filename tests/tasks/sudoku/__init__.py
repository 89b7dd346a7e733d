"""Tests of ``espo.tasks.sudoku``."""
