"""Fixtures and hooks of the whole suite (the data the tests share is in common.py)."""

from __future__ import annotations

import os
import zlib

import common  # noqa: F401  (loads the hypothesis profile before any test runs)
import numpy as np
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Test files with the most `slow` tests first (stable otherwise): `make test` hands whole
    files to two workers in this order, and the long ones started first finish together."""
    slow: dict[str, int] = {}
    for item in items:
        slow[item.module.__name__] = slow.get(item.module.__name__, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow[item.module.__name__])


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded from the test's id, so a failure replays exactly on the next run;
    RANKME_FAST_TEST_SEED=<int> draws other data (to explore, not in CI)."""
    extra = int(os.environ.get("RANKME_FAST_TEST_SEED", "0"))
    return np.random.default_rng([zlib.crc32(request.node.nodeid.encode()), extra])


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory):
    """Rendered benchmarks go to a cache of this test run's own (never the user's), shared by
    the pytest-xdist workers: the first to ask renders a preset, the others wait and load it."""
    previous = os.environ.get("RANKME_FAST_CACHE")
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each worker's own
    (shared / "audio-cache").mkdir(exist_ok=True)
    os.environ["RANKME_FAST_CACHE"] = str(shared / "audio-cache")
    yield
    if previous is None:
        del os.environ["RANKME_FAST_CACHE"]
    else:
        os.environ["RANKME_FAST_CACHE"] = previous
