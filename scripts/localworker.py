"""A real Worker on local workerd (`wrangler dev`), started on a free port with its own state.

Used by the end-to-end tests and by scripts/demo, bench and soak.

Not a mock: D1 is SQLite inside workerd, R2 and Durable Objects (with alarms) are workerd's.
The harness only starts and stops processes, seeds data (or copies a state it seeded the same way
before), and speaks HTTP on 127.0.0.1.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "node_modules" / ".bin"
TOKEN = "e2e-token-0123456789"
# Seeds up to this many rows are kept as templates (see `LocalWorker._set_up`); larger ones
# (the bench's and the soak's days) would cost more to copy than they save.
TEMPLATE_MAX_ROWS = 100_000


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}:{e.get('PATH', '')}"
    e["CI"] = "true"
    e["WRANGLER_SEND_METRICS"] = "false"
    # wrangler 4.164 traces every binding call of a local Worker (each D1 batch with its SQL
    # text, each R2 read: about 2,000 spans for a 1M-row cleaning) into a SQLite store of its
    # own, for its local explorer, on the same workerd thread as the Worker, D1 and R2, and the
    # store grows with every run (40 MB after a soak). Cloudflare has no such collector beside
    # a Worker, so the harness turns it off; set X_LOCAL_OBSERVABILITY=true to keep it. (Its
    # cost at 1M rows was within this machine's noise: docs/benchmarks.md.)
    e.setdefault("X_LOCAL_OBSERVABILITY", "false")
    # A `wrangler dev` stopped by SIGKILL (the crash tests, a timed-out stop) leaves miniflare's
    # temporary folders behind; they go to a folder of this process's, removed at its exit.
    e["TMPDIR"] = str(_scratch())
    return e


_SCRATCH: Path | None = None


def _scratch() -> Path:
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = Path(tempfile.mkdtemp(prefix="localworker-tmp-"))
        atexit.register(shutil.rmtree, _SCRATCH, True)
    return _SCRATCH


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_member_gunzip(blob: bytes) -> bytes:
    """Decompresses like readers that stop after the first gzip member, and checks that
    nothing follows it."""
    d = zlib.decompressobj(wbits=31)
    out = d.decompress(blob) + d.flush()
    assert d.eof, "gzip member is truncated"
    assert d.unused_data == b"", f"{len(d.unused_data)} bytes follow the first gzip member"
    return out


class _Templates:
    """The local state each set-up (a fresh state migrated, then seeded) produced, kept for this
    process, so that the next Worker with the same set-up starts from a copy instead of paying
    wrangler's start-up again (about 5 s a command, and most end-to-end tests set up a Worker of
    their own). Each template was made by wrangler's own commands the first time; all are removed
    at exit."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.states: dict[tuple, Path] = {}

    def get(self, key: tuple) -> Path | None:
        return self.states.get(key)

    def keep(self, key: tuple, state: Path) -> None:
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="localworker-templates-"))
            atexit.register(shutil.rmtree, self.root, True)
        copy = self.root / str(len(self.states))
        shutil.copytree(state, copy)
        self.states[key] = copy


TEMPLATES = _Templates()


