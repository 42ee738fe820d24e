#!/usr/bin/env python3
"""Report of bench/compare: bench/results/latest.json, docs/benchmarks.md and
docs/benchmarks.png from one run of the peer harness (Python standard library,
plus matplotlib for the plot when it is installed).

  compare_report.py --machine machine.json --peers peers.jsonl
      --snapshot snapshot.json --json latest.json --out benchmarks.md
      --plot benchmarks.png [--quick] [--partial] [--pg-version V ...]
"""

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report as rr  # noqa: E402  (bench/report.py: formatting, Google benchmark JSON)

SYSTEMS = ["rill", "seglog", "lmdb", "sqlite", "messagedb"]
# rill replicated over NATS JetStream (bench/peers/repl_peer.cc): append
# workloads only, in their own section.
REPL_SYSTEMS = ["rill_repl_r3", "rill_repl_r3_2n", "rill_repl_r1", "rill_repl_r1_2n"]
# JetStream alone (bench/peers/jetstream_peer.cc): one synchronous publish
# per request, no rill; the floor under the replicated figures (the key is
# the replicated systems of the same R).
# _rx: each request also waits for its message to come back through an
# ordered consumer, as a node's does: the floor of rill's design, which the
# replicated systems of the same R are measured against (FLOOR_OF).
FLOOR_SYSTEMS = ["jetstream_r3", "jetstream_r3_rx", "jetstream_r1_rx"]
FLOOR_OF = {"rill_repl_r3": "jetstream_r3_rx", "rill_repl_r3_2n": "jetstream_r3_rx",
            "rill_repl_r1": "jetstream_r1_rx", "rill_repl_r1_2n": "jetstream_r1_rx"}
ALL_SYSTEMS = SYSTEMS + REPL_SYSTEMS + FLOOR_SYSTEMS
LABEL = {"rill": "rill", "seglog": "segment log (prototype)", "lmdb": "raw LMDB", "sqlite": "SQLite", "messagedb": "Message DB",
         "rill_repl_r3": "replicated R=3, 1 node", "rill_repl_r3_2n": "replicated R=3, 2 nodes",
         "rill_repl_r1": "replicated R=1, 1 node", "rill_repl_r1_2n": "replicated R=1, 2 nodes",
         "jetstream_r3": "JetStream alone R=3",
         "jetstream_r3_rx": "JetStream + consumer R=3", "jetstream_r1_rx": "JetStream + consumer R=1"}
REPL_WORKLOADS = ["append_b1", "append_b10", "append_b100", "append_b1000", "concurrent16"]
# Issue 14: (workload, minimum ratio replicated / Message DB).
REPL_TARGETS = [("append_b1", 0.8), ("append_b100", 2), ("concurrent16", 2)]
# Issue 15: (workload, peer, minimum ratio segment-log prototype / peer).
SEGLOG_TARGETS = [("append_b1", "sqlite", 1.3), ("append_b10", "sqlite", 1.3),
                  ("append_b1000", "rill", 2), ("read_stream_interleaved", "sqlite", 2)]
WORKLOADS = [
    ("append_b1", "append, 1 event per request"),
    ("append_b10", "append, 10 events per request"),
    ("append_b100", "append, 100 events per request"),
    ("append_b1000", "append, 1000 events per request"),
    ("concurrent16", "16 threads, 1 event per request"),
    ("idempotent", "1 event per request with an idempotency key, 10% retries"),
    ("read_all", "read the whole log forwards"),
    ("read_all_interleaved", "read the whole interleaved log forwards"),
    ("read_stream", "read one 100k-event stream, in runs of 100 consecutive positions"),
    ("read_stream_interleaved", "read one 100k-event stream, each event 10 positions apart"),
    ("read_random", "20 events of a random stream"),
    ("projection_catchup", "projection catch-up (rill only)"),
]
# (workload, peer, minimum ratio rill / peer); peer "read_all" = rill's own.
TARGETS = [(w, "lmdb", 0.8) for w in ("append_b1", "append_b10", "append_b100",
                                      "append_b1000", "idempotent", "read_all",
                                      "read_stream", "read_random")] + [
    ("append_b100", "sqlite", 1.1), ("append_b100", "messagedb", 8),
    ("append_b1000", "sqlite", 1.5), ("append_b1000", "messagedb", 20),
    ("concurrent16", "lmdb", 8), ("concurrent16", "sqlite", 4), ("concurrent16", "messagedb", 3),
    ("read_all", "sqlite", 1.2), ("read_all", "messagedb", 10),
    ("read_stream", "sqlite", 1.2), ("read_stream", "messagedb", 10),
    ("projection_catchup", "read_all", 0.5),
]
# Shown in the targets table under the workload they follow, with their
# measured ratio and no target of their own (issue 7 set none).
UNTARGETED = {"read_stream": "read_stream_interleaved"}


def load_peers(path):
    res = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                res[(r["workload"], r["system"])] = r
    return res


def rate(res, w, s):
    if s == "read_all" and w == "projection_catchup":
        r = res.get(("read_all", "rill"))
    else:
        r = res.get((w, s))
    return r.get("events_per_s") if r else None


def ratio(res, w, peer, system="rill"):
    a, b = rate(res, w, system), rate(res, w, peer)
    return None if a is None or not b else a / b


