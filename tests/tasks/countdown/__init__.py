"""Tests of ``espo.tasks.countdown``."""
