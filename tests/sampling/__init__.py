"""Tests of ``espo.sampling``."""