def busy(machine):
    """Why the machine looked busy (a list of reasons; empty: it looked quiet)."""
    why = []
    n = machine.get("nproc") or 2
    for key, when in (("loadavg", "start"), ("loadavg_end", "end")):
        la = machine.get(key)
        if la and la[0] > n / 2:
            why.append(f"1-minute load average {la[0]:.2f} at the {when} on {n} CPUs")
    f0 = machine.get("fsync", {}).get("p50_us")
    f1 = machine.get("fsync_end", {}).get("p50_us")
    if f0 and f1 and (f1 > 2 * f0 or f0 > 2 * f1):
        why.append(f"fdatasync p50 moved from {f0:.0f} µs to {f1:.0f} µs during the run")
    for key in ("fsync", "fsync_end"):
        p = machine.get(key, {}).get("p50_us")
        if p and p > 1000:
            why.append(f"fdatasync p50 {p:.0f} µs ({key})")
    return why


def run_time(machine):
    """ISO time of the run (the machine probe's), or now."""
    try:
        t = datetime.datetime.strptime(machine["date"], "%Y-%m-%d %H:%M UTC")
        return t.replace(tzinfo=datetime.timezone.utc).isoformat()
    except (KeyError, ValueError):
        return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_json(args, machine, res):
    out = {
        "when": run_time(machine),
        "commit": machine.get("commit"),
        "quick": bool(args.quick),
        "machine": {
            "cores": machine.get("nproc"),
            "cpu": machine.get("cpu"),
            "memory": machine.get("mem_bytes"),
            "disk": machine.get("disk"),
            "fsync_us": (machine.get("fsync") or {}).get("p50_us"),
            "fsync_probe": {k: machine.get(k) for k in
                            ("fsync", "fsync_overwrite", "fsync_end", "fsync_overwrite_end")},
            "loadavg_start": machine.get("loadavg"),
            "loadavg_end": machine.get("loadavg_end"),
            "busy": busy(machine),
            "sched_fifo": bool(args.rt),
        },
        "peers": {"sqlite": args.sqlite_version, "postgresql": args.pg_version,
                  "message_db": args.mdb_version, "lmdb": machine.get("lmdb"),
                  "nats_server": args.nats_version or None,
                  "libnats": args.libnats_version or None},
        "results": [],
    }
    order = {w: i for i, (w, _) in enumerate(WORKLOADS)}
    rank = {s: i for i, s in enumerate(ALL_SYSTEMS)}
    for (w, s), r in sorted(res.items(), key=lambda kv: (order.get(kv[0][0], 99),
                                                         rank.get(kv[0][1], 99), kv[0][1])):
        row = {"workload": w, "system": s}
        for k in ("events_per_s", "p50_us", "p99_us", "bytes_per_event"):
            row[k] = r.get(k)
        for k, v in r.items():
            if k not in row:
                row[k] = v
        out["results"].append(row)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.json}")


def plot(args, res):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("compare_report: no matplotlib, no plot", file=sys.stderr)
        return
    ws = [w for w, _ in WORKLOADS if any((w, s) in res for s in SYSTEMS)]
    systems = [s for s in SYSTEMS + REPL_SYSTEMS if any((w, s) in res for w in ws)]
    fig, ax = plt.subplots(figsize=(12, 5.5))
    width = 0.8 / max(len(systems), 1)
    colors = {"rill": "#d62728", "seglog": "#8c564b", "lmdb": "#7f7f7f", "sqlite": "#1f77b4", "messagedb": "#2ca02c",
              "rill_repl_r3": "#ff7f0e", "rill_repl_r3_2n": "#ffbb78",
              "rill_repl_r1": "#9467bd", "rill_repl_r1_2n": "#c5b0d5"}
    for i, s in enumerate(systems):
        xs, ys = [], []
        for j, w in enumerate(ws):
            v = rate(res, w, s)
            if v:
                xs.append(j + (i - (len(systems) - 1) / 2) * width)
                ys.append(v)
        ax.bar(xs, ys, width, label=LABEL[s], color=colors.get(s))
    ax.set_yscale("log")
    ax.set_xticks(range(len(ws)))
    ax.set_xticklabels(ws, rotation=20, ha="right")
    ax.set_ylabel("events/s (log scale)")
    ax.set_title("bench/compare: durable appends and warm reads, one run, one disk"
                 + (" (--quick)" if args.quick else ""))
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=90)
    print(f"wrote {args.plot}")


def render_seglog(w, res):
    """The segment-log prototype against rill and the peers (issue 15)."""
    if not any((wl, "seglog") in res for wl, _ in WORKLOADS):
        return
    w("")
    w("## The segment-log prototype (issue 15)")
    w("")
    w("`bench/seglog` is a storage prototype, not rill's engine (docs/segment-log.md has its "
      "design, crash tests and the recommendation). Ratios of events/s within this run:")
    w("")
    w("| Workload | prototype / rill | prototype / SQLite | prototype / raw LMDB |")
    w("|---|---:|---:|---:|")
    for wl, _ in WORKLOADS:
        if (wl, "seglog") not in res:
            continue
        w(f"| `{wl}` | " + " | ".join(fmt_ratio(ratio(res, wl, p, "seglog"))
                                        for p in ("rill", "sqlite", "lmdb")) + " |")
    w("")
    w("Targets (issue 15):")
    w("")
    w("| Workload | against | target | measured | |")
    w("|---|---|---:|---:|---|")
    for wl, peer, want in SEGLOG_TARGETS:
        r = ratio(res, wl, peer, "seglog")
        if r is None:
            continue
        w(f"| `{wl}` | {LABEL[peer]} | ≥ {want:g}× | {r:.2f}× | "
          f"{'met' if r >= want else '**missed**'} |")
    r = res.get(("concurrent16", "seglog")) or {}
    epc = [v for k, v in r.items() if k.startswith("events_per_commit_round")]
    if epc:
        w("")
        w(f"Events per commit in `concurrent16` (the mean of the rounds): prototype "
          f"{sum(epc) / len(epc):.1f}.")


