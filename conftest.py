"""Root pytest configuration: shared by the test suite and the package's doctests."""
import tempfile

import pytest


@pytest.fixture(autouse=True)
def _doctest_tempdir(request, tmp_path, monkeypatch):
    """Doctests that call ``tempfile.mkdtemp()`` write under pytest's ``tmp_path``.

    pytest removes old ``tmp_path`` folders itself, so examples that write
    files (checkpoints, saved features, MNIST copies) leave nothing behind in
    the system's temporary directory.
    """
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield
