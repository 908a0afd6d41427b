"""End to end on workerd: Parquet beside the JSONL. Every file the export wrote is listed in the
status and `archive_objects`, served by `/admin/archive?format=parquet&file=N`, read by DuckDB
(`read_parquet`, hive partitioning) and by pyarrow, and holds exactly the JSONL's rows. A reset
removes the files with their JSONL object; a generation exported with `PARQUET=false` has none."""

import json

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from conftest import day, make_worker, running
from localworker import merged

DATE = day(21)
ROWS = 30_000
# Values of every kind the table can hold, and some of a type their column does not declare.
HOSTILE = ("INSERT INTO traffic_events (id, path, method, status, response_time, client_ip_hash, user_agent, country, "
           "timestamp, event_date, is_error, created_at) VALUES "
           "('0-big', '/q?x=''1''', 'GET', 200, 0.30000000000000004, 'h', 'emoji 😀 中文 ' || char(1) || printf('%.*c', 100000, 'A'), NULL, 9007199254740993, '{d}', 0, NULL),"
           "('', '/empty-id', 'GET', 500, 1e300, 'h', NULL, NULL, -9007199254740993, '{d}', 1, 1),"
           "(NULL, '/null-id', 'GET', 200, 5e-324, 'h', NULL, NULL, 2, '{d}', 0, 2),"
           "('0-types', x'01ff', 'GET', 'abc', 'fast', 'h', 7, 1.5, 3, '{d}', 1.5, 'late')")


def key_of(row: dict) -> str:
    return json.dumps(row, sort_keys=True)