def fmt_ratio(r):
    return "—" if r is None else f"{r:.2f}×"


def render(args, machine, res, snap):
    out = []
    w = out.append
    commit = machine.get("commit", "?")
    w("# rill benchmarks")
    w("")
    w(f"Generated by `bench/compare{' --quick' if args.quick else ''}` on "
      f"{machine.get('date', '?')} at commit `{commit}`. Do not edit by hand: rerun "
      "`bench/compare` (see *Reproduce*). Raw figures: `bench/results/latest.json`; plot: "
      "`docs/benchmarks.png`.")
    w("")
    w("**One generator.** `bench/compare` is the only thing that writes this file. It runs the peer "
      "harness (`bench/peers/`, built with `-DRILL_BUILD_COMPARE=ON`), which measures rill, raw LMDB, "
      "SQLite and Message DB one after another in one process, on one disk, with the same "
      "workloads (and rill replicated over NATS JetStream in the append workloads), and then rill's own snapshot and replay suite (`bench/snapshot_bench.cc`). "
      "`bench/run` still runs the Google benchmark suites (`bench/*_bench.cc`: rill against raw "
      "LMDB in more detail, with no-sync diagnostics and owning-copy variants) for profiling "
      "work; it writes its report to `bench/results/micro/` and never to `docs/`.")
    if args.rt:
        w("")
        w("**Run under `SCHED_FIFO`** (`bench/compare --rt`): the harness, the stores and the "
          "PostgreSQL server ran at real-time priority 1, because other work kept both CPUs "
          "of this shared machine busy, and then every fsync also waits ~4 ms for a CPU "
          "after the disk has answered (measured: 4 KiB write + fdatasync p50 ~4 ms at normal "
          "priority, ~0.16 ms under `chrt -f 1`, same minute). All four systems were treated "
          "alike; the disk itself was still shared. Load averages below count the other "
          "work.")
    why = busy(machine)
    if why:
        w("")
        w("> **Warning: the machine was busy during this run** (" + "; ".join(why) + "). "
          "This is a shared 2-core VM: absolute figures move, ratios within the run are what "
          "to read.")
    w("")
    w("![events/s per workload and system, log scale](benchmarks.png)")

    # Machine.
    w("")
    w("## Machine")
    w("")
    w("| | |")
    w("|---|---|")
    w(f"| CPU | {machine.get('cpu', '?')}, nproc = {machine.get('nproc', '?')} |")
    w(f"| Memory | {machine.get('mem_bytes', 0) / 2**30:.1f} GiB |")
    d = machine.get("disk", {})
    w(f"| Disk (bench dir) | `{d.get('device', '?')}` {d.get('fs', '?')}, {d.get('size', '?')} "
      f"({d.get('avail', '?')} free), mounted on `{d.get('mount', '?')}` |")
    for key, label in (("fsync", "before, appending"), ("fsync_overwrite", "before, overwriting"),
                       ("fsync_end", "after, appending"),
                       ("fsync_overwrite_end", "after, overwriting")):
        f = machine.get(key)
        if f:
            w(f"| fsync probe {label} | {f['writes']} × (4 KiB write + fdatasync): p50 "
              f"{f['p50_us']:.0f} µs, p99 {f['p99_us']:.0f} µs, max {f['max_us']:.0f} µs |")
    for key, label in (("loadavg", "before"), ("loadavg_end", "after")):
        la = machine.get(key)
        if la:
            w(f"| Load average, {label} | {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f} (1, 5, 15 min) |")
    w(f"| Kernel / compiler | {machine.get('kernel', '?')} / {machine.get('compiler', '?')} |")
    w(f"| LMDB | {machine.get('lmdb', '?')} (Debian) |")
    w(f"| SQLite | {args.sqlite_version} (Debian libsqlite3) |")
    w(f"| PostgreSQL | {args.pg_version}; {args.pg_settings.replace(';', ', ')} |")
    w(f"| Message DB | {args.mdb_version} (npm `@eventide/message-db`) |")
    if args.nats_version:
        w(f"| NATS | nats-server {args.nats_version} (Debian), three servers on this machine; "
          f"libnats {args.libnats_version or '?'} |")

    # Systems.
    w("")
    w("## The systems")
    w("")
    w("Every write is **durable**: acknowledged only after an fsync/fdatasync of what it wrote "
      "(rill replicated: once a JetStream quorum holds it, see its section). "
      "Each system runs in its best honest configuration:")
    w("")
    w("- **rill**: the public C++ API (`Store::Append`, `ScanAll`, `ScanStream`), "
      "`Durability::kDurable`; expected version `Exact(n)` (or `NoStream`) on every append.")
    w("- **segment log (prototype)** (`bench/seglog`, issue 15, *not* rill's engine; "
      "docs/segment-log.md): events in 64 MiB zero-filled segment files, one `fdatasync` per "
      "group commit, an LMDB index committed without a sync; rill's append checks (expected "
      "version, idempotency keys), every record's checksum verified on reads.")
    w("- **raw LMDB** (the ceiling, `bench/peers/lmdb_peer.cc` on `bench/bench_util.h`'s "
      "`RawLog`): the same puts a rill append makes (the payload under its position with "
      "`MDB_APPEND`, a (stream id, version) index entry, the stream's record), no envelope, no "
      "checksum, no checks; one write transaction per request, flags 0 (fsync of the data pages, "
      "then of the meta page). Concurrent writers queue on LMDB's writer lock.")
    w("- **SQLite**: table `events(position INTEGER PRIMARY KEY, stream TEXT, version INTEGER, "
      "type TEXT, data BLOB, UNIQUE(stream, version))`, `journal_mode=WAL`, `synchronous=FULL`, "
      "prepared statements, one `BEGIN IMMEDIATE` transaction per request, the expected version "
      "checked in SQL (`max(version)` through the unique index) in that transaction; 256 MiB "
      "page cache, 1 GiB mmap. One connection per writer thread; a mutex around write "
      "transactions instead of SQLite's sleeping busy handler.")
    w("- **Message DB**: PostgreSQL started by the harness in the run directory (settings "
      "above; durable as shipped), `write_message(id, stream, type, data, NULL, "
      "expected_version)` for every message with its expected version, through libpq **pipeline "
      "mode**: a request of N messages is one round trip and one transaction. Reads through "
      "`get_category_messages` / `get_stream_messages` in pages of 1000 (its API; Message DB "
      "has no read-all but a category, and every read-log stream is in category `order`). One "
      "connection per writer thread, one category per thread in `concurrent16`. Its fresh "
      "store per append workload is the table truncated, then 10,000 messages in 1000 "
      "`history-` streams the workloads never touch, analyzed: the statistics of a store in "
      "use, so that `write_message` gets the index plan one has (on a truncated table the "
      "plan it cached depended on when autovacuum had last run).")
    w("")
    w("**Workloads.** Payloads are 256 bytes of JSON. Appends: a fresh store per workload, 1000 "
      f"streams round robin, each request to one stream with its expected version, "
      f"{'1' if args.quick else '4'} s per system split in four rounds (every other one in "
      "reverse system order, so that a slow stretch of the shared disk is shared). "
      "`concurrent16`: 16 "
      "threads, each with its own connection/handle and 4 streams of its own, single events. "
      "`idempotent`: one event per request, each with an idempotency key; every 10th request is "
      "a retry of the request sent 5 before it (so 10% are retries, and every one of them must "
      "come back *deduplicated*; events/s counts requests). Reads: a log of "
      f"{'200k' if args.quick else '1M'} events (batches of 100, every 10th batch to the stream "
      "`order-big`, the others round robin over 999 streams), loaded the fastest way each "
      "system offers, then read warm (one untimed pass first: this VM evicts idle file cache "
      "within a minute). Each reader touches every event's position and payload. "
      "`read_stream_interleaved` and `read_all_interleaved` read the same number of events "
      "loaded again interleaved, event by event, as a live system writes its streams: every "
      "10th event to `order-big` (so it holds as many events as before, each 10 positions "
      "apart), the others round robin over the 999 streams. "
      "`read_random`: 20 consecutive events of a random small stream from a random version. "
      "Latencies are per request (appends) or per read call (`read_random`).")
    w("")
    w("**Idempotency, per system.** rill: its own idempotency keys (fingerprint + result stored "
      "in the append's transaction; a retry returns the first result). raw LMDB: the key and a "
      "fingerprint put in an `idempotency` database in the same transaction, a retry found by "
      "one lookup (nothing written, no sync). SQLite: the same with a `WITHOUT ROWID` table "
      "`idempotency(key PRIMARY KEY, fingerprint, position)` in the same transaction; a retry "
      "commits a transaction that wrote nothing (no sync). Message DB has no idempotency keys; "
      "the closest honest equivalent is its own idiom: the message id is derived from the key "
      "(the unique index on `id`), so a retry fails its expected-version check (or the unique "
      "index), and the client then looks the id up and counts it deduplicated (two round trips, "
      "no sync).")

    # Every figure.
    w("")
    w("## Every figure")
    w("")
    w("| Workload | " + " | ".join(f"{LABEL[s]} events/s" for s in SYSTEMS) + " | " +
      " | ".join(f"{LABEL[s]} p50 / p99" for s in SYSTEMS) + " |")
    w("|---|" + "---:|" * (2 * len(SYSTEMS)))
    for wl, desc in WORKLOADS:
        if not any((wl, s) in res for s in SYSTEMS):
            continue
        cells = [rr._fmt_rate(rate(res, wl, s)) if (wl, s) in res else "—" for s in SYSTEMS]
        lat = []
        for s in SYSTEMS:
            r = res.get((wl, s))
            if r and r.get("p50_us") is not None:
                lat.append(f"{rr._fmt_us(r['p50_us'])} / {rr._fmt_us(r['p99_us'])}")
            else:
                lat.append("—")
        w(f"| `{wl}` ({desc}) | " + " | ".join(cells) + " | " + " | ".join(lat) + " |")

    # Ratios and targets.
    w("")
    w("## rill against each peer (ratios of events/s within this run)")
    w("")
    w("| Workload | rill / raw LMDB | rill / SQLite | rill / Message DB |")
    w("|---|---:|---:|---:|")
    for wl, _ in WORKLOADS:
        if wl == "projection_catchup" or (wl, "rill") not in res:
            continue
        w(f"| `{wl}` | " + " | ".join(fmt_ratio(ratio(res, wl, p))
                                        for p in ("lmdb", "sqlite", "messagedb")) + " |")
    w("")
    w("Targets (issue 7; ratios of this run):")
    w("")
    w("| Workload | against | target | measured | |")
    w("|---|---|---:|---:|---|")
    met = missed = 0
    for wl, peer, want in TARGETS:
        r = ratio(res, wl, peer)
        if r is None:
            continue
        ok = r >= want
        met += ok
        missed += not ok
        against = "rill read_all" if peer == "read_all" else LABEL[peer]
        w(f"| `{wl}` | {against} | ≥ {want:g}× | {r:.2f}× | {'met' if ok else '**missed**'} |")
        other = UNTARGETED.get(wl)
        r = ratio(res, other, peer) if other else None
        if r is not None:
            w(f"| `{other}` | {against} | — | {r:.2f}× | not a target |")
    w("")
    w(f"{met} met, {missed} missed. *Reading the numbers* says what bounds each miss.")

    render_seglog(w, res)
    render_replicated(w, args, res, machine)

    # Space.
    w("")
    w("## Space")
    w("")
    w("Bytes at rest per event of the read log (data and indexes, no WAL): LMDB pages in use "
      "(rill, raw LMDB), the database file after a checkpoint (SQLite), "
      "`pg_total_relation_size` of the messages table with its indexes (Message DB).")
    w("")
    w("| | " + " | ".join(LABEL[s] for s in SYSTEMS) + " |")
    w("|---|" + "---:|" * len(SYSTEMS))
    cells = []
    for s in SYSTEMS:
        r = res.get(("read_all", s)) or res.get(("read_stream", s))
        cells.append(f"{r['bytes_per_event']:.0f}" if r and r.get("bytes_per_event") else "—")
    w("| bytes per event | " + " | ".join(cells) + " |")
    cells = []
    for s in SYSTEMS:
        r = res.get(("read_stream_interleaved", s)) or res.get(("read_all_interleaved", s))
        cells.append(f"{r['bytes_per_event']:.0f}" if r and r.get("bytes_per_event") else "—")
    if any(c != "—" for c in cells):
        w("| bytes per event, interleaved log | " + " | ".join(cells) + " |")

    # Projections.
    pc, ra = rate(res, "projection_catchup", "rill"), rate(res, "read_all", "rill")
    if pc and ra:
        w("")
        w("## Projection catch-up")
        w("")
        w("A new projection with an Apply that does no I/O catches up with the read log "
          "(`ProjectionRunner::Start` until `WaitFor` the head): the runner reads batches of "
          "4096 records and commits each batch's checkpoint in one durable transaction of the "
          "derived environment. Next to it rill's `read_all` scan of the same log, same run.")
        w("")
        w("| Workload | events/s | ratio to rill read_all |")
        w("|---|---:|---:|")
        w(f"| projection catch-up, trivial Apply | {rr._fmt_rate(pc)} | {pc / ra:.2f}× |")
        w(f"| read_all (ScanAll) | {rr._fmt_rate(ra)} | 1.00× |")

    # Snapshots.
    if snap:
        g = snap.get
        n = "20k" if args.quick else "100k"
        w("")
        w("## Snapshots and replay (rill only)")
        w("")
        w(f"Loading a {n}-event aggregate (256-byte events, 1 KiB snapshot state) with "
          "`SnapshotStore::LoadAggregate`, with and without snapshots; replay of the whole log "
          "by position and by time (`bench/snapshot_bench.cc`, one pass, CPU bound).")
        w("")
        w("| Workload | time per load | loads/s |")
        w("|---|---:|---:|")
        plain = rr._to_us(g("BM_LoadAggregate/plain"), "cpu_time") if g("BM_LoadAggregate/plain") else None
        for label, k in ((f"no snapshot: fold all {n} events", "BM_LoadAggregate/plain"),
                         ("snapshot + 999 events (worst case with a snapshot every 1000)",
                          "BM_LoadAggregate/snap_999"),
                         ("snapshot + 499 events", "BM_LoadAggregate/snap_499"),
                         ("snapshot + 0 events", "BM_LoadAggregate/snap_0")):
            if not g(k):
                continue
            t = rr._to_us(g(k), "cpu_time")
            speed = (f" ({plain / t:,.0f}× faster)" if plain and t and
                     k != "BM_LoadAggregate/plain" else "")
            w(f"| {label} | {rr._fmt_us(t)}{speed} | {g(k).get('loads_per_s', 0):,.0f} |")
        for label, k in (("Replay by position, whole log", "BM_ReplayPositions"),
                         ("Replay by time, last quarter (search included)", "BM_ReplayTimeRange")):
            if g(k):
                w(f"| {label} | {rr._fmt_us(rr._to_us(g(k), 'cpu_time'))} | "
                  f"{rr._fmt_rate(g(k).get('events_per_s'))} events/s |")

    # Reproduce.
    w("")
    w("## Reproduce")
    w("")
    w("```sh")
    w("bench/compare            # as root: installs what it needs, ~5 min on 2 cores;")
    w("                         # rewrites this file, docs/benchmarks.png, bench/results/latest.json")
    w("bench/compare --quick    # < 3 min; writes bench/results/quick/ and leaves docs/ alone")
    w("bench/compare --rt       # the run phase under SCHED_FIFO: on a machine others keep busy")
    w("bench/compare -- --workloads append_b100,read_all --systems rill,sqlite   # a subset")
    w("bench/compare -- --workloads append_b1,concurrent16 --systems rill_repl_r3,messagedb")
    w("RILL_BENCH_DIR=/mnt/nvme/tmp bench/compare   # stores and PostgreSQL on another disk")
    w("bench/run                # rill vs raw LMDB micro suites -> bench/results/micro/")
    w("```")
    w("")
    w("The raw output of the run is in `bench/results/compare/` (`peers.jsonl`: one line per "
      "figure with event and call counts; `snapshot.json`; `machine.json`). "
      "`build-compare/bench/peers/rill_compare --help`-style flags are listed at the top of "
      "`bench/peers/compare.cc`; `--seconds` changes the time per figure.")

    # Reading.
    w("")
    w("## Reading the numbers")
    w("")
    reading = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare_reading.md")
    if os.path.exists(reading):
        with open(reading) as f:
            text = f.read().rstrip()
        w(fill(text, res, machine))
    notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profile_notes.md")
    if os.path.exists(notes) and not args.quick:
        w("")
        with open(notes) as f:
            w(f.read().rstrip())
    w("")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(out))
    print(f"wrote {args.out}")


