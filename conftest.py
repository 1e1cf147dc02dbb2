"""Shared pytest set-up: doctests see ``np`` like the examples assume, and the doc pages whose
examples read the real EM volumes in ``../shared/data`` skip, with one line, where a clone
has no such folder (a user's clone of this repository alone)."""

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _doctest_numpy(doctest_namespace: dict) -> None:
    doctest_namespace["np"] = np


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if (SHARED_DATA / "gala_test.npz").exists():
        return
    skip = pytest.mark.skip(reason=f"needs the gala EM volumes in {SHARED_DATA} (../shared/data beside the checkout)")
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix == ".md" and "../shared/data" in path.read_text():
            item.add_marker(skip)
