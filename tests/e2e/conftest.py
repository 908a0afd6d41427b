"""Fixtures: a local Worker per test module, always stopped, even when a test fails."""

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


def make_worker(workdir, **kw):
    w = LocalWorker(workdir, **kw)
    w.migrate()
    return w
