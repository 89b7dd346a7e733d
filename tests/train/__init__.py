"""Tests of ``espo.train``."""
