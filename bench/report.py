#!/usr/bin/env python3
"""Machine probe and report generator for bench/run (Python standard library only).

  report.py probe  --dir DIR --out machine.json
      Describes the machine and times 200 fdatasync'ed 4 KiB writes in DIR
      (the directory the benchmarks keep their stores in).
  report.py render --results DIR --out benchmarks.md [--quick]
      Turns DIR/machine.json and the Google benchmark JSON of every pass,
      DIR/append-N.json and DIR/read-N.json (or DIR/append.json and
      DIR/read.json), into the Markdown report.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

# ----------------------------------------------------------------- probe ---


def _cmd(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _fsync_probe(directory, count=200, size=4096, overwrite=False):
    """Times `count` writes of `size` bytes, each followed by fdatasync.

    Appending grows the file, so each fdatasync also commits the file's new
    size to the filesystem journal (like LMDB writing new pages past the end
    of its data file); overwriting a preallocated file only flushes the data
    (like LMDB's meta page, written in place through an O_DSYNC descriptor).
    """
    path = os.path.join(directory, "fsync-probe.tmp")
    block = os.urandom(size)
    lat = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if overwrite:
            os.write(fd, block * count)
            os.fsync(fd)
        for i in range(count):
            t0 = time.perf_counter()
            if overwrite:
                os.pwrite(fd, block, i * size)
            else:
                os.write(fd, block)
            os.fdatasync(fd)
            lat.append((time.perf_counter() - t0) * 1e6)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    return {
        "writes": count,
        "bytes": size,
        "mode": "overwrite" if overwrite else "append",
        "mean_us": statistics.fmean(lat),
        "p50_us": lat[len(lat) // 2],
        "p99_us": lat[min(len(lat) - 1, int(0.99 * (len(lat) - 1) + 0.5))],
        "max_us": lat[-1],
    }


def probe(args):
    d = args.dir
    if args.end:
        # After the benchmarks: the same probe again, next to the first one.
        with open(args.out) as f:
            machine = json.load(f)
        machine["fsync_end"] = _fsync_probe(d)
        machine["fsync_overwrite_end"] = _fsync_probe(d, overwrite=True)
        machine["loadavg_end"] = os.getloadavg()
        with open(args.out, "w") as f:
            json.dump(machine, f, indent=2)
        fs = machine["fsync_end"]
        print(f"fsync probe (end): p50 {fs['p50_us']:.0f} us, p99 {fs['p99_us']:.0f} us")
        return
    df = _cmd(["df", "-hT", d]).splitlines()
    dev = df[-1].split() if len(df) >= 2 else []
    du = shutil.disk_usage(d)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = _cmd(["git", "-C", root, "rev-parse", "--short", "HEAD"])
    dirty = _cmd(["git", "-C", root, "status", "--porcelain", "--", "engine", "schema", "bench"])
    machine = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit + (" + uncommitted changes" if dirty else ""),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "mem_bytes": _mem_total_bytes(),
        "kernel": platform.release(),
        "compiler": _cmd(["c++", "--version"]).splitlines()[0] if _cmd(["c++", "--version"]) else "",
        "lmdb": _cmd(["dpkg-query", "-W", "-f", "${Version}", "liblmdb0"]),
        "bench_dir": d,
        "loadavg": os.getloadavg(),
        "disk": {
            "device": dev[0] if dev else "",
            "fs": dev[1] if len(dev) > 1 else "",
            "size": dev[2] if len(dev) > 2 else "",
            "avail": dev[4] if len(dev) > 4 else "",
            "mount": dev[6] if len(dev) > 6 else "",
            "total_bytes": du.total,
        },
        "fsync": _fsync_probe(d),
        "fsync_overwrite": _fsync_probe(d, overwrite=True),
    }
    with open(args.out, "w") as f:
        json.dump(machine, f, indent=2)
    fs = machine["fsync"]
    fo = machine["fsync_overwrite"]
    print(f"fsync probe: 4 KiB write + fdatasync p50 {fs['p50_us']:.0f} us appending, "
          f"{fo['p50_us']:.0f} us overwriting (n={fs['writes']})")


# ---------------------------------------------------------------- render ---

_SUFFIX = re.compile(r"/(min_time:[0-9.]+|real_time|threads:\d+|iterations:\d+)")


def _key(name):
    return _SUFFIX.sub("", name)


def _load(paths):
    """Benchmarks of Google benchmark JSON files (one per pass of bench/run) by
    name, suffixes such as /min_time and /real_time dropped. Each benchmark is
    represented by its median run (by events/s) over all passes and
    repetitions; `repetitions`, `total_iterations` and `cv_events_per_s` (the
    coefficient of variation of events/s across runs) are added to it."""
    runs = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for b in data.get("benchmarks", []):
            if b.get("run_type", "iteration") == "iteration":
                runs.setdefault(_key(b.get("run_name", b["name"])), []).append(b)
    out = {}
    for key, rs in runs.items():
        errors = [r for r in rs if r.get("error_occurred")]
        if errors:
            out[key] = errors[0]
            continue
        rs = sorted(rs, key=lambda r: r.get("events_per_s", 0))
        b = dict(rs[(len(rs) - 1) // 2])  # the median run (lower median)
        b["repetitions"] = len(rs)
        b["total_iterations"] = sum(r["iterations"] for r in rs)
        rates = [r["events_per_s"] for r in rs if "events_per_s" in r]
        if len(rates) > 1 and statistics.fmean(rates) > 0:
            b["cv_events_per_s"] = statistics.stdev(rates) / statistics.fmean(rates)
            b["min_events_per_s"], b["max_events_per_s"] = min(rates), max(rates)
        out[key] = b
    return out


def _result_files(res, suite):
    """`suite`.json, or the per-pass files `suite`-N.json of a full run."""
    files = sorted(glob.glob(os.path.join(res, f"{suite}-*.json")))
    single = os.path.join(res, f"{suite}.json")
    if not files and os.path.exists(single):
        files = [single]
    return files


def _to_us(b, field="real_time"):
    scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[b.get("time_unit", "ns")]
    return b[field] * scale


def _rate(b):
    if not b or b.get("error_occurred"):
        return None
    return b.get("events_per_s")


def _fmt_rate(v):
    if v is None:
        return "n/a"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    return f"{v:,.0f}"


def _fmt_us(v):
    if v is None:
        return "—"
    if v >= 10000:
        return f"{v / 1000:.1f} ms"
    if v >= 100:
        return f"{v:.0f} µs"
    return f"{v:.1f} µs"


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def _fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}×"


APPEND_ROWS = [
    ("1 event per append", "BM_RillAppend/batch:1", "BM_LmdbAppend/batch:1"),
    ("10 events per append", "BM_RillAppend/batch:10", "BM_LmdbAppend/batch:10"),
    ("100 events per append", "BM_RillAppend/batch:100", "BM_LmdbAppend/batch:100"),
    ("1000 events per append", "BM_RillAppend/batch:1000", "BM_LmdbAppend/batch:1000"),
    ("16 threads, 1 event per append", "BM_RillConcurrent16", "BM_LmdbConcurrent16"),
]
READ_ROWS = [
    ("Read all: scan (views)", "BM_RillReadAll/scan", "BM_LmdbReadAll"),
    ("Read all: scan vs raw + XXH3 per value", "BM_RillReadAll/scan", "BM_LmdbReadAll/xxh3"),
    ("Read all: owning copies (pages of 4096)", "BM_RillReadAll/owned", "BM_LmdbReadAll"),
    ("Read one stream: scan (views)", "BM_RillReadStream/scan", "BM_LmdbReadStream"),
    ("Read one stream: owning copies", "BM_RillReadStream/owned", "BM_LmdbReadStream"),
]


def render(args):
    res = args.results
    machine = {}
    if os.path.exists(os.path.join(res, "machine.json")):
        with open(os.path.join(res, "machine.json")) as f:
            machine = json.load(f)
    b = {}
    b.update(_load(_result_files(res, "append")))
    b.update(_load(_result_files(res, "read")))
    b.update(_load(_result_files(res, "snapshot")))
    g = b.get

    def rate(k):
        return _rate(g(k))

    def counter(k, c):
        x = g(k)
        return None if not x or x.get("error_occurred") else x.get(c)

    out = []
    w = out.append
    w("# rill against raw LMDB: micro benchmarks")
    w("")
    w(f"Generated by `bench/run{' --quick' if args.quick else ''}` on "
      f"{machine.get('date', '?')} at commit `{machine.get('commit', '?')}`. "
      "Do not edit by hand: rerun `bench/run` (see *Reproduce*). The project's benchmark "
      "report is `docs/benchmarks.md`, written by `bench/compare` (rill against raw LMDB, "
      "SQLite and Message DB in one run); this one goes deeper into rill against raw LMDB "
      "(no-sync diagnostics, owning copies) for profiling work.")
    if args.quick:
        w("")
        w("**Quick run**: short minimum times and a 200k-event read log; figures are "
          "noisier than a full run's.")
    w("")
    w("rill is compared with **raw LMDB doing the same writes** (the ceiling: the same "
      "environment layout and puts, minus rill's envelope, checksums and checks), not with "
      "a peer store. Appends are **durable** on both sides (rill `Durability::kDurable`, "
      "LMDB flags 0: every commit is fsync'd).")

    # Machine.
    w("")
    w("## Machine")
    w("")
    fs = machine.get("fsync", {})
    disk = machine.get("disk", {})
    w("| | |")
    w("|---|---|")
    w(f"| CPU | {machine.get('cpu', '?')}, nproc = {machine.get('nproc', '?')} |")
    w(f"| Memory | {machine.get('mem_bytes', 0) / 2**30:.1f} GiB |")
    w(f"| Disk (bench dir) | `{disk.get('device', '?')}` {disk.get('fs', '')}, "
      f"{disk.get('size', '?')} ({disk.get('avail', '?')} free), mounted on "
      f"`{disk.get('mount', '?')}` |")
    for label, key in (("fsync probe before, appending", "fsync"),
                       ("fsync probe before, overwriting", "fsync_overwrite"),
                       ("fsync probe after, appending", "fsync_end"),
                       ("fsync probe after, overwriting", "fsync_overwrite_end")):
        f = machine.get(key)
        if f:
            w(f"| {label} | {f['writes']} × (4 KiB write + fdatasync): p50 "
              f"{f['p50_us']:.0f} µs, mean {f['mean_us']:.0f} µs, p99 {f['p99_us']:.0f} µs, "
              f"max {f['max_us']:.0f} µs |")
    for label, key in (("Load average, before", "loadavg"), ("Load average, after", "loadavg_end")):
        if key in machine:
            la = machine[key]
            w(f"| {label} | {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f} (1, 5, 15 min) |")
    w(f"| Kernel / compiler | {machine.get('kernel', '?')} / {machine.get('compiler', '?')} |")
    w(f"| LMDB | {machine.get('lmdb', '?')} (Debian package) |")

    # Appends.
    w("")
    w("## Durable appends")
    w("")
    w("Each append goes to one of 1000 streams (round robin) with "
      "`ExpectedVersion::Exact(last version)`; payloads are 256 bytes of JSON. Latency is per "
      "append call (p50 / p99). *events/commit* for rill is counted from LMDB's transaction "
      "ids; for raw LMDB it is the batch size by construction.")
    w("")
    w("| Workload | rill events/s | rill p50 / p99 | rill events/commit | LMDB events/s "
      "| LMDB p50 / p99 | rill / LMDB |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    append_ratios = {}
    for label, rk, lk in APPEND_ROWS:
        r, l = rate(rk), rate(lk)
        ratio = _ratio(r, l)
        append_ratios[rk] = ratio
        epc = counter(rk, "events_per_commit")
        w(f"| {label} | {_fmt_rate(r)} | {_fmt_us(counter(rk, 'p50_us'))} / "
          f"{_fmt_us(counter(rk, 'p99_us'))} | {'—' if epc is None else f'{epc:.1f}'} | "
          f"{_fmt_rate(l)} | {_fmt_us(counter(lk, 'p50_us'))} / "
          f"{_fmt_us(counter(lk, 'p99_us'))} | {_fmt_ratio(ratio)} |")

    nosync = [(n, rate(f"BM_RillAppendNoSync/batch:{n}"), rate(f"BM_LmdbAppendNoSync/batch:{n}"))
              for n in (1, 1000)]
    if any(r or l for _, r, l in nosync):
        w("")
        w("Diagnostic, **not durable**: the same appends without syncs (rill "
          "`Durability::kNoSyncUnsafe`, LMDB `MDB_NOSYNC`) show what each event costs in CPU and "
          "bytes written once the syncs are out of the way.")
        w("")
        w("| Workload (no sync) | rill events/s | LMDB events/s | rill / LMDB | rill's extra time "
          "per event |")
        w("|---|---:|---:|---:|---:|")
        for n, r, l in nosync:
            extra = (1e9 / r - 1e9 / l) if r and l else None
            w(f"| {n} event{'s' if n > 1 else ''} per append | {_fmt_rate(r)} | {_fmt_rate(l)} | "
              f"{_fmt_ratio(_ratio(r, l))} | "
              f"{'n/a' if extra is None else f'{extra / 1000:.1f} µs' if extra >= 1000 else f'{extra:.0f} ns'} |")

    # Reads.
    w("")
    w("## Reads")
    w("")
    nlog = "200k" if args.quick else "1M"
    nstream = "20k" if args.quick else "100k"
    w(f"A log of {nlog} events (256-byte payloads, appended in batches of 100; every 10th "
      f"batch goes to one stream, which so holds {nstream} events spread over the whole log). "
      "Everything is in the page cache: these figures are CPU and memory bound. Every variant "
      "reads each event's position, payload size and first and last payload byte. rill "
      "verifies each record's XXH3 checksum and FlatBuffers envelope; raw LMDB does not, so "
      "*raw + XXH3* (raw LMDB hashing every value) is shown as the fairer ceiling.")
    w("")
    w("| Workload | rill events/s | LMDB events/s | rill / LMDB |")
    w("|---|---:|---:|---:|")
    read_ratios = {}
    for label, rk, lk in READ_ROWS:
        r, l = rate(rk), rate(lk)
        read_ratios[(rk, lk)] = _ratio(r, l)
        w(f"| {label} | {_fmt_rate(r)} | {_fmt_rate(l)} | {_fmt_ratio(_ratio(r, l))} |")
    rb, lb = counter("BM_RillReadAll/scan", "disk_bytes_per_event"), counter(
        "BM_LmdbReadAll", "disk_bytes_per_event")
    if rb and lb:
        w("")
        w(f"Space: the read log takes {rb:.0f} bytes of LMDB pages per event in rill and "
          f"{lb:.0f} in raw LMDB ({rb / lb:.2f}×): the envelope carries the stream name, type, "
          "event id, version, position, time and checksum next to the 256-byte payload.")

    # Projections and snapshots.
    catchup, scan = rate("BM_ProjectionCatchUp"), rate("BM_RillReadAll/scan")
    if catchup:
        w("")
        w("## Projections")
        w("")
        w(f"Catch-up of a new projection over the same {nlog}-event log, with an Apply that does "
          "no I/O: the runner reads batches of 4096 records, applies them and commits each batch's "
          "checkpoint in one transaction of the derived environment (`BM_ProjectionCatchUp`). "
          "Next to it the raw rill scan of the same log, measured in the same run. The fixture "
          "store is opened with `Durability::kNoSyncUnsafe`, so these commits are not fsync'd; "
          "with the default durability each batch adds one fdatasync of the derived environment "
          "(about 0.1-0.3 ms per 4096 events on this disk, see the fsync probe).")
        w("")
        w("| Workload | events/s | ratio to rill read-all scan |")
        w("|---|---:|---:|")
        w(f"| Projection catch-up, trivial Apply | {_fmt_rate(catchup)} | "
          f"{_fmt_ratio(_ratio(catchup, scan))} |")
        w(f"| Read all: scan (views) | {_fmt_rate(scan)} | 1.00× |")
    loads = [(label, k) for label, k in (
        (f"no snapshot: fold all {'20k' if args.quick else '100k'} events",
         "BM_LoadAggregate/plain"),
        ("snapshot + 999 events (worst case with a snapshot every 1000)",
         "BM_LoadAggregate/snap_999"),
        ("snapshot + 499 events", "BM_LoadAggregate/snap_499"),
        ("snapshot + 0 events", "BM_LoadAggregate/snap_0")) if g(k)]
    if loads:
        w("")
        w("## Snapshots and replay")
        w("")
        w(f"Loading a {'20k' if args.quick else '100k'}-event aggregate (256-byte events, 1 KiB "
          "snapshot state) with "
          "`SnapshotStore::LoadAggregate`, with and without snapshots (`bench/snapshot_bench.cc`); "
          "replay of the whole log by position and by time.")
        w("")
        w("| Workload | time per load | loads/s |")
        w("|---|---:|---:|")
        plain = _to_us(g("BM_LoadAggregate/plain"), "cpu_time") if g("BM_LoadAggregate/plain") else None
        for label, k in loads:
            t = _to_us(g(k), "cpu_time")
            speed = f" ({plain / t:,.0f}× faster)" if plain and t and k != "BM_LoadAggregate/plain" else ""
            w(f"| {label} | {_fmt_us(t)}{speed} | {counter(k, 'loads_per_s') or 0:,.0f} |")
        for label, k in (("Replay by position, whole log", "BM_ReplayPositions"),
                         ("Replay by time, last quarter (search included)", "BM_ReplayTimeRange")):
            if g(k):
                w(f"| {label} | {_fmt_us(_to_us(g(k), 'cpu_time'))} | "
                  f"{_fmt_rate(rate(k))} events/s |")

    # Every figure.
    w("")
    w("## Every figure")
    w("")
    w("| Benchmark | events/s | ± (cv) | time per iteration | iterations | other counters |")
    w("|---|---:|---:|---:|---:|---|")
    for k in sorted(b, key=lambda k: (0 if "Append" in k or "Concurrent" in k else 1, k)):
        x = b[k]
        if x.get("error_occurred"):
            w(f"| `{k}` | error: {x.get('error_message', '')} | | | | |")
            continue
        other = []
        for c in ("p50_us", "p99_us", "events_per_commit", "commits_per_s",
                  "disk_bytes_per_event"):
            if c in x:
                other.append(f"{c} = {x[c]:,.1f}")
        threads = x.get("threads", 1)
        reps = x.get("repetitions", 1)
        it = f"{x.get('total_iterations', x['iterations']):,}"
        if reps > 1:
            it += f" in {reps} runs"
        if threads > 1:
            it += f" ({threads} threads)"
        cv = x.get("cv_events_per_s")
        w(f"| `{k}` | {_fmt_rate(x.get('events_per_s'))} | "
          f"{'—' if cv is None else f'{100 * cv:.1f}%'} | {_fmt_us(_to_us(x))} | {it} | "
          f"{', '.join(other)} |")
    w("")
    w("*time per iteration* is wall time per append call (appends; for 16 threads: wall time "
      "divided by all calls of all threads) or per full read (reads). With several runs, every "
      "figure is that of the median run (by events/s) and *±* the coefficient of variation of "
      "events/s across the runs; a large one means some runs were disturbed (see *Caveats*).")

    # Reproduce.
    w("")
    w("## Reproduce")
    w("")
    w("```sh")
    w("bench/run            # Release build in build-bench/, ~4-5 min; rewrites this file")
    w("bench/run --quick    # < 1 min; writes bench/results/micro/quick/")
    w("RILL_BENCH_DIR=/mnt/nvme/tmp bench/run   # put the stores on another disk")
    w("```")
    w("")
    w("The raw Google benchmark JSON of this run is in `bench/results/micro/` (`append-N.json` and "
      "`read-N.json`, one per pass, and `machine.json`). A single benchmark: "
      "`build-bench/bench/append_bench --benchmark_filter='BM_RillAppend/batch:100'`; "
      "`RILL_BENCH_QUICK=1` shortens it, `RILL_BENCH_ITERATIONS=N` fixes the iteration count "
      "(for profiling).")

    # Reading.
    w("")
    w("## Reading the numbers")
    w("")
    w(_reading(b, machine, append_ratios, read_ratios, rate, counter))
    notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profile_notes.md")
    if os.path.exists(notes) and not args.quick:
        w("")
        with open(notes) as f:
            w(f.read().rstrip())
    w("")
    with open(args.out, "w") as f:
        f.write("\n".join(out))
    print(f"wrote {args.out}")


def _reading(b, machine, append_ratios, read_ratios, rate, counter):
    p = []
    fs = machine.get("fsync", {})
    sync = fs.get("p50_us")
    nproc = machine.get("nproc") or 1
    probes = [machine[k]["p50_us"] for k in ("fsync", "fsync_end") if k in machine]
    loads = [machine[k][0] for k in ("loadavg", "loadavg_end") if k in machine]
    busy = loads and max(loads) > nproc / 2
    noisy = sorted(k for k, x in b.items()
                   if ("Append/" in k or "Concurrent" in k) and x.get("cv_events_per_s", 0) > 0.2)
    slow_probe = probes and max(probes) > 2000
    if noisy or slow_probe:
        why = []
        if busy:
            why.append(f"the machine was busy with other work (1-minute load average up to "
                       f"{max(loads):.1f} on {nproc} CPUs)")
        if slow_probe:
            why.append(f"a probe's fdatasync took {max(probes):.0f} µs (p50)")
        if noisy:
            why.append("runs of " + ", ".join(f"`{k}`" for k in noisy) +
                       " differ by more than 20% (see ± under *Every figure*)")
        p.append(
            "**This run was disturbed:** " + "; ".join(why) + ". On a busy machine a "
            "thread woken when its sync completes can wait for a CPU, up to the next scheduler "
            "tick (latencies in whole 4 ms steps were seen on this machine), and whichever "
            "benchmark runs in such a minute loses. The medians below damp this, but read the "
            "sync-bound rows with suspicion and rerun `bench/run` on a quiet machine.")
    elif busy:
        p.append(f"*The machine was not idle during this run (1-minute load average up to "
                 f"{max(loads):.1f} on {nproc} CPUs, from other work), but the runs of each "
                 f"benchmark agree within 20%.*")
    fo = machine.get("fsync_overwrite", {}).get("p50_us")
    l1, r1 = rate("BM_LmdbAppend/batch:1"), rate("BM_RillAppend/batch:1")
    l1p, r1p = counter("BM_LmdbAppend/batch:1", "p50_us"), counter("BM_RillAppend/batch:1", "p50_us")
    if sync and fo and l1 and l1p:
        p.append(
            f"**Single-event appends are bound by the disk's syncs.** An LMDB commit costs two "
            f"syncs: its new pages are written (growing the data file) and fdatasync'd, then the "
            f"meta page is overwritten in place through an O_DSYNC descriptor. The probes put "
            f"those at {sync:.0f} µs (append + fdatasync) and {fo:.0f} µs (overwrite + "
            f"fdatasync), a floor of about {sync + fo:.0f} µs per commit (≈ "
            f"{1e6 / (sync + fo):,.0f} commits/s). Raw LMDB measured {l1p:.0f} µs p50 "
            f"({_fmt_rate(l1)} events/s)"
            + (f"; rill {r1p:.0f} µs p50 ({_fmt_rate(r1)} events/s, "
               f"{_fmt_ratio(_ratio(r1, l1))} raw)." if r1 and r1p else ".")
            + " SQLite in WAL mode pays one sync per commit, which is why it wins this "
            "workload from a single writer; rill does not weaken what durable means to close "
            "that gap, it batches instead (below).")
    goal = []
    for n in (1, 10, 100, 1000):
        r = append_ratios.get(f"BM_RillAppend/batch:{n}")
        if r is not None:
            goal.append((n, r))
    if goal:
        met = [f"{n} ({r:.2f}×)" for n, r in goal if r >= 0.8]
        missed = [f"{n} ({r:.2f}×)" for n, r in goal if r < 0.8]
        s = ("**Batched appends against the goal** (design.md: at least 0.8× raw LMDB doing "
             "the same writes). ")
        if met:
            s += f"Met at batch size {', '.join(met)}. "
        if missed:
            s += (f"Missed at batch size {', '.join(missed)}. As the batch grows the commit "
                  "stops being sync-bound and becomes bound by the bytes written and the CPU "
                  "per event, and that is where rill's extra work shows: a bigger record per "
                  "event (envelope; see *Space*), encoding it (FlatBuffers builder, event id "
                  "generation, XXH3 checksum), validating the request and the expected-version "
                  "lookup, all inside the write transaction. See the profile notes for where "
                  "the time goes.")
        else:
            s += "rill's per-event work (envelope, checksum, checks) stays hidden under the syncs."
        p.append(s)
    rn, ln = rate("BM_RillAppendNoSync/batch:1000"), rate("BM_LmdbAppendNoSync/batch:1000")
    rn1, ln1 = rate("BM_RillAppendNoSync/batch:1"), rate("BM_LmdbAppendNoSync/batch:1")
    if rn and ln:
        s = (f"**Without syncs** (diagnostic rows) rill appends batches of 1000 at "
             f"{_fmt_rate(rn)} events/s against {_fmt_rate(ln)} for raw LMDB "
             f"({_fmt_ratio(_ratio(rn, ln))}): rill spends about {1e9 / rn - 1e9 / ln:.0f} ns more "
             "per event. That cost is paid on every durable append too; it is simply hidden "
             "while the two syncs of a commit dominate, and shows once a commit carries "
             "hundreds of events.")
        if rn1 and ln1:
            s += (f" Single-event appends without syncs: {_fmt_rate(rn1)} vs {_fmt_rate(ln1)} "
                  f"events/s, about {(1e6 / rn1 - 1e6 / ln1):.1f} µs more per append: "
                  "validation, the request queue and its lock, the expected-version lookup and "
                  "the envelope.")
        p.append(s)
    rc, lc = rate("BM_RillConcurrent16"), rate("BM_LmdbConcurrent16")
    epc = counter("BM_RillConcurrent16", "events_per_commit")
    if rc and lc:
        s = (f"**Concurrent single-event appends (16 threads)** reach {_fmt_rate(rc)} events/s "
             f"in rill against {_fmt_rate(lc)} for raw LMDB with one write transaction per "
             f"event ({_fmt_ratio(_ratio(rc, lc))}). ")
        if epc:
            s += (f"rill committed {epc:.1f} events per commit on average: while one "
                  "commit syncs, the other threads' requests queue up, and the next leader "
                  "takes them all into one transaction (group commit, one pair of syncs for "
                  "all). ")
        if r1:
            s += (f"Compared with one thread appending single events, rill scales "
                  f"{rc / r1:.1f}×; raw LMDB cannot, as every thread waits for its own pair of "
                  "syncs behind LMDB's writer lock.")
        p.append(s)
    rs = read_ratios.get(("BM_RillReadAll/scan", "BM_LmdbReadAll"))
    rsx = read_ratios.get(("BM_RillReadAll/scan", "BM_LmdbReadAll/xxh3"))
    lr, lx = rate("BM_LmdbReadAll"), rate("BM_LmdbReadAll/xxh3")
    if rs is not None:
        s = (f"**Reads.** rill's ScanAll delivers {_fmt_rate(rate('BM_RillReadAll/scan'))} "
             f"events/s, {rs:.2f}× a raw cursor that reads two cache lines of each value")
        if rsx is not None and lr and lx:
            s += (f", and {rsx:.2f}× a raw cursor that hashes every value with XXH3. Hashing "
                  f"alone takes raw LMDB from {_fmt_rate(lr)} to {_fmt_rate(lx)} events/s: a "
                  "checksum must read every byte of every record, so most of that is memory "
                  "traffic, not hashing")
        s += ". "
        if rs < 0.8:
            s += ("Against the plain raw scan rill is below 0.8×; the checksum accounts for part "
                  "of it (compare the XXH3 row), the rest is rill's own per-record work (see the "
                  "profile notes). ")
        ro = rate("BM_RillReadAll/owned")
        if ro:
            s += (f"Owning copies (ReadAll, RecordedEvent with std::strings) cost "
                  f"{_fmt_rate(ro)} events/s: allocation and copying, which the view-based scans "
                  "avoid. ")
        rst = read_ratios.get(("BM_RillReadStream/scan", "BM_LmdbReadStream"))
        if rst is not None:
            s += (f"Reading one stream goes through the stream index (one lookup in `events` per "
                  f"event) on both sides: rill {_fmt_rate(rate('BM_RillReadStream/scan'))} "
                  f"events/s, {rst:.2f}× raw.")
        p.append(s)
    p.append(
        "**Caveats.** A shared virtual machine: wall time includes steal time and other "
        "tenants' work, so compare rill and LMDB rows of the same run rather than runs with "
        "each other (the passes alternate the suites and each pass alternates raw LMDB and "
        "rill per batch size, so drift is shared). Debian's libbenchmark "
        "prints *Library was built as DEBUG*; that concerns the harness's own loop, which is "
        "negligible next to a sync or a 1M-event scan. Reads are warm (page cache); a cold "
        "scan is bound by the disk's read bandwidth on both sides.")
    return "\n\n".join(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("probe")
    pp.add_argument("--dir", required=True)
    pp.add_argument("--out", required=True)
    pp.add_argument("--end", action="store_true",
                    help="probe again after the run and add it to an existing --out")
    rp = sub.add_parser("render")
    rp.add_argument("--results", required=True)
    rp.add_argument("--out", required=True)
    rp.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.cmd == "probe":
        probe(args)
    else:
        render(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
