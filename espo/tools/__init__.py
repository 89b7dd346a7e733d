"""Experiment tools behind the ``espo`` verbs: objective comparisons and their reports, paper recipes."""
