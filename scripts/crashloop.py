"""kill -9 workerd at chosen moments of a date's run, restart it, and check nothing is lost.

Used by scripts/soak (20+ kills on 1M-row days) and by the fast crash test in tests/e2e.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field

from localworker import COLUMNS, LocalWorker, parquet_lines

# A kill lands in each of these in turn: the export, the read-back verification, and the
# cleaning. (`verifying` is short: the kill comes as soon as it is seen.)
TARGETS = ["exporting", "verifying", "cleaning"]
ORDER = ["idle", "exporting", "completing", "verifying", "uploaded", "cleaning", "cleaned"]


def row_digest(values) -> bytes:
    return hashlib.blake2b(repr(tuple(values)).encode(), digest_size=12).digest()


def expected_digests(w: LocalWorker, date: str) -> dict:
    return {r[0]: row_digest(r) for r in w.query(f"SELECT {', '.join(COLUMNS)} FROM traffic_events WHERE event_date = ?", date)}


def archive_digests(w: LocalWorker, date: str) -> tuple[dict, int]:
    """Digests of the archived rows, and how many ids came more than once."""
    seen, dup = {}, 0
    for row in w.archive_rows(date):
        d = row_digest(row[c] for c in COLUMNS)
        dup += row["id"] in seen
        seen[row["id"]] = d
    return seen, dup


@dataclass
class Kill:
    number: int
    target: str
    phase: str
    rows_exported: int
    rows_deleted: int


@dataclass
class Outcome:
    kills: list = field(default_factory=list)
    cron_rescues: int = 0
    lost: int = 0
    duplicated: int = 0
    altered: int = 0
    left_in_d1: int = 0
    # Parquet (PARQUET=true): rows of the listed files that differ from the JSONL's or are
    # missing, rows listed twice, and .parquet objects in R2 that no status lists.
    parquet_mismatched: int = 0
    parquet_duplicated: int = 0
    parquet_unlisted: int = 0


def parquet_check(w: LocalWorker, date: str, archived: dict, out: Outcome) -> None:
    """Compares every listed Parquet file's rows with the JSONL's (by id), and, with test hooks
    on, R2's .parquet keys with the listed ones: no torn or duplicate file may be listed."""
    seen = {}
    files = w.parquet_files(date)
    if not files and w.vars.get("PARQUET") != "true":
        return
    for _, data in files:
        for row in parquet_lines(data):
            out.parquet_duplicated += row["id"] in seen
            seen[row["id"]] = row_digest(row[c] for c in COLUMNS)
    out.parquet_mismatched = sum(1 for k, d in archived.items() if seen.get(k) != d) + len(seen.keys() - archived.keys())
    if w.vars.get("TEST_HOOKS"):
        in_r2 = {k for k in w.keys(f"traffic_events/event_date={date}/") if k.endswith(".parquet")}
        out.parquet_unlisted = len(in_r2 - {f["key"] for f, _ in files})


def kill_during(w: LocalWorker, date: str, target: str, rng: random.Random, timeout: float = 300) -> dict | None:
    """Waits until the date is in `target` (or past it), then kills after a short random
    delay. Returns the status seen just before the kill, or None if the run finished first."""
    order = ORDER
    deadline = time.time() + timeout
    while True:
        st = w.status(date)
        if st["phase"] == "cleaned":
            return None
        if st["phase"] == "failed":
            raise AssertionError(f"{date} failed: {st['last_error']}")
        if order.index(st["phase"]) >= order.index(target):
            break
        assert time.time() < deadline, f"{date} never reached {target}: {st}"
        time.sleep(0.01)
    if target != "verifying":
        time.sleep(rng.uniform(0.0, 0.8))
    w.stop(kill=True)
    return st


def run_with_kills(w: LocalWorker, date: str, kills: int, rng: random.Random, first: int = 1,
                   targets: list = TARGETS) -> Outcome:
    """Triggers `date`, kills workerd `kills` times aiming at `targets` in turn (a target already
    passed means: kill now), lets it finish, and checks the archive against D1's rows as they
    were before."""
    out = Outcome()
    expected = expected_digests(w, date)
    w.start()
    code, body = w.api("POST", f"/admin/trigger-archive?date={date}")
    assert code == 202, body
    for i in range(kills):
        target = targets[i % len(targets)]
        st = kill_during(w, date, target, rng)
        if st is None:
            break
        out.kills.append(Kill(first + i, target, st["phase"], st["rows_exported"], st["rows_deleted"]))
        w.start()
    # The pending alarm carries the run on after a restart. Should a kill have landed before
    # the first alarm was stored, the daily cron is what would pick the date up: fire it.
    last_progress, last_seen = time.time(), None
    while (st := w.status(date))["phase"] not in ("cleaned", "failed"):
        seen = (st["phase"], st["rows_exported"], st["rows_deleted"], st["stats"]["steps"])
        if seen != last_seen:
            last_progress, last_seen = time.time(), seen
        elif time.time() - last_progress > 20:
            w.cron()
            out.cron_rescues += 1
            last_progress = time.time()
        time.sleep(0.1)
    assert st["phase"] == "cleaned", st
    got, out.duplicated = archive_digests(w, date)
    out.lost = len(expected.keys() - got.keys())
    out.altered = sum(1 for k in expected.keys() & got.keys() if expected[k] != got[k]) + len(got.keys() - expected.keys())
    out.left_in_d1 = w.count(date)
    parquet_check(w, date, got, out)
    return out