def download(w, files, folder):
    """Every Parquet file through the admin API, saved under a hive folder like R2's."""
    paths = []
    for f in files:
        status, headers, body = w.request("GET", f"/admin/archive?date={DATE}&format=parquet&file={f['file']}")
        assert status == 200, body[:300]
        headers = {k.lower(): v for k, v in headers.items()}
        assert headers["content-type"] == "application/vnd.apache.parquet" and headers["cache-control"] == "no-store"
        assert headers["x-archive-key"] == f["key"] and len(body) == f["bytes"] == int(headers["content-length"])
        assert body[:4] == body[-4:] == b"PAR1"
        path = folder / f"event_date={DATE}" / f["key"].rsplit("/", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        paths.append(path)
    return paths


def test_every_parquet_file_is_served_and_read_by_duckdb_and_pyarrow_as_the_jsonl(tmp_path):
    w = make_worker(tmp_path / "w", vars={"PARQUET": "true", "STEP_ROWS": "8000", "AUTO_CLEANUP": "false", "TEST_HOOKS": "1"})
    w.seed(DATE, ROWS)
    w.execute(HOSTILE.format(d=DATE))
    with running(w):
        st = w.archive(DATE, until={"uploaded", "failed"})
        assert st["phase"] == "uploaded", st
        jsonl = w.archive_rows(DATE)
        assert len(jsonl) == ROWS + 4
        gen = st["generations"][0]
        files = gen["parquet"]
        # One file per export step of 8,000 rows.
        assert [f["file"] for f in files] == [1, 2, 3, 4] and st["parquet_files"] == 4
        assert sum(f["rows"] for f in files) == ROWS + 4
        listed = w.query("SELECT key, rows, bytes FROM archive_objects WHERE date = ? AND format = 'parquet' ORDER BY key", DATE)
        assert listed == [(f["key"], f["rows"], f["bytes"]) for f in files]
        assert sorted(k for k in w.keys(f"traffic_events/event_date={DATE}/") if k.endswith(".parquet")) == [f["key"] for f in files]

        # Picking a file: several files need &file=N, a missing one is a 404, a bad one a 400.
        code, body = w.api("GET", f"/admin/archive?date={DATE}&format=parquet")
        assert code == 400 and "&file=N (1..=4)" in body["message"], body
        code, body = w.api("GET", f"/admin/archive?date={DATE}&format=parquet&file=5")
        assert code == 404 and "not a file 5" in body["message"], body
        code, body = w.api("GET", f"/admin/archive?date={DATE}&format=parquet&file=0")
        assert code == 400, body
        code, body = w.api("GET", f"/admin/archive?date={DATE}&file=2")
        assert code == 400 and "format=parquet" in body["message"], body

        root = tmp_path / "lake" / "traffic_events"
        paths = download(w, files, root)

    want = sorted(map(key_of, jsonl))
    # pyarrow, file by file: exact types, rows in id order within each file, and statistics.
    rows = []
    for path, f in zip(paths, files):
        meta = pq.ParquetFile(path).metadata
        assert meta.num_rows == f["rows"] and meta.num_row_groups == f["row_groups"]
        names = meta.schema.names
        for g in range(meta.num_row_groups):
            for col in ("id", "timestamp"):
                assert meta.row_group(g).column(names.index(col)).statistics.has_min_max
        table = pq.read_table(path)
        assert str(table.schema.field("status").type) == "int64"
        assert str(table.schema.field("response_time").type) == "double"
        assert str(table.schema.field("path").type) == "string"
        assert not table.schema.field("path").nullable and table.schema.field("created_at").nullable
        part = [merged(r) for r in table.to_pylist()]
        ids = [r["id"] for r in part if isinstance(r["id"], str)]
        assert ids == sorted(ids, key=lambda s: s.encode()), "rows in id order"
        rows += part
    assert sorted(map(key_of, rows)) == want
    # pyarrow, the folder as one hive-partitioned dataset (event_date is also in the files).
    hive = ds.partitioning(pa.schema([("event_date", pa.string())]), flavor="hive")
    assert ds.dataset(root, format="parquet", partitioning=hive).count_rows() == ROWS + 4

    # DuckDB over the hive folder: every row, typed, equal to the JSONL.
    con = duckdb.connect()
    glob = f"{root}/*/*.parquet"
    got = con.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
    cols = got.columns
    out = []
    for r in got.fetchall():
        rec = dict(zip(cols, r))
        rec["event_date"] = rec["event_date"].isoformat()  # hive: the folder's value, as DATE
        out.append(merged(rec))
    assert sorted(map(key_of, out)) == want
    # The numbers a person would ask for, equal between DuckDB-on-Parquet and the JSONL.
    errors = con.sql(f"SELECT path, count(*) FROM read_parquet('{glob}', hive_partitioning = true) "
                     "WHERE status >= 500 GROUP BY 1").fetchall()
    expect = {}
    for r in jsonl:
        if isinstance(r["status"], int) and r["status"] >= 500:
            expect[r["path"]] = expect.get(r["path"], 0) + 1
    assert dict(errors) == expect
    big = next(r for r in out if r["id"] == "0-big")
    assert big["timestamp"] == 9007199254740993 and big["response_time"] == 0.30000000000000004
    odd = next(r for r in out if r["id"] == "0-types")
    assert (odd["path"], odd["status"], odd["created_at"]) == ({"$blob": "01FF"}, "abc", "late"), odd


def test_reset_removes_the_parquet_files_and_parquet_false_writes_none(tmp_path):
    w = make_worker(tmp_path / "w", vars={"PARQUET": "true", "STEP_ROWS": "5000", "AUTO_CLEANUP": "false", "TEST_HOOKS": "1"})
    w.seed(DATE, 12_000)
    prefix = f"traffic_events/event_date={DATE}/"
    with running(w):
        st = w.archive(DATE, until={"uploaded", "failed"})
        assert st["phase"] == "uploaded" and st["parquet_files"] == 3, st
        assert len([k for k in w.keys(prefix) if k.endswith(".parquet")]) == 3
        code, body = w.api("POST", f"/admin/reset?date={DATE}")
        assert code == 200, body
        assert w.keys(prefix) == [], "reset removes the JSONL, its index and every Parquet file"
        assert w.query("SELECT count(*) FROM archive_objects WHERE date = ?", DATE) == [(0,)]
        assert w.count(DATE) == 12_000
    w.vars["PARQUET"] = "false"
    w._write_config()
    with running(w):
        st = w.archive(DATE, until={"uploaded", "failed"})
        assert st["phase"] == "uploaded" and st["parquet_files"] is None, st
        assert not [k for k in w.keys(prefix) if k.endswith(".parquet")]
        code, body = w.api("GET", f"/admin/archive?date={DATE}&format=parquet")
        assert code == 404 and "PARQUET=false" in body["message"], body
