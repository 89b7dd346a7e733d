"""Tests of ``espo.objectives``."""
