"""Tests of ``espo.scale``."""
