"""Every public layer's descriptors, gathered from one module per family.

A family adds a module here with a ``CASES`` list and names it in ``_MODULES``.
"""

import importlib

_MODULES = ["core", "seed", "family"]

CASES = []
for _name in _MODULES:
    CASES.extend(importlib.import_module(f"tests.descriptors.{_name}").CASES)

_ids = [c.id for c in CASES]
assert len(_ids) == len(set(_ids)), f"duplicate descriptor ids: {_ids}"