def render_replicated(w, args, res, machine):
    """The replicated systems' section: append workloads, beside embedded rill
    and Message DB of the same run."""
    systems = [s for s in REPL_SYSTEMS if any((wl, s) in res for wl in REPL_WORKLOADS)]
    if not systems:
        return
    floors = [s for s in FLOOR_SYSTEMS if any((wl, s) in res for wl in REPL_WORKLOADS)]
    wls = [wl for wl in REPL_WORKLOADS if any((wl, s) in res for s in systems)]
    desc = dict(WORKLOADS)
    cols = ["rill"] + systems + floors + ["messagedb"]
    col_label = dict(LABEL, rill="embedded rill")
    w("")
    w("## Replicated rill (NATS JetStream)")
    w("")
    w("rill's replicated mode (`rill/replication.h`): the same `Store` API on a node directory "
      "made by `InitReplicatedNode`. `bench/compare` starts three `nats-server`s "
      f"({args.nats_version or '?'}) as one JetStream cluster on 127.0.0.1 of this same 2-core "
      "machine, their file stores in the run directory on the same disk, and every workload gets "
      "a fresh stream of **3 replicas (R=3)**, which survives the loss of a server, or of "
      "**1 replica (R=1)**: no replication, the JetStream round trip alone. **One node**: one "
      "node directory opened as a `Store` in the harness process, with its own NATS connection, "
      "publisher and applier threads. **Two nodes**: two node directories of the same stream, "
      "each its own `Store`; `concurrent16`'s threads alternate between them (8 on each), and "
      "the single writer of `append_b*` alternates its requests between them.")
    w("")
    w("**What an append waits for**: its node's publisher (one message in flight) sends "
      "whatever its callers have queued as one JetStream message (a group-commit batch, after "
      "waiting up to 1 ms for the callers its last message answered); the stream leader acknowledges "
      "it once a quorum of the replicas (2 of 3 at R=3) has stored it; then the node's local "
      "replica applies it in an LMDB commit, and the append returns. The replica does not "
      "fsync (the default, docs/replication.md: it is rebuilt from JetStream after an OS "
      "crash), and **nats-server 2.9 does not fsync its file store per message: it syncs "
      "it every 2 minutes** (an internal interval, not a server option in 2.9), so the "
      "acknowledgement means \"written, not synced, by a quorum of servers\" (in their page "
      "cache), not \"on a disk\": a replicated append's durability is the quorum's. Here the "
      "three servers share one machine and one disk, so the quorum adds no protection against "
      "a power loss of this machine; on separate machines it protects against losing any "
      "minority of them. Message DB (PostgreSQL, fsync on, `synchronous_commit` on, same run, "
      "same disk) is the networked peer to compare with.")
    w("")
    w("Expected versions are checked when a message is applied, in JetStream's order, the same "
      "way on every node, so there are no compare-and-set retries. In these workloads every "
      "stream has one writer, which sends its next request only after the previous one "
      "returned, so there are **no conflicts** with one node or two (one would stop the "
      "harness); what a second writing node costs shows in the throughput: two publishers "
      "with smaller batches each, and two replicas that each apply every message (two appliers "
      "committing on the same disk and the same two CPUs). **Reads**: a node reads its local "
      "replica with embedded rill's code; they are measured on one configuration (R=3, one "
      "node), below.")
    w("")
    if floors:
        w("**JetStream alone** (`jetstream_r3`): the same workloads with no rill at all: each "
          "request is one synchronous `js_Publish` (libnats, one connection) of a message about "
          "the size of rill's transaction for it, with a message id, to a fresh stream of the "
          "same replicas on the same servers, waiting for the acknowledgement; nothing checked, "
          "applied or written locally. A single writer (`append_b*`) sends a request only after "
          "the last returned, so every request pays at least this round trip: **for `append_b*` "
          "this is a ceiling** for any replicated store that acknowledges after a JetStream "
          "quorum, whatever its design. **JetStream + consumer** (`jetstream_r3_rx`, "
          "`jetstream_r1_rx`) adds what a node with a local replica cannot skip: an ordered push "
          "consumer (as a node's applier uses) receives every message, and a request returns only "
          "once its own message has come back through it. That is the floor of rill's design "
          "without rill's own work (encoding, the local LMDB commit, handing results back), "
          "which the replicated columns are measured against below. In `concurrent16` each of "
          "the 16 threads publishes its own message; a store that batches callers into one "
          "message can pass these figures, so there they are a reference.")
        w("")
    w("| Workload | " + " | ".join(f"{col_label[s]} events/s" for s in cols) + " |")
    w("|---|" + "---:|" * len(cols))
    for wl in wls:
        cells = [rr._fmt_rate(rate(res, wl, s)) if (wl, s) in res else "—" for s in cols]
        w(f"| `{wl}` ({desc.get(wl, '')}) | " + " | ".join(cells) + " |")
    w("")
    w("Latency per request, p50 / p99:")
    w("")
    w("| Workload | " + " | ".join(col_label[s] for s in cols) + " |")
    w("|---|" + "---:|" * len(cols))
    for wl in wls:
        lat = []
        for s in cols:
            r = res.get((wl, s))
            if r and r.get("p50_us") is not None:
                lat.append(f"{rr._fmt_us(r['p50_us'])} / {rr._fmt_us(r['p99_us'])}")
            else:
                lat.append("—")
        w(f"| `{wl}` | " + " | ".join(lat) + " |")
    w("")
    short = {s: LABEL[s].replace("replicated ", "") for s in systems + floors}
    pairs = [(s, f"{s}_2n") for s in systems if f"{s}_2n" in systems]
    for title, base in (("replicated / Message DB", "messagedb"),
                        ("replicated / embedded rill", "rill")):
        w(f"Ratios of events/s within this run, {title}:")
        w("")
        shown = systems + (floors if base == "messagedb" else [])
        w("| Workload | " + " | ".join(short[s] for s in shown) + " |")
        w("|---|" + "---:|" * len(shown))
        for wl in wls:
            w(f"| `{wl}` | " + " | ".join(fmt_ratio(ratio(res, wl, base, s))
                                          for s in shown) + " |")
        w("")
    kept = [s for s in systems if FLOOR_OF.get(s) in floors]
    if kept:
        w("What the replicated store keeps of the floor of its design (events/s, replicated / "
          "JetStream + consumer with the same replicas, this run):")
        w("")
        w("| Workload | " + " | ".join(short[s] for s in kept) + " |")
        w("|---|" + "---:|" * len(kept))
        for wl in wls:
            w(f"| `{wl}` | " + " | ".join(fmt_ratio(ratio(res, wl, FLOOR_OF[s], s))
                                          for s in kept) + " |")
        w("")
    if pairs:
        w("Two writing nodes against one (events/s, same stream replicas, this run):")
        w("")
        w("| Workload | " + " | ".join(f"R={one[-1]}: 2 nodes / 1 node" for one, _ in pairs) + " |")
        w("|---|" + "---:|" * len(pairs))
        for wl in wls:
            w(f"| `{wl}` | " + " | ".join(fmt_ratio(ratio(res, wl, one, two))
                                          for one, two in pairs) + " |")
        w("")
    node = "rill_repl_r3"
    read_wls = [wl for wl, _ in WORKLOADS if (wl.startswith("read_") or wl == "projection_catchup")
                and (wl, node) in res and (wl, "rill") in res]
    if read_wls:
        w("Reads on a node (R=3, one node), beside embedded rill, this run: the read log is "
          "appended through JetStream (each request returns once the node's replica applied "
          "it), then read from the replica as the embedded store reads its own log "
          "(`projection_catchup`: a new projection on the node). The issue's target: as the "
          "embedded store.")
        w("")
        w("| Workload | embedded rill events/s | node events/s | node / embedded |")
        w("|---|---:|---:|---:|")
        for wl in read_wls:
            w(f"| `{wl}` | {rr._fmt_rate(rate(res, wl, 'rill'))} | "
              f"{rr._fmt_rate(rate(res, wl, node))} | "
              f"{fmt_ratio(ratio(res, wl, 'rill', node))} |")
        w("")
    epc = []
    for s in systems:
        r = res.get(("concurrent16", s)) or {}
        v = [r[k] for k in r if k.startswith("events_per_commit_round")]
        if v:
            epc.append(f"{LABEL[s]} {sum(v) / len(v):.1f}")
    if epc:
        w("Events per JetStream message in `concurrent16` (a node's group-commit batch; the "
          "mean of the four rounds): " + ", ".join(epc) + ".")
    w("")
    w("Targets (issue 14; replicated / Message DB, this run):")
    w("")
    w("| Workload | target | " + " | ".join(LABEL[s] for s in systems + floors) + " |")
    w("|---|---:|" + "---:|" * len(systems + floors))
    for wl, want in REPL_TARGETS:
        cells = []
        for s in systems:
            r = ratio(res, wl, "messagedb", s)
            cells.append("—" if r is None else
                         f"{r:.2f}× {'met' if r >= want else '**missed**'}")
        for s in floors:
            r = ratio(res, wl, "messagedb", s)
            if r is None:
                cells.append("—")
            elif wl.startswith("append_b"):
                # A ceiling: below the target, no replicated store reaches
                # it (jetstream_r3), or none of rill's design (_rx).
                what = "design ceiling" if s.endswith("_rx") else "ceiling"
                cells.append(f"{r:.2f}× {what} " + ("above" if r >= want else
                                                    "**below target**"))
            else:
                cells.append(f"{r:.2f}× (reference)")
        w(f"| `{wl}` | ≥ {want:g}× | " + " | ".join(cells) + " |")
    reading = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "compare_reading_replicated.md")
    if os.path.exists(reading):
        with open(reading) as f:
            w("")
            w(fill(f.read().rstrip(), res, machine))


