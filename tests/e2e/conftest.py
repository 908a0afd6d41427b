"""Fixtures: local Workers for the tests, always stopped, even when a test fails."""

import contextlib
import datetime as dt
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from localworker import LocalWorker  # noqa: E402


def day(offset: int) -> str:
    """A date `offset` days before today (UTC), as the Worker sees today."""
    return (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=offset)).isoformat()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("worker")


def make_worker(workdir, seed: dict | None = None, **kw):
    """A Worker with its D1 migrated, and `seed` ({date: rows}) seeded."""
    w = LocalWorker(workdir, **kw)
    w.migrate()
    for date, rows in (seed or {}).items():
        w.seed(date, rows)
    return w


@contextlib.contextmanager
def running(w):
    """The Worker `w` started for the block, and stopped after it whatever happens."""
    w.start()
    try:
        yield w
    finally:
        w.stop()
