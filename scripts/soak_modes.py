"""The two newer soaks of scripts/soak, each on one 1M-row day on local workerd:

--writer   archive and clean the day while a writer inserts rows for it (behind and ahead of the
           export's cursor, with any created_at), updates archived rows and deletes some, and
           workerd is killed with SIGKILL again and again. An oracle replays every write: each
           row the app last wrote (and did not delete) must be in D1 or, identical, in an archive
           generation.
--restore  archive the day, then restore it while workerd is killed again and again: D1 must end
           with every archived line exactly once, no row missing, none inserted twice, no
           conflict invented.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.error
from dataclasses import dataclass, field

from crashloop import kill_during
from localworker import COLUMNS, LocalWorker

NOON = "T12:00:00+00:00"


@dataclass
class Writes:
    """What the app did, in order: the final state of every row it touched."""
    last: dict = field(default_factory=dict)  # id -> row dict, or None when the app deleted it
    ops: int = 0
    error: str | None = None  # why the writer stopped before it was told to


def sql(w: LocalWorker, statement: str) -> int:
    """Runs one idempotent statement, retrying through restarts until it is surely applied;
    returns the rows it changed."""
    for _ in range(600):
        try:
            return w.sql(statement)
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, OSError, TimeoutError):
            # A kill can cut the answer short (IncompleteRead): the statement may or may not
            # have run, and running it again is safe.
            time.sleep(0.2)
    raise RuntimeError("the writer could not reach the Worker")


def quote(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return repr(v)


def writer(w: LocalWorker, date: str, originals: dict, rng: random.Random, stop: threading.Event, out: Writes) -> None:
    """Inserts, updates and deletes rows of `date` until `stop`, recording each write."""
    ids = sorted(originals)
    n = 0
    while not stop.is_set():
        n += 1
        kind = rng.choice(["insert-behind", "insert-ahead", "update", "delete"])
        if kind.startswith("insert"):
            rid = ("0000000000000" if kind == "insert-behind" else "9999999999999") + f"-w{n:06d}"
            created = rng.choice([None, 1, 4_102_444_800, 1_795_000_000_000, int(time.time())])
            row = {"id": rid, "path": f"/writer/{n}", "method": "GET", "status": 200, "response_time": n / 7.0,
                   "client_ip_hash": "w", "user_agent": None, "country": None, "timestamp": 1_700_000_000_000 + n,
                   "event_date": date, "is_error": 0, "created_at": created}
            values = ", ".join(quote(row[c]) for c in COLUMNS)
            sql(w, f"INSERT OR IGNORE INTO traffic_events ({', '.join(COLUMNS)}) VALUES ({values})")
            out.last[rid] = row
        elif kind == "update":
            rid = rng.choice(ids)
            if out.last.get(rid, originals[rid]) is None:
                continue
            row = dict(out.last.get(rid, originals[rid]), path=f"/updated/{n}")
            # A row already archived and deleted is not there to update: then nothing changed.
            if sql(w, f"UPDATE traffic_events SET path = {quote(row['path'])} WHERE id = {quote(rid)}"):
                out.last[rid] = row
        else:
            rid = rng.choice(ids)
            sql(w, f"DELETE FROM traffic_events WHERE id = {quote(rid)}")
            out.last[rid] = None
        out.ops += 1
        time.sleep(rng.uniform(0.0, 0.05))


def everything(w: LocalWorker, date: str) -> tuple[dict, dict]:
    """The date's rows in D1, and every line of every archive generation, by id."""
    in_d1 = w.rows(date)
    archived: dict = {}
    for g in w.status(date)["generations"]:
        for line in w.archive_rows(date, generation=g["generation"]):
            archived.setdefault(line["id"], []).append(line)
    return in_d1, archived


def same(a: dict, b: dict) -> bool:
    return all(a[c] == b[c] and type(a[c]) is type(b[c]) for c in COLUMNS)


@dataclass
class Verdict:
    kills: list
    ops: int
    lost: int
    deleted_unarchived: int
    generations: int


