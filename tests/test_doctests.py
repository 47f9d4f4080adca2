"""Every docstring example in the package runs and prints what it shows (the examples are documentation)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import kerasbd

# __main__ runs the command line when imported
MODULES = sorted(m.name for m in pkgutil.walk_packages(kerasbd.__path__, prefix="kerasbd.") if m.name != "kerasbd.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) in {name} failed (run with -s to see them)"
