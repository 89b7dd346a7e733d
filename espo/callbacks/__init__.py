"""Lightning callbacks a run gets from the ``espo`` command: checkpoints, summary, progress, completion log."""
