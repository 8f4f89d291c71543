import pytest
import torch

torch.set_num_threads(1)  # before any fixture, module-scoped ones included, builds a model


@pytest.fixture(autouse=True)
def _threads():
    # One thread: the test models are tiny, and two intra-op threads on a machine where another job holds a
    # core wait on each other (a 20-second prior training took over 5 minutes that way).
    torch.set_num_threads(1)


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    """A private prior cache per test session, so tests never depend on the user's cache."""
    path = tmp_path_factory.getbasetemp() / "banel-cache"
    monkeypatch.setenv("BANEL_CACHE", str(path))
    return path
