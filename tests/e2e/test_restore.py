"""End to end on workerd: a day restored into D1 exactly, held, released against the same
archive; archive -> restore -> archive again gives the same JSONL bytes; a window of a day read
in place through the seek index."""

import datetime as dt
import json
import math
import random
import sqlite3
import struct
import sys

from conftest import day, make_worker, running
from localworker import COLUMNS, single_member_gunzip

HOSTILE = ("INSERT INTO traffic_events (id, path, method, status, response_time, client_ip_hash, user_agent, country, "
           "timestamp, event_date, is_error, created_at) VALUES "
           "('0-big', '/q?x=''1''', 'GET', 200, 0.30000000000000004, 'h', printf('%.*c', 100000, 'A') || char(1), NULL, 9007199254740993, '{d}', 0, NULL),"
           "('', '/empty', 'GET', 200, 1e300, 'h', NULL, NULL, -1, '{d}', 0, 1),"
           "(NULL, '/null', 'GET', 200, 5e-324, 'h', NULL, NULL, 2, '{d}', 0, 2),"
           "(NULL, '/null', 'GET', 200, 5e-324, 'h', NULL, NULL, 2, '{d}', 0, 2),"
           "(x'00ff', x'01', 'GET', 'x', 'y', 'h', x'', NULL, 3, '{d}', 'z1', 'z')")


def snapshot(w, date):
    """Every row of the date with its SQLite type, as a sorted list (NULL ids can repeat)."""
    rows = w.query(f"SELECT {', '.join(f'{c}, typeof({c})' for c in COLUMNS)} FROM traffic_events WHERE event_date = ?", date)
    return sorted(rows, key=repr)


def object_bytes(w, date, generation):
    status, _, body = w.request("GET", f"/admin/archive?date={date}&generation={generation}")
    assert status == 200
    return body


def test_restore_is_exact_and_archiving_it_again_gives_the_same_bytes(tmp_path):
    date = day(40)
    a = make_worker(tmp_path / "a")
    a.seed(date, 50_000)
    a.execute(HOSTILE.format(d=date))
    before = snapshot(a, date)
    with running(a):
        st = a.archive(date, until={"cleaned", "failed"})
        assert st["phase"] == "cleaned", st
        first = single_member_gunzip(object_bytes(a, date, 1))
        code, body = a.api("POST", f"/admin/restore?date={date}")
        assert code == 202 and body["result"] == "restore_started", body
        st = a.wait_for(date, {"restored", "failed"})
        assert st["phase"] == "restored", st
        r = st["restore"]
        assert (r["inserted"], r["already_present"], r["conflicts"], r["rows_to_restore"]) == (50_005, 0, 0, 50_005), r
        assert st["stats"]["restore_sql_us"] > 0, st["stats"]
        assert snapshot(a, date) == before, "every value is back, with its type"
        assert a.metadata(date)["status"] == "restored" and a.metadata(date)["rows_restored"] == 50_005
        # Held rows an operator asked for are a notice on the health page, not a failure.
        _, health = a.api("GET", "/admin/health")
        assert not any(date in r for r in health["reasons"]), health
        assert any(date in n and "held in D1 until" in n for n in health["notices"]), health
        code, body = a.api("POST", f"/admin/trigger-archive?date={date}")
        assert code == 409 and "release" in body["message"], body
    # A second Worker, fresh: the restored rows go in, are archived, and the JSONL is the same.
    b = make_worker(tmp_path / "b")
    src = sqlite3.connect(a.sqlite_file())
    dst = sqlite3.connect(b.sqlite_file())
    cols = ", ".join(COLUMNS)
    rows = src.execute(f"SELECT {cols} FROM traffic_events WHERE event_date = ?", (date,)).fetchall()
    dst.executemany(f"INSERT INTO traffic_events ({cols}) VALUES ({', '.join('?' * 12)})", rows)
    dst.commit()
    src.close()
    dst.close()
    with running(b):
        b.api("POST", f"/admin/trigger-archive?date={date}")
        assert b.wait_for(date, {"cleaned", "failed"})["phase"] == "cleaned"
        assert single_member_gunzip(object_bytes(b, date, 1)) == first


def test_every_double_is_archived_cleaned_and_restored_exactly(tmp_path):
    """Random doubles of every magnitude in the REAL column, and non-whole ones in an INTEGER
    column (`created_at` in fractional seconds): workerd's SQLite writes and reads each exactly,
    so every row is archived exactly, cleaned, and comes back bit for bit."""
    date = day(41)
    w = make_worker(tmp_path)
    rng = random.Random(41)
    doubles = [x for x in (struct.unpack("<d", rng.randbytes(8))[0] for _ in range(2_500)) if math.isfinite(x)]
    doubles += [5e-324, -5e-324, sys.float_info.max, sys.float_info.min, 0.1, 0.30000000000000004]
    seconds = [rng.uniform(1e9, 2e9) for _ in range(500)] + [1795000000.1234567, 1795000000123.4567, 2 ** -60]
    con = sqlite3.connect(w.sqlite_file())
    con.executemany(
        "INSERT INTO traffic_events (id, path, method, response_time, client_ip_hash, timestamp, event_date, created_at)"
        " VALUES (?, '/', 'GET', ?, 'h', 1, ?, ?)",
        [(f"{i:05}", x, date, seconds[i % len(seconds)] if i % 2 else 1) for i, x in enumerate(doubles)])
    con.commit()
    con.close()
    before = snapshot(w, date)
    assert sum(1 for r in before if r[-1] == "real") >= 1_000
    with running(w):
        st = w.archive(date, until={"cleaned", "failed"})
        assert (st["phase"], st["rows_pending"]) == ("cleaned", 0), st
        assert w.count(date) == 0
        held = {r["id"]: r for r in w.archive_rows(date)}
        for i, x in enumerate(doubles):
            assert held[f"{i:05}"]["response_time"] == x, (i, x, held[f"{i:05}"])
        code, body = w.api("POST", f"/admin/restore?date={date}")
        assert code == 202, body
        assert w.wait_for(date, {"restored", "failed"})["phase"] == "restored"
        assert snapshot(w, date) == before, "every double is back, bit for bit"


