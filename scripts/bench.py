"""scripts/bench's body. One fresh local state per size; for each size:

1. the native floor: examples/floor.rs over the same SQLite file (before anything ran);
2. the naive baseline (sizes up to --naive-max): a fresh Worker, LIMIT/OFFSET, all in memory;
3. ours: a fresh Worker, the real archive run to Cleaned (export, read-back verification,
   cleaning), measured from its own status; then windows of the day read in place (1 min,
   5 min, 1 h, the whole day); then a restore of the day, measured the same way;
4. before ours, the same export with PARQUET=true in a fresh Worker (export time, memory, bytes
   per row), DuckDB over its Parquet files against the .jsonl.gz, then a reset.
"""

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localworker import ROOT, LocalWorker, single_member_gunzip  # noqa: E402

MIB = 1048576


def rss(worker: LocalWorker, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of the worker's workerd processes, bytes."""
    total = 0
    for pid in worker.workerd_pids():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1]) * 1024
    return total


def wrangler_var(name: str) -> str:
    """A var's value in wrangler.toml, so the floor runs with the Worker's own settings."""
    m = re.search(rf'^{name} = "([^"]*)"', (ROOT / "wrangler.toml").read_text(), flags=re.M)
    return m.group(1)


def floor(sqlite: Path, date: str) -> dict:
    out = subprocess.run([str(ROOT / "target" / "release" / "examples" / "floor"), str(sqlite), date,
                          wrangler_var("PAGE_ROWS"), wrangler_var("COMPRESSION_LEVEL")],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def run_naive(workdir: Path, date: str, token: str) -> dict:
    w = LocalWorker(workdir, token=token, vars={"TEST_HOOKS": "1"})
    w.start()
    try:
        t = time.time()
        try:
            code, body = w.api("POST", f"/admin/bench/naive?date={date}", timeout=900)
        except Exception as e:  # the isolate died or the connection broke
            return {"died": f"{type(e).__name__}: {e}"[:200], "seconds": time.time() - t, "rss_peak": rss(w, "VmHWM")}
        if code != 200:
            return {"died": f"HTTP {code}: {json.dumps(body)[:200]}", "seconds": time.time() - t, "rss_peak": rss(w, "VmHWM")}
        body["rss_peak"] = rss(w, "VmHWM")
        return body
    finally:
        w.stop()


def secs(a, b) -> float:
    return (b - a) / 1000 if a is not None and b is not None else float("nan")


def archive_run(w: LocalWorker, date: str, rows: int) -> dict:
    """Archives the date to Cleaned; phase times come from the Worker's own clock."""
    t0 = time.time()
    st = w.archive(date)
    wall = time.time() - t0
    assert st["phase"] == "cleaned" and st["rows_pending"] == 0, st
    code, headers, blob = w.request("GET", f"/admin/archive?date={date}")
    assert code == 200
    jsonl = single_member_gunzip(blob)
    assert jsonl.count(b"\n") == rows
    gz6 = zlib.compressobj(6, zlib.DEFLATED, 31)
    gzip6 = len(gz6.compress(jsonl) + gz6.flush())
    s = st["stats"]
    return {
        "wall_s": wall,
        "export_s": secs(s["export_started_ms"], s["exported_at_ms"]),
        "verify_s": secs(s["exported_at_ms"], s["verified_at_ms"]),
        "clean_s": secs(s["clean_started_ms"], s["cleaned_at_ms"]),
        "total_s": secs(s["export_started_ms"], s["cleaned_at_ms"]),
        "steps": s["steps"], "longest_step_ms": s["longest_step_ms"], "max_buffer": s["max_buffer_bytes"],
        "peak_wasm": st["peak_wasm_memory_bytes"],
        "bytes": len(blob), "jsonl_bytes": len(jsonl), "gzip6_bytes": gzip6, "pieces": st["pieces"],
        "export_rows_read": s["export_rows_read"], "clean_rows_read": s["clean_rows_read"],
        "rows_deleted": st["rows_deleted"], "parts": st["parts_uploaded"],
        "page_wait_ms": s.get("page_wait_ms", 0), "encode_ms": s.get("encode_ms", 0),
        "export_sql_s": s["export_sql_us"] / 1e6, "clean_sql_s": s["clean_sql_us"] / 1e6,
    }


def window(w: LocalWorker, date: str, minutes: int | None) -> dict:
    """Reads a window starting 14:00 UTC (or the whole day) in place: bytes read, first byte."""
    q = f"/admin/events?date={date}"
    if minutes is not None:
        start = int(dt.datetime.fromisoformat(date + "T14:00:00+00:00").timestamp() * 1000)
        q += f"&from={start}&to={start + minutes * 60_000}"
    req = urllib.request.Request(f"http://127.0.0.1:{w.port}{q}", headers={"Authorization": f"Bearer {w.token}"})
    t = time.time()
    with urllib.request.urlopen(req, timeout=900) as r:
        first = r.read(1)
        first_ms = (time.time() - t) * 1000
        rest = r.read()
        read, total = (int(x) for x in r.headers["x-archive-bytes"].split(" of "))
    lines = (first + rest).count(b"\n")
    return {"lines": lines, "read": read, "total": total, "first_byte_ms": first_ms, "seconds": time.time() - t}


def restore_run(w: LocalWorker, date: str, rows: int) -> dict:
    code, body = w.api("POST", f"/admin/restore?date={date}")
    assert code == 202, body
    st = w.wait_for(date, {"restored", "failed"}, timeout=1800)
    assert st["phase"] == "restored" and st["restore"]["inserted"] == rows, st
    assert w.count(date) == rows
    s = st["stats"]
    return {"restore_s": secs(s["restore_started_ms"], s["restored_at_ms"]), "restore_sql_s": s["restore_sql_us"] / 1e6,
            "peak_wasm": st["peak_wasm_memory_bytes"],
            "restore_rows_read": s["restore_rows_read"]}


def run_parquet_on(workdir: Path, date: str, rows: int, token: str) -> dict:
    """The export with PARQUET=true, on the same D1 state as ours (a fresh Worker, its own
    memory figure), DuckDB over what it wrote; then a reset (nothing was deleted, the rows stay
    for our run)."""
    w = LocalWorker(workdir, token=token, vars={"PARQUET": "true", "AUTO_CLEANUP": "false"})
    w.start()
    try:
        st = w.archive(date, until={"uploaded", "failed"})
        assert st["phase"] == "uploaded" and st["rows_exported"] == rows, st
        s, files = st["stats"], st["generations"][-1]["parquet"]
        assert sum(f["rows"] for f in files) == rows
        out = {"export_s": secs(s["export_started_ms"], s["exported_at_ms"]), "peak_wasm": st["peak_wasm_memory_bytes"],
               "bytes": st["bytes_uploaded"], "parquet_files": len(files), "parquet_bytes": sum(f["bytes"] for f in files)}
        lake = workdir / "lake"
        out["duckdb"] = duckdb_queries(*download_day(w, date, lake), date)
        shutil.rmtree(lake, ignore_errors=True)
        code, body = w.api("POST", f"/admin/reset?date={date}")
        assert code == 200 and w.count(date) == rows, body
        return out
    finally:
        w.stop()


def download_day(w: LocalWorker, date: str, folder: Path) -> tuple:
    """The day's JSONL object and Parquet files as a hive folder (`event_date=D/`) on disk."""
    day = folder / f"event_date={date}"
    day.mkdir(parents=True, exist_ok=True)
    code, _, blob = w.request("GET", f"/admin/archive?date={date}")
    assert code == 200
    (day / "0001.jsonl.gz").write_bytes(blob)
    for f, data in w.parquet_files(date):
        (day / f["key"].rsplit("/", 1)[1]).write_bytes(data)
    return day / "0001.jsonl.gz", f"{folder}/*/*.parquet"


def duckdb_queries(jsonl: Path, parquet_glob: str, date: str) -> dict:
    """Two questions a person asks of a day, on DuckDB: best of 3 over the .jsonl.gz, and over
    the Parquet files; the answers must agree."""
    import duckdb

    start = int(dt.datetime.fromisoformat(date + "T14:00:00+00:00").timestamp() * 1000)
    sources = {"jsonl": f"read_json('{jsonl}', format = 'newline_delimited')",
               "parquet": f"read_parquet('{parquet_glob}', hive_partitioning = true)"}
    queries = {"errors by path": "SELECT path, count(*) FROM {src} WHERE status >= 500 GROUP BY 1 ORDER BY 1",
               "one hour": f"SELECT count(*), sum(response_time) FROM {{src}} WHERE timestamp >= {start} AND timestamp < {start + 3_600_000}"}
    out = {}
    con = duckdb.connect()
    for name, q in queries.items():
        answers, times = {}, {}
        for fmt, src in sources.items():
            best = float("inf")
            for _ in range(3):
                t = time.time()
                answers[fmt] = con.sql(q.format(src=src)).fetchall()
                best = min(best, time.time() - t)
            times[fmt] = best
        assert answers["jsonl"][0][0] == answers["parquet"][0][0] and len(answers["jsonl"]) == len(answers["parquet"]), (name, answers)
        out[name] = times
    return out


def run_ours(workdir: Path, date: str, rows: int, token: str) -> dict:
    w = LocalWorker(workdir, token=token)
    w.start()
    try:
        time.sleep(1)
        out = {"rss_start": rss(w, "VmRSS")}
        out.update(archive_run(w, date, rows))
        out["windows"] = {label: window(w, date, m) for label, m in (("1 min", 1), ("5 min", 5), ("1 h", 60), ("day", None))}
        out["restore"] = restore_run(w, date, rows)
        out["rss_peak"] = rss(w, "VmHWM")
        return out
    finally:
        w.stop()


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")) / 1048576
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="100000,1000000,5000000")
    p.add_argument("--naive-max", type=int, default=1_000_000)
    p.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    token = "bench-token"
    date = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=10)).isoformat()
    # Other dates inside the retention window: nothing may touch them.
    others = [(dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=d)).isoformat() for d in (1, 2)]
    results = {}
    for n in sizes:
        base = ROOT / ".wrangler" / "bench" / str(n)
        shutil.rmtree(base, ignore_errors=True)
        seeder = LocalWorker(base, token=token)
        seeder.migrate()
        t = time.time()
        seeder.seed(date, n)
        for o in others:
            seeder.seed(o, 10_000)
        print(f"[{n:,}] seeded in {time.time() - t:.1f} s", flush=True)
        fl = floor(seeder.sqlite_file(), date)
        print(f"[{n:,}] floor: {fl['rows_per_s']:,.0f} rows/s", flush=True)
        naive = run_naive(base, date, token) if n <= a.naive_max else None
        if naive:
            print(f"[{n:,}] naive: {json.dumps(naive)}", flush=True)
        on = run_parquet_on(base, date, n, token)
        print(f"[{n:,}] PARQUET=true: {json.dumps(on)}", flush=True)
        ours = run_ours(base, date, n, token)
        ours["parquet_on"] = on
        untouched = all(seeder.count(o) == 10_000 for o in others)
        print(f"[{n:,}] ours: {json.dumps(ours)}", flush=True)
        results[n] = {"floor": fl, "naive": naive, "ours": ours, "others_untouched": untouched}
        shutil.rmtree(base, ignore_errors=True)
    text = report(results, sizes, a)
    print(text)
    if not a.no_write:
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "benchmarks.md").write_text(text)
        print("wrote docs/benchmarks.md")
    return 0


