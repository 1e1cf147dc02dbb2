"""Shared pytest set-up: doctests see ``np`` like the examples assume."""

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _doctest_numpy(doctest_namespace: dict) -> None:
    doctest_namespace["np"] = np
