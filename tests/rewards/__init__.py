"""Tests of ``espo.rewards``."""
