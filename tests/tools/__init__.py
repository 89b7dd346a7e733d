"""Tests of ``espo.tools``."""
