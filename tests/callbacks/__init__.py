"""Tests of ``espo.callbacks``."""
