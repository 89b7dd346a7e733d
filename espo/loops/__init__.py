"""The other loops: held-out validation during fit, ``espo test`` (evaluation) and ``espo predict``."""
