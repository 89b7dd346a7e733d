"""Tools behind the ``espo`` verbs: ``espo check`` (a config checked for its world size without weights),
objective comparisons and their reports, the papers' recipes, the objective-behaviour suite (``espo suite``)."""
