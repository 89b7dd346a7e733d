"""Tests of ``espo.tasks``."""
