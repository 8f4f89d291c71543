import pytest
import torch


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    """A private prior cache per test session, so tests never depend on the user's cache."""
    path = tmp_path_factory.getbasetemp() / "banel-cache"
    monkeypatch.setenv("BANEL_CACHE", str(path))
    return path
