"""scripts/profile's body: where workerd's one busy thread spends one phase of a seeded day.

Seeds a day once into a template state (kept under .wrangler/, reused by later runs of the
same size), copies it, starts the Worker with V8's `--perf-basic-prof` (so wasm functions keep
their Rust names in perf's samples), runs one phase under `perf record`, and prints the shares
of the samples by kind and the Worker's hottest wasm functions, with workerd's CPU seconds.

Not a benchmark: perf costs a few percent, and a phase's time here is not the bench's. It says
where the time goes; `scripts/bench` says how much there is.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localworker import ROOT, LocalWorker, migrations_digest  # noqa: E402

DATE = "2026-01-05"
KINDS = [
    # (kind, test on the sample's innermost frame and its whole stack), first match wins.
    ("wasm: deflate (zlib-rs)", lambda top, _: top.startswith("JS:zlib_rs")),
    ("wasm: inflate (miniz_oxide)", lambda top, _: top.startswith("JS:miniz_oxide")),
    ("wasm: CRC-32", lambda top, _: top.startswith("JS:crc32fast")),
    ("wasm: Parquet", lambda top, _: top.startswith(("JS:parquet", "JS:<parquet", "JS:<T as ahash"))),
    ("wasm: the rest", lambda top, _: top.startswith("JS:") and "::" in top),
    ("JavaScript (D1 client and server, wasm-bindgen glue)", lambda top, _: top.startswith(("JS:", "Builtins_"))),
    ("SQLite (under sqlite3_step)", lambda _, stack: "sqlite3_step" in stack or "sqlite3Prepare" in stack),
    ("V8 converting strings to and from UTF-8", lambda top, _: re.search(r"Utf8|ucnv_|unibrow", top)),
    ("V8's JSON parser and serializer", lambda top, _: "Json" in top),
    ("memcpy, memmove, memcmp outside SQLite", lambda top, _: re.search(r"mem(move|cpy|cmp|set)", top)),
    ("the kernel and everything else", lambda _top, _stack: True),
]


def template(rows: int, phase: str) -> Path:
    """A state with the day seeded (and, for cleaning, archived up to `uploaded`), kept for
    today's migrations: a template of older ones is removed and seeded again."""
    name = f"profile-{rows}-{phase}"
    path = ROOT / ".wrangler" / f"{name}-{migrations_digest()[:12]}"
    if (path / "ready").exists():
        return path
    for old in (ROOT / ".wrangler").glob(f"{name}*"):
        shutil.rmtree(old, ignore_errors=True)
    w = LocalWorker(path, vars={"AUTO_CLEANUP": "false"})
    w.migrate()
    w.seed(DATE, rows)
    if phase == "clean":
        w.start()
        try:
            st = w.archive(DATE, until={"uploaded", "failed"})
            assert st["phase"] == "uploaded", st
        finally:
            w.stop()
    (path / "ready").write_text("")
    return path


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def samples(perf_data: Path):
    """Each sample's stack, innermost frame first, as symbol names."""
    text = subprocess.run(["perf", "script", "-i", str(perf_data), "-F", "tid,ip,sym"],
                          capture_output=True, text=True, errors="replace").stdout
    for block in text.split("\n\n"):
        # A sample: its thread id on the first line, then one indented `ip symbol` per frame.
        frames = [line.split(None, 1)[1] for line in block.splitlines()[1:] if len(line.split(None, 1)) == 2]
        if frames:
            yield frames


def report(perf_data: Path, top: int) -> None:
    kinds, functions, n = collections.Counter(), collections.Counter(), 0
    for frames in samples(perf_data):
        n += 1
        stack = " ".join(frames)
        kind = next(k for k, test in KINDS if test(frames[0], stack))
        kinds[kind] += 1
        if kind.startswith("wasm"):
            name = re.sub(r"-\d+-(turbofan|liftoff|maglev)$", "", frames[0][3:])  # V8's tier
            functions[re.sub(r"::h[0-9a-f]{16}$|\[[0-9a-f]{16}\]", "", name)] += 1
    print(f"\n{n:,} samples\n\n| share of the samples | kind |\n|---:|---|")
    for kind, _ in KINDS:
        print(f"| {100 * kinds[kind] / n:.1f}% | {kind} |")
    print("\n| share | wasm function |\n|---:|---|")
    for name, count in functions.most_common(top):
        print(f"| {100 * count / n:.2f}% | `{name[:100]}` |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phase", choices=["export", "clean"], default="clean",
                   help="export: export and verification of the day; clean: its cleaning")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--parquet", action="store_true", help="export with PARQUET=true")
    p.add_argument("--top", type=int, default=15, help="wasm functions to list")
    a = p.parse_args()
    if shutil.which("perf") is None:
        print("perf not found: install Debian's linux-perf (apt-get install linux-perf)", file=sys.stderr)
        return 2
    source = template(a.rows, a.phase)
    work = ROOT / ".wrangler" / "profile-run"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work)
    os.environ["MINIFLARE_WORKERD_V8_FLAGS"] = "--perf-basic-prof"
    os.chdir(work)  # V8 writes its isolate logs into workerd's working directory
    w = LocalWorker(work, vars={"AUTO_CLEANUP": "false", "PARQUET": "true" if a.parquet else "false"})
    w.start()
    try:
        pids = w.workerd_pids()
        perf = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-o", str(work / "perf.data"),
                                 "-p", ",".join(map(str, pids))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        cpu, started = cpu_seconds(pids), time.time()
        if a.phase == "export":
            st = w.archive(DATE, until={"uploaded", "failed"})
        else:
            code, body = w.api("POST", f"/admin/trigger-cleanup?date={DATE}")
            assert code == 202, body
            st = w.wait_for(DATE, {"cleaned", "failed"})
        cpu, wall = cpu_seconds(pids) - cpu, time.time() - started
        perf.send_signal(signal.SIGINT)
        perf.wait()
    finally:
        w.stop()
    print(f"{a.phase} of {a.rows:,} rows{' with Parquet' if a.parquet else ''}: ended {st['phase']}, "
          f"{wall:.1f} s wall, workerd {cpu:.1f} CPU seconds (under perf)")
    report(work / "perf.data", a.top)
    return 0 if st["phase"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
