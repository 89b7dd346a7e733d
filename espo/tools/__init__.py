"""Tools around a run: ``espo check`` (a config checked for its world size without weights)."""
