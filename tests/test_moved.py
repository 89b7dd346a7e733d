"""Module paths from before the package was layered still import (saved run configs, pickled checkpoints)."""

from __future__ import annotations

import importlib
import pickle

import pytest

from espo._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_imports_the_new_module_itself(old: str):
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


def test_a_class_named_by_its_old_path_is_the_same_class():
    from espo.callbacks.progress import RunProgressBar

    assert importlib.import_module("espo.progress").RunProgressBar is RunProgressBar


def test_an_object_pickled_under_an_old_path_loads():
    from espo.train.policy import PolicySpec

    # A checkpoint written before the move names the class by its old module path.
    # Protocol 0 writes module names as text lines, so the path can be rewritten without length prefixes.
    blob = pickle.dumps(PolicySpec("model/dir"), protocol=0).replace(b"espo.train.policy", b"espo.policy")
    assert b"espo.policy" in blob
    assert pickle.loads(blob) == PolicySpec("model/dir")


def test_an_unknown_old_looking_path_still_fails():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("espo.no_such_module")
