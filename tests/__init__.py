"""The test suite: one folder per package of ``espo/``, one module per source module or concept."""