def section(title: str, header: str) -> list:
    """A report section: its heading and a table header, every column but the text ones right-aligned."""
    columns = [c.strip() for c in header.strip("|").split("|")]
    align = ["---" if c in ("window", "target", "measured", "verdict") else "---:" for c in columns]
    return ["", f"## {title}", "", header, "|" + "|".join(align) + "|"]


def report(results: dict, sizes: list, a) -> str:
    mib = lambda b: f"{b / MIB:.1f} MiB"
    cmd = "scripts/bench" + (f" --sizes {a.sizes}" if a.sizes != "100000,1000000,5000000" else "")
    out = [
        "# Benchmarks",
        "",
        f"Measured by `{cmd}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, on {machine()}.",
        "Everything ran on local workerd through `wrangler dev` (real SQLite-backed D1, R2 and Durable",
        "Objects with alarms), default vars from wrangler.toml. Figures within a row come from one run,",
        "side by side; the machine is shared and noisy, so compare ratios rather than absolutes. Phase",
        "times come from the Worker's own clock (its status), wall time from the benchmark's. In brackets,",
        "D1's own time running the phase's statements (the sum of its `meta.duration`); the rest is the",
        "Worker, R2 and the way between them, which local workerd runs on the same thread.",
        "",
        "## Archive: export, read-back verification, cleaning",
        "",
        "| rows | export (D1 running SQL) | verify | clean (D1 running SQL) | total (Worker) | wall | steps | longest step | peak wasm memory | workerd RSS start → peak | bytes/row | pieces | size vs gzip -6 | D1 rows read / archived row (export) | D1 rows read / deleted row (cleaning) | other dates untouched |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--:|",
    ]
    for n in sizes:
        o, r = results[n]["ours"], results[n]
        out.append(
            f"| {n:,} | {o['export_s']:.1f} s ({o['export_sql_s']:.1f} s) | {o['verify_s']:.1f} s | {o['clean_s']:.1f} s ({o['clean_sql_s']:.1f} s) | "
            f"{o['total_s']:.1f} s | {o['wall_s']:.1f} s | "
            f"{o['steps']} | {o['longest_step_ms'] / 1000:.1f} s | {mib(o['peak_wasm'])} | {mib(o['rss_start'])} → {mib(o['rss_peak'])} | "
            f"{o['bytes'] / n:.1f} | {o['pieces']} | {o['bytes'] / o['gzip6_bytes']:.3f} | {o['export_rows_read'] / n:.3f} | "
            f"{o['clean_rows_read'] / max(1, o['rows_deleted']):.3f} | {'yes' if r['others_untouched'] else 'NO'} |"
        )
    out += section("Side by side: native floor and naive baseline", "| rows | ours: export rows/s | floor rows/s | ours / floor | ours: export time waiting for D1 / encoding+compressing+uploading | naive: time | naive: peak wasm memory | naive: workerd RSS peak | naive: D1 rows read / row | ours: peak wasm memory |")
    for n in sizes:
        o, f, nv = results[n]["ours"], results[n]["floor"], results[n]["naive"]
        ours_rate = n / o["export_s"]
        if nv is None:
            naive_cols = "not run | | |"
        elif "died" in nv:
            naive_cols = f"died after {nv['seconds']:.0f} s ({nv['died']}) | | {mib(nv['rss_peak'])} |"
        else:
            naive_cols = f"{nv['seconds']:.1f} s | {mib(nv['peak_wasm_memory_bytes'])} | {mib(nv['rss_peak'])} | {nv['d1_rows_read'] / max(1, nv['rows']):.1f}"
        split = f"{o['page_wait_ms'] / 1000:.1f} s / {o['encode_ms'] / 1000:.1f} s of {o['export_s']:.1f} s"
        out.append(f"| {n:,} | {ours_rate:,.0f} | {f['rows_per_s']:,.0f} | {ours_rate / f['rows_per_s']:.0%} | {split} | {naive_cols} | {mib(o['peak_wasm'])} |")
    out += section("Restore, and reading windows in place", "| rows | restore (D1 running SQL) | restore rows/s | peak wasm memory after restore | D1 rows read / restored row | window | lines | bytes read of the object | share | first byte |")
    for n in sizes:
        o = results[n]["ours"]
        rs = o["restore"]
        first = True
        for label, wnd in o["windows"].items():
            lead = (f"| {n:,} | {rs['restore_s']:.1f} s ({rs['restore_sql_s']:.1f} s) | {n / rs['restore_s']:,.0f} | {mib(rs['peak_wasm'])} | {rs['restore_rows_read'] / n:.2f} "
                    if first else "| | | | | ")
            first = False
            out.append(lead + f"| {label} | {wnd['lines']:,} | {wnd['read']:,} of {wnd['total']:,} | {wnd['read'] / wnd['total']:.2%} | {wnd['first_byte_ms']:.0f} ms |")
    out += section("Parquet beside the JSONL (an export with PARQUET=true against ours, PARQUET=false, same D1 state)", "| rows | export, PARQUET=false | export, PARQUET=true | ratio | peak wasm memory off → on | files | Parquet bytes/row | .jsonl.gz bytes/row | Parquet / .jsonl.gz | DuckDB errors by path: .jsonl.gz → Parquet | speed-up | DuckDB one hour: .jsonl.gz → Parquet | speed-up |")
    for n in sizes:
        off = results[n]["ours"]
        o = off["parquet_on"]
        q = o["duckdb"]
        e, h = q["errors by path"], q["one hour"]
        out.append(
            f"| {n:,} | {off['export_s']:.1f} s | {o['export_s']:.1f} s | {o['export_s'] / off['export_s']:.2f}× | "
            f"{mib(off['peak_wasm'])} → {mib(o['peak_wasm'])} | {o['parquet_files']} | {o['parquet_bytes'] / n:.1f} | {o['bytes'] / n:.1f} | "
            f"{o['parquet_bytes'] / o['bytes']:.2f}× | {e['jsonl'] * 1000:.0f} → {e['parquet'] * 1000:.0f} ms | {e['jsonl'] / e['parquet']:.0f}× | "
            f"{h['jsonl'] * 1000:.0f} → {h['parquet'] * 1000:.0f} ms | {h['jsonl'] / h['parquet']:.0f}× |")
    out += section("Targets", "| target | measured | verdict |")
    big, small = results[sizes[-1]]["ours"], results[sizes[0]]["ours"]
    checks = []
    checks.append((f"peak wasm memory at {sizes[-1]:,} rows ≤ 16 MiB and within 10% of {sizes[0]:,} (export, verification, cleaning)",
                   f"{mib(big['peak_wasm'])} vs {mib(small['peak_wasm'])}",
                   big["peak_wasm"] <= 16 * MIB and big["peak_wasm"] <= 1.10 * small["peak_wasm"]))
    worst_clean = max(results[n]["ours"]["clean_rows_read"] / max(1, results[n]["ours"]["rows_deleted"]) for n in sizes)
    checks.append(("D1 rows read per deleted row ≤ 1.1", f"{worst_clean:.3f} (worst size)", worst_clean <= 1.1))
    worst_read = max(results[n]["ours"]["export_rows_read"] / n for n in sizes)
    checks.append(("D1 rows read per archived row ≤ 1.05 (export scan)", f"{worst_read:.3f} (worst size)", worst_read <= 1.05))
    longest = max(results[n]["ours"]["longest_step_ms"] for n in sizes) / 1000
    checks.append(("longest step ≤ 10 s wall", f"{longest:.1f} s", longest <= 10))
    worst_size = max(results[n]["ours"]["bytes"] / results[n]["ours"]["gzip6_bytes"] for n in sizes)
    checks.append(("archive size ≤ 1.00 × gzip -6 of the same JSONL", f"{worst_size:.3f}×", worst_size <= 1.00))
    worst_frac = min((n / results[n]["ours"]["export_s"]) / results[n]["floor"]["rows_per_s"] for n in sizes)
    checks.append(("export throughput ≥ 50% of the native floor", f"{worst_frac:.0%} (worst size)", worst_frac >= 0.5))
    if 1_000_000 in results:
        o = results[1_000_000]["ours"]
        checks.append(("1M rows archived, verified by read-back and cleaned ≤ 20 s",
                       f"{o['total_s']:.1f} s (export {o['export_s']:.1f} + verify {o['verify_s']:.1f} + clean {o['clean_s']:.1f})", o["total_s"] <= 20))
        r = o["restore"]
        checks.append(("restore of a 1M-row day ≤ 30 s", f"{r['restore_s']:.1f} s", r["restore_s"] <= 30))
    peak_restore = max(results[n]["ours"]["restore"]["peak_wasm"] for n in sizes)
    checks.append(("peak wasm memory with restores ≤ 16 MiB, flat", f"{mib(peak_restore)} (worst size)", peak_restore <= 16 * MIB))
    if 5_000_000 in results:
        wnd = results[5_000_000]["ours"]["windows"]["5 min"]
        checks.append(("a 5-minute window of a 5M-row day reads ≤ 1% of the object", f"{wnd['read'] / wnd['total']:.2%}", wnd["read"] <= wnd["total"] / 100))
        checks.append(("… and its first byte comes in ≤ 300 ms", f"{wnd['first_byte_ms']:.0f} ms", wnd["first_byte_ms"] <= 300))
    pq = {n: results[n]["ours"]["parquet_on"] for n in sizes}
    worst_pq = max(pq[n]["parquet_bytes"] / pq[n]["bytes"] for n in sizes)
    checks.append(("Parquet bytes ≤ 0.6 × the .jsonl.gz of the same day", f"{worst_pq:.2f}× (worst size)", worst_pq <= 0.6))
    checks.append((f"peak wasm memory with Parquet on at {sizes[-1]:,} rows ≤ 24 MiB, flat from {sizes[0]:,} (within 10%)",
                   f"{mib(pq[sizes[-1]]['peak_wasm'])} vs {mib(pq[sizes[0]]['peak_wasm'])}",
                   pq[sizes[-1]]["peak_wasm"] <= 24 * MIB and pq[sizes[-1]]["peak_wasm"] <= 1.10 * pq[sizes[0]]["peak_wasm"]))
    if 1_000_000 in results:
        o, on = results[1_000_000]["ours"], pq[1_000_000]
        with_pq = on["export_s"] + o["verify_s"] + o["clean_s"]
        checks.append(("1M rows with Parquet on: export (Parquet) + verify + clean ≤ 20 s", f"{with_pq:.1f} s", with_pq <= 20))
    q = pq[sizes[-1]]["duckdb"]
    worst_q = min(t["jsonl"] / t["parquet"] for t in q.values())
    checks.append((f"DuckDB on Parquet ≥ 10× faster than on .jsonl.gz ({sizes[-1]:,} rows, both queries)",
                   ", ".join(f"{k} {t['jsonl'] / t['parquet']:.0f}×" for k, t in q.items()), worst_q >= 10))
    for name, got, ok in checks:
        out.append(f"| {name} | {got} | {'pass' if ok else '**miss**'} |")
    out.append("")
    notes = ROOT / "docs" / "benchmarks-notes.md"
    if notes.exists():
        out += ["", notes.read_text()]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