def fill(text, res, machine):
    """Replaces {rate:WORKLOAD:SYSTEM}, {ratio:WORKLOAD:PEER}, {p50:W:S},
    {fsync:KEY}, {sratio:WORKLOAD:SYSTEM:PEER} (SYSTEM / PEER),
    {wratio:WORKLOAD:OTHER:SYSTEM} (SYSTEM's WORKLOAD / its OTHER) and
    {epm:SYSTEM} (events per JetStream message in concurrent16) in the
    hand-written reading with this run's figures. {only:WORKLOAD}TEXT{/only}
    keeps TEXT only when this run measured WORKLOAD (on any system), and
    {only:WORKLOAD}TEXT{else}OTHER{/only} puts OTHER there otherwise."""
    import re

    def only(m):
        measured = any((m.group(1), s) in res for s in ALL_SYSTEMS)
        return m.group(2) if measured else (m.group(3) or "")
    text = re.sub(r"\{only:([a-z0-9_]+)\}(.*?)(?:\{else\}(.*?))?\{/only\}", only, text,
                  flags=re.S)

    def sub(m):
        kind, a, b = m.group(1), m.group(2), m.group(3)
        if kind == "rate":
            return rr._fmt_rate(rate(res, a, b))
        if kind == "ratio":
            return fmt_ratio(ratio(res, a, b))
        if kind in ("p50", "p99"):
            r = res.get((a, b))
            return rr._fmt_us(r.get(f"{kind}_us")) if r else "—"
        if kind == "cycle":
            r = res.get(("concurrent16", "rill")) or {}
            v = [r[k] for k in r if k.startswith("events_per_commit_round")]
            ev = r.get("events_per_s")
            return rr._fmt_us(sum(v) / len(v) / ev * 1e6) if v and ev else "n/a"
        if kind == "epc":
            r = res.get(("concurrent16", "rill")) or {}
            v = [r[k] for k in r if k.startswith("events_per_commit_round")]
            return f"{sum(v) / len(v):.1f}" if v else "n/a"
        if kind == "xxh3" or kind == "xxh3ratio":
            r = res.get(("read_all", "lmdb")) or {}
            v = r.get("events_per_s_xxh3")
            if kind == "xxh3":
                return rr._fmt_rate(v)
            own = rate(res, "read_all", "rill")
            return fmt_ratio(own / v if own and v else None)
        if kind == "fsync":
            f = machine.get(a) or {}
            return f"{f.get('p50_us', 0):.0f} µs"
        return m.group(0)
    text = re.sub(r"\{(xxh3|xxh3ratio|epc|cycle)\}", lambda m: sub(re.match(r"(\w+)()()", m.group(1))),
                  text)
    def sub3(m):
        a, system, peer = m.group(1), m.group(2), m.group(3)
        return fmt_ratio(ratio(res, a, peer, system))

    def epm(m):
        r = res.get(("concurrent16", m.group(1))) or {}
        v = [r[k] for k in r if k.startswith("events_per_commit_round")]
        return f"{sum(v) / len(v):.1f}" if v else "n/a"
    def wratio(m):
        a, b = rate(res, m.group(1), m.group(3)), rate(res, m.group(2), m.group(3))
        return fmt_ratio(a / b if a is not None and b else None)
    text = re.sub(r"\{sratio:([a-z0-9_]+):([a-z0-9_]+):([a-z0-9_]+)\}", sub3, text)
    text = re.sub(r"\{wratio:([a-z0-9_]+):([a-z0-9_]+):([a-z0-9_]+)\}", wratio, text)
    text = re.sub(r"\{epm:([a-z0-9_]+)\}", epm, text)
    return re.sub(r"\{(rate|ratio|p50|p99|fsync):([a-z0-9_]+):?([a-z0-9_]*)\}", sub, text)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--peers", required=True)
    ap.add_argument("--snapshot")
    ap.add_argument("--json", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--plot", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--partial", action="store_true")
    ap.add_argument("--rt", action="store_true",
                    help="the run was under SCHED_FIFO (bench/compare --rt)")
    ap.add_argument("--pg-version", default="?")
    ap.add_argument("--pg-settings", default="")
    ap.add_argument("--mdb-version", default="?")
    ap.add_argument("--sqlite-version", default="?")
    ap.add_argument("--nats-version", default="")
    ap.add_argument("--libnats-version", default="")
    ap.add_argument("--meta", help="JSON with pg_version, pg_settings, mdb_version, "
                    "sqlite_version, rt (bench/compare writes it next to the raw results); "
                    "fills in what the flags above do not give")
    args = ap.parse_args()
    if args.meta and os.path.exists(args.meta):
        with open(args.meta) as f:
            meta = json.load(f)
        for k in ("pg_version", "pg_settings", "mdb_version", "sqlite_version", "nats_version",
                  "libnats_version"):
            if getattr(args, k) in ("?", "") and meta.get(k):
                setattr(args, k, meta[k])
        args.rt = args.rt or bool(meta.get("rt"))
    with open(args.machine) as f:
        machine = json.load(f)
    res = load_peers(args.peers)
    snap = rr._load([args.snapshot]) if args.snapshot and os.path.exists(args.snapshot) else {}
    write_json(args, machine, res)
    render(args, machine, res, snap)
    plot(args, res)


if __name__ == "__main__":
    main()
