"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from tfnorm.ops import kernel


@pytest.fixture(autouse=True)
def _cluster_threshold(request, monkeypatch):
    """``mode="cluster"``: every kernel runs as its own XLA cluster in a graph, at any size."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("mode") == "cluster":
        monkeypatch.setattr(kernel, "MIN_XLA_ELEMENTS", 0)