def test_hold_release_and_refusals_during_a_restore(tmp_path):
    date = day(41)
    w = make_worker(tmp_path, vars={"CLEAN_STEP_ROWS": "10000"})
    w.seed(date, 40_000)
    with running(w):
        w.archive(date, until={"cleaned"})
        until = (dt.date.fromisoformat(day(0)) + dt.timedelta(days=2)).isoformat()
        code, body = w.api("POST", f"/admin/restore?date={date}&generation=1&hold_until={until}")
        assert code == 202, body
        for path, word in [("reset", "release"), ("trigger-cleanup", "release")]:
            code, body = w.api("POST", f"/admin/{path}?date={date}")
            assert code == 409 and word in body["message"], (path, body)
        # The same restore again (a client's retry) is under way, not refused.
        code, body = w.api("POST", f"/admin/restore?date={date}&generation=1")
        assert (code, body["result"]) == (202, "already_running"), body
        st = w.wait_for(date, {"restored"})
        assert st["restore"]["hold_until"].startswith((dt.date.fromisoformat(until) + dt.timedelta(days=1)).isoformat())
        # The cron leaves a held date alone.
        w.cron()
        assert w.status(date)["phase"] == "restored"
        code, body = w.api("POST", f"/admin/restore?date={date}&generation=9")
        assert code == 409, body
        code, body = w.api("POST", f"/admin/release?date={date}")
        assert code == 202 and body["result"] == "release_started", body
        st = w.wait_for(date, {"cleaned", "failed"})
        assert (st["phase"], st["rows_pending"], st["generation"]) == ("cleaned", 0, 1), st
        assert w.count(date) == 0
        assert [g["generation"] for g in st["generations"]] == [1], "no new generation, no second copy"
        code, body = w.api("POST", f"/admin/restore?date={date}&generation=7")
        assert code == 404, body


def test_a_window_is_read_in_place_from_the_pieces_that_can_hold_it(tmp_path):
    date = day(42)
    w = make_worker(tmp_path, vars={"PIECE_BYTES": "262144"})
    w.seed(date, 200_000)
    rows = w.rows(date)
    with running(w):
        w.archive(date, until={"cleaned"})
        start = int(dt.datetime.fromisoformat(date + "T14:00:00+00:00").timestamp() * 1000)
        end = start + 5 * 60_000
        want = {r for r, v in rows.items() if start <= v["timestamp"] < end}
        assert 50 < len(want) < 5_000
        status, headers, body = w.request("GET", f"/admin/events?date={date}&from={date}T14:00:00Z&to={end}")
        assert status == 200 and headers["Content-Type"] == "application/x-ndjson"
        got = [json.loads(line) for line in body.decode().splitlines()]
        assert {g["id"] for g in got} == want and len(got) == len(want)
        for g in got:
            assert [g[c] for c in COLUMNS] == [rows[g["id"]][c] for c in COLUMNS]
        assert headers["x-archive-generations"] == "1", headers
        read, total = (int(x) for x in headers["x-archive-bytes"].split(" of "))
        assert read <= total // 20, headers
        status, _, body = w.request("GET", f"/admin/events?date={date}&from={start}&limit=7")
        assert status == 200 and len(body.decode().splitlines()) == 7
        # Pages: the next one goes on after the last id of the one before, in id order.
        page = [json.loads(line)["id"] for line in body.decode().splitlines()]
        status, _, body = w.request("GET", f"/admin/events?date={date}&from={start}&limit=7&id_after={page[-1]}")
        page += [json.loads(line)["id"] for line in body.decode().splitlines()]
        status, _, body = w.request("GET", f"/admin/events?date={date}&from={start}&limit=14")
        assert page == [json.loads(line)["id"] for line in body.decode().splitlines()] == sorted(page), page
        # `skip` leaves out the window's first lines (a page going on after lines it already had).
        status, _, body = w.request("GET", f"/admin/events?date={date}&from={start}&limit=4&id_after={page[2]}&skip=3")
        assert status == 200 and [json.loads(line)["id"] for line in body.decode().splitlines()] == page[6:10], body
        status, _, body = w.request("GET", f"/admin/events?date={date}&id_from=0000000000000&id_to={min(want)}")
        ids = [json.loads(line)["id"] for line in body.decode().splitlines()]
        assert ids == sorted(r for r in rows if r <= min(want))
        code, body = w.api("GET", f"/admin/events?date={date}&from=noon")
        assert code == 400 and "RFC 3339" in body["message"], body
