"""Tests of ``espo.models``."""