def migrations_digest() -> str:
    h = hashlib.sha256()
    for f in sorted((ROOT / "migrations").glob("*.sql")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


COLUMNS = ["id", "path", "method", "status", "response_time", "client_ip_hash", "user_agent",
           "country", "timestamp", "event_date", "is_error", "created_at"]


class LocalWorker:
    def __init__(self, workdir: Path, token: str | None = TOKEN, vars: dict | None = None):
        self.workdir = workdir
        self.persist = workdir / "state"
        self.config_dir = workdir / "config"
        self.token = token
        self.vars = vars or {}
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "wrangler.log"
        # The set-up steps that made this state from nothing (`_set_up`); None once anything
        # else touched it, or when it was there before.
        self.history: tuple | None = None if self.persist.exists() else ()
        self._write_config()

    # -- set-up -------------------------------------------------------------------------------
    def _write_config(self) -> None:
        """The project's wrangler.toml, pointed at the built Worker, without the build step
        (scripts/test builds once), with this test's vars."""
        text = (ROOT / "wrangler.toml").read_text()
        text = re.sub(r"\[build\]\ncommand = .*\n", "", text)
        text = text.replace('main = "build/index.js"', f'main = "{ROOT}/build/index.js"')
        text = text.replace('migrations_dir = "migrations"', f'migrations_dir = "{ROOT}/migrations"')
        for key, value in self.vars.items():
            # A string as a quoted TOML string; a bool or a number as written without quotes.
            bare = str(value).lower() if isinstance(value, bool) else str(value)
            line = f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {bare}"
            text, n = re.subn(rf"^{key} = .*$", line, text, flags=re.M)
            if n == 0:
                text = text.replace("[vars]\n", f"[vars]\n{line}\n")
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "wrangler.toml").write_text(text)
        dev_vars = self.config_dir / ".dev.vars"
        if self.token is None:
            dev_vars.unlink(missing_ok=True)
        else:
            dev_vars.write_text(f"ADMIN_TOKEN={self.token}\n")

    def wrangler(self, *args: str, timeout: int = 300) -> str:
        self.history = None  # whatever the command does, the state is no longer a set-up's
        cmd = [str(BIN / "wrangler"), *args, "--config", str(self.config_dir / "wrangler.toml")]
        r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
        return r.stdout

    def migrate(self) -> None:
        self._set_up(("migrate", migrations_digest()), lambda: self.wrangler(
            "d1", "migrations", "apply", "DB", "--local", "--persist-to", str(self.persist)))

    def seed(self, date: str, count: int) -> None:
        migrated = self.history is not None and any(step[0] == "migrate" for step in self.history)

        def run() -> None:
            subprocess.run([str(ROOT / "scripts" / "prepare-data"), "--count", str(count), "--date", date,
                            "--persist-to", str(self.persist), *(["--migrated"] if migrated else [])],
                           env=env(), check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=600)

        if count > TEMPLATE_MAX_ROWS:
            self.history = None
        self._set_up(("seed", date, count), run)

    def execute(self, sql: str) -> None:
        self.wrangler("d1", "execute", "DB", "--local", "--persist-to", str(self.persist), "--command", sql)

    def _set_up(self, step: tuple, run) -> None:
        """Runs a set-up step, or, when a state made by the same steps from nothing is kept,
        copies it instead."""
        if self.history is None:
            run()
            return
        key = self.history + (step,)  # `run` may clear `history`: it is set again below
        if (kept := TEMPLATES.get(key)) is not None:
            shutil.rmtree(self.persist, ignore_errors=True)
            shutil.copytree(kept, self.persist)
        else:
            run()
            TEMPLATES.keep(key, self.persist)
        self.history = key

    # -- processes ----------------------------------------------------------------------------
    def start(self) -> "LocalWorker":
        self.history = None
        self.port = free_port()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "wrangler"), "dev", "--config", str(self.config_dir / "wrangler.toml"),
             "--port", str(self.port), "--ip", "127.0.0.1", "--persist-to", str(self.persist),
             "--inspector-port", str(free_port())],
            env=env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wrangler dev exited: {self.log_path.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2)
            except urllib.error.HTTPError:
                return self  # the Worker answered (404 outside /admin/)
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"wrangler dev did not come up: {self.log_path.read_text()[-3000:]}")

    def workerd_pids(self) -> list[int]:
        """The workerd processes of this `wrangler dev` (its process group)."""
        pids = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                stat = (p / "stat").read_text()
                comm = stat[stat.index("(") + 1: stat.rindex(")")]
                pgrp = int(stat[stat.rindex(")") + 2:].split()[2])
            except (OSError, ValueError):
                continue
            if pgrp == self.proc.pid and comm.startswith("workerd"):
                pids.append(int(p.name))
        return pids

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        self.proc = None

    # -- HTTP ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, token: str | None = "default", headers: dict | None = None, timeout: float = 60):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        tok = self.token if token == "default" else token
        if tok is not None:
            req.add_header("Authorization", f"Bearer {tok}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def api(self, method: str, path: str, **kw):
        status, _, body = self.request(method, path, **kw)
        try:
            return status, json.loads(body)
        except json.JSONDecodeError:
            raise AssertionError(f"{method} {path} -> {status}, not JSON: {body[:300]!r}")

    def sql(self, statement: str) -> int:
        """Runs one statement on D1 through the Worker (a test hook: needs TEST_HOOKS=1)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/admin/test/sql", data=statement.encode(), method="POST")
        req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["changes"]

    def keys(self, prefix: str = "") -> list:
        """Object keys in the bucket (test hook)."""
        code, body = self.api("GET", f"/admin/test/list?prefix={urllib.parse.quote(prefix)}")
        assert code == 200, body
        return body["keys"]

    def flip_byte(self, key: str, at: float, mask: int) -> None:
        """Damages an object in the local R2 (through wrangler, as an outside writer would):
        the byte at fraction `at` of its length is XORed with `mask`."""
        path = self.workdir / "flipped.bin"
        bucket = ["--local", "--persist-to", str(self.persist), "--file", str(path)]
        self.wrangler("r2", "object", "get", f"traffic-archive/{key}", *bucket)
        data = bytearray(path.read_bytes())
        data[int(len(data) * at)] ^= mask
        path.write_bytes(bytes(data))
        self.wrangler("r2", "object", "put", f"traffic-archive/{key}", *bucket)
        path.unlink()

    def cron(self) -> None:
        status, _, body = self.request("GET", "/cdn-cgi/handler/scheduled?cron=17+3+*+*+*", token=None)
        assert status == 200, body

    def status(self, date: str) -> dict:
        code, body = self.api("GET", f"/admin/archive-status?date={date}")
        assert code == 200, body
        return body["status"]

    def wait_until(self, date: str, cond, while_in: tuple | None = ("idle", "exporting"), timeout: float = 300,
                   every: float = 0.01) -> dict:
        """Polls the status until `cond(status)` holds. With `while_in`, the date must stay in one
        of those phases meanwhile (anything else fails at once)."""
        deadline = time.time() + timeout
        while not cond(st := self.status(date)):
            assert while_in is None or st["phase"] in while_in, st
            if time.time() > deadline:
                raise AssertionError(f"{date} stuck in {st['phase']}: {json.dumps(st)[:2000]}")
            time.sleep(every)
        return st

    def archive(self, date: str, until: set = frozenset({"cleaned", "failed"}), force: bool = False) -> dict:
        """Triggers `date` and waits until it reaches one of the phases `until`."""
        code, body = self.api("POST", f"/admin/trigger-archive?date={date}" + ("&force=1" if force else ""))
        assert code == 202, body
        return self.wait_for(date, until)

    def wait_for(self, date: str, phases: set, timeout: float = 300) -> dict:
        """Polls the status until the date is in one of `phases`."""
        return self.wait_until(date, lambda st: st["phase"] in phases, while_in=None, timeout=timeout, every=0.25)

    # -- D1's SQLite file, read directly (exact integers, no JavaScript in between) ------------
    def sqlite_file(self) -> Path:
        self.history = None  # the caller may write to it
        files = [p for p in (self.persist / "v3" / "d1").rglob("*.sqlite") if p.name != "metadata.sqlite"]
        assert len(files) == 1, files
        return files[0]

    def query(self, sql: str, *params):
        con = sqlite3.connect(f"file:{self.sqlite_file()}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def rows(self, date: str) -> dict:
        out = {}
        for r in self.query(f"SELECT {', '.join(COLUMNS)} FROM traffic_events WHERE event_date = ?", date):
            out[r[0]] = dict(zip(COLUMNS, r))
        return out

    def count(self, date: str) -> int:
        return self.query("SELECT count(*) FROM traffic_events WHERE event_date = ?", date)[0][0]

    def metadata(self, date: str) -> dict:
        con = sqlite3.connect(f"file:{self.sqlite_file()}?mode=ro", uri=True, timeout=30)
        con.row_factory = sqlite3.Row
        try:
            r = con.execute("SELECT * FROM archive_metadata WHERE date = ?", (date,)).fetchone()
            return dict(r) if r else {}
        finally:
            con.close()

    def archive_rows(self, date: str, generation: int | None = None) -> list:
        q = f"/admin/archive?date={date}" + (f"&generation={generation}" if generation else "")
        status, headers, body = self.request("GET", q)
        assert status == 200, body[:500]
        assert headers.get("Content-Type") == "application/gzip"
        assert int(headers["Content-Length"]) == len(body), headers
        text = single_member_gunzip(body).decode("utf-8")
        return [json.loads(line) for line in text.splitlines()]

    def parquet_files(self, date: str, generation: int | None = None) -> list:
        """(file as the status lists it, its bytes) for every Parquet file of a generation
        (the newest by default), each fetched through the admin API."""
        gens = self.status(date)["generations"]
        gen = gens[-1] if generation is None else next(g for g in gens if g["generation"] == generation)
        out = []
        for f in gen["parquet"]:
            q = f"/admin/archive?date={date}&generation={gen['generation']}&format=parquet&file={f['file']}"
            status, _, body = self.request("GET", q)
            assert status == 200, body[:500]
            out.append((f, body))
        return out


def merged(record: dict) -> dict:
    """A Parquet row as the JSONL line it came from: BLOBs are kept as binary in the map
    `_blobs`, values of another SQLite type than their column's in `_other_types` (their own
    column holds NULL or the type's zero). pyarrow reads a map as (key, value) pairs, DuckDB as
    a dict."""
    other = record.pop("_other_types")
    record.update(json.loads(other) if other else {})
    blobs = record.pop("_blobs", None) or []
    if isinstance(blobs, dict):
        blobs = zip(blobs["key"], blobs["value"]) if set(blobs) == {"key", "value"} else blobs.items()
    for column, value in blobs:
        record[column] = {"$blob": bytes(value).hex().upper()}
    return {c: record[c] for c in COLUMNS}


def parquet_lines(data: bytes) -> list:
    """The rows of one Parquet file (read with pyarrow) as JSONL lines."""
    import io

    import pyarrow.parquet as pq

    return [merged(r) for r in pq.read_table(io.BytesIO(data)).to_pylist()]


def assert_same_rows(archived: list, expected: dict) -> None:
    """Every expected row exactly once, every column equal, columns in table order."""
    seen = {}
    for row in archived:
        assert list(row.keys()) == COLUMNS, list(row.keys())
        assert row["id"] not in seen, f"row {row['id']} archived twice"
        seen[row["id"]] = row
    missing = expected.keys() - seen.keys()
    extra = seen.keys() - expected.keys()
    assert not missing, f"{len(missing)} rows missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} unexpected rows, e.g. {sorted(extra)[:3]}"
    for rid, want in expected.items():
        got = seen[rid]
        for col in COLUMNS:
            assert got[col] == want[col] and type(got[col]) is type(want[col]), (
                f"row {rid} column {col}: archived {got[col]!r}, D1 had {want[col]!r}"
            )
