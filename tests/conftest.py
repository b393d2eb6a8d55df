"""Shared pytest configuration: the ``gpu`` marker and the location of the shared data."""

import os
from pathlib import Path

import pytest

#: Real MNIST and its features, beside a development clone (CI has it; a user's clone not).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "gpu: needs a CUDA device; skipped where torch.cuda.is_available() is False")


@pytest.fixture(autouse=True)
def _shared_data(monkeypatch):
    """Point ``SKCCE_DATA`` at ``../shared/data`` when it exists and nothing else is set."""
    if not os.environ.get("SKCCE_DATA") and SHARED_DATA.is_dir():
        monkeypatch.setenv("SKCCE_DATA", str(SHARED_DATA))