def writer_soak(w: LocalWorker, date: str, kills: int, rng: random.Random) -> Verdict:
    originals = w.rows(date)
    w.start()
    out, stop = Writes(), threading.Event()
    def write() -> None:
        try:
            writer(w, date, originals, random.Random(rng.random()), stop, out)
        except Exception as e:  # reported below: a soak whose writer died proves less
            out.error = f"{type(e).__name__}: {e}"

    thread = threading.Thread(target=write)
    thread.start()
    seen = []
    try:
        code, body = w.api("POST", f"/admin/trigger-archive?date={date}")
        assert code == 202, body
        targets = ["exporting", "exporting", "verifying", "cleaning", "cleaning"]
        for i in range(kills):
            st = kill_during(w, date, targets[i % len(targets)], rng)
            if st is None:  # the date finished, no kill: start its next generation and go on
                # (wrangler is still up; starting another here left the first running for good)
                w.api("POST", f"/admin/trigger-archive?date={date}")
                continue
            seen.append(st["phase"])
            w.start()
            w.api("POST", f"/admin/trigger-archive?date={date}")  # the cron's rescue, if an alarm was lost
    finally:
        stop.set()
        thread.join()
    if out.error:
        raise RuntimeError(f"the writer died after {out.ops} writes: {out.error}")
    # The writer is done: archive whatever it left, until the date is truly empty or stable.
    for _ in range(5):
        st = w.archive(date)
        assert st["phase"] == "cleaned", st
        if st["rows_pending"] == 0:
            break
    in_d1, archived = everything(w, date)
    final = dict(originals)
    final.update(out.last)
    lost = deleted_unarchived = 0
    for rid, row in final.items():
        if row is None:
            continue  # the app deleted it
        if rid in in_d1 and same(in_d1[rid], row):
            continue
        if any(same(line, row) for line in archived.get(rid, [])):
            continue
        lost += 1
        # Gone from D1, and only an older version (or nothing) in the archives.
        deleted_unarchived += rid not in in_d1
    return Verdict(seen, out.ops, lost, deleted_unarchived, len(w.status(date)["generations"]))


def restore_soak(w: LocalWorker, date: str, kills: int, rng: random.Random) -> dict:
    w.start()
    st = w.archive(date)
    assert st["phase"] == "cleaned", st
    archived = {}
    for line in w.archive_rows(date):
        archived[line["id"]] = line
    code, body = w.api("POST", f"/admin/restore?date={date}")
    assert code == 202, body
    seen = []
    for _ in range(kills):
        deadline = time.time() + 300
        while (st := w.status(date))["phase"] != "restoring":
            assert st["phase"] == "restored" or time.time() < deadline, st
            if st["phase"] == "restored":
                break
            time.sleep(0.02)
        if st["phase"] != "restoring":
            break
        time.sleep(rng.uniform(0.1, 1.0))
        seen.append((st["phase"], st["restore"]["lines_read"]))
        w.stop(kill=True)
        w.start()
    st = w.wait_for(date, {"restored", "failed"}, timeout=900)
    assert st["phase"] == "restored", st
    rows = w.query(f"SELECT {', '.join(COLUMNS)} FROM traffic_events WHERE event_date = ?", date)
    by_id: dict = {}
    for r in rows:
        by_id.setdefault(r[0], []).append(dict(zip(COLUMNS, r)))
    missing = sum(1 for rid in archived if rid not in by_id)
    twice = sum(len(v) - 1 for v in by_id.values())
    altered = sum(1 for rid, line in archived.items() if rid in by_id and not same(by_id[rid][0], line))
    r = st["restore"]
    return {"kills": seen, "missing": missing, "inserted_twice": twice, "altered": altered,
            "conflicts": r["conflicts"], "inserted": r["inserted"], "already_present": r["already_present"],
            "rows": len(archived), "seconds": (st["stats"]["restored_at_ms"] - st["stats"]["restore_started_ms"]) / 1000}


def report_writer(v: Verdict, rows: int, seconds: float) -> str:
    phases = ", ".join(f"{p}: {v.kills.count(p)}" for p in sorted(set(v.kills)))
    return "\n".join([
        "| rows | kills | kills by phase seen | writes by the app | generations | rows lost | rows deleted but not archived | time |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
        f"| {rows:,} | {len(v.kills)} | {phases} | {v.ops:,} | {v.generations} | {v.lost} | {v.deleted_unarchived} | {seconds:.0f} s |",
    ])


def report_restore(r: dict) -> str:
    return "\n".join([
        "| rows | kills during the restore | restore time | rows missing | rows inserted twice | rows altered | conflicts | inserted / already present |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['rows']:,} | {len(r['kills'])} | {r['seconds']:.0f} s | {r['missing']} | {r['inserted_twice']} | {r['altered']} | {r['conflicts']} | {r['inserted']:,} / {r['already_present']:,} |",
    ])


def dump(obj) -> str:
    return json.dumps(obj, default=str)
