from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Kernels compile on first call, so the first example of a test can be slow.
settings.register_profile(
    "default", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))



import pytest  # noqa: E402
from pathlib import Path  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (where CI puts it), or $LABELSTITCH_SHARED_DATA."""
    path = shared_data_folder()
    if not (path / "gala_test.npz").exists():
        pytest.skip(f"needs the gala EM volumes in {path} (../shared/data beside the checkout, or $LABELSTITCH_SHARED_DATA)")
    return path


def shared_data_folder() -> Path:
    return Path(os.environ.get("LABELSTITCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def dvid_server(monkeypatch):
    """The DVID test server on 127.0.0.1 (a free port), with short client backoff pauses."""
    from labelstitch.testing.dvid import DvidTestServer

    monkeypatch.setenv("LABELSTITCH_DVID_BACKOFF", "0.01")
    monkeypatch.setenv("LABELSTITCH_DVID_MAX_BACKOFF", "0.05")
    monkeypatch.setenv("LABELSTITCH_DVID_RETRIES", "20")
    with DvidTestServer() as server:
        yield server
