"""Tests of ``espo.loops``."""
