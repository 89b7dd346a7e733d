"""``python -m espo.tools.suite``: the same command as ``espo suite`` (see ``espo.tools.suite.cli``)."""

from espo.tools.suite.cli import main

if __name__ == "__main__":
    main()
