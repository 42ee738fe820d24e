// rill_compare: the workloads of bench/compare, run against every peer in
// one process, one after another on the same disk (see docs/benchmarks.md).
// Prints one JSON object per (workload, system) on stdout; bench/compare
// adds the machine and writes bench/results/latest.json.
//
//   rill_compare --dir DIR [--quick] [--systems rill,seglog,lmdb,sqlite,messagedb]
//                [--pg-app CONNINFO --pg-admin CONNINFO] [--seconds S]
//                [--workloads append_b1,...] [--nats URL,URL,...]
//                [--read-events N]
//
// With --nats (the client URLs of a NATS JetStream cluster) the systems
// also include replicated rill (repl_peer.cc): rill_repl_r3 and
// rill_repl_r1 (a stream of 3 or 1 replicas, writers on one node) and
// rill_repl_r3_2n, rill_repl_r1_2n (writers spread over two nodes), and
// JetStream alone (jetstream_peer.cc: jetstream_r3, and jetstream_r3_rx,
// jetstream_r1_rx, which also wait for each message to come back through a
// consumer), the floor under them. They run the append_b* and concurrent16 workloads only (a
// replicated node's reads are embedded rill's reads of its local replica).
//
// Appends are timed for S seconds per system (default 4; --quick 1), split
// into kRounds rounds whose system order alternates (forwards, backwards,
// ...), so that a slow stretch of the shared disk falls on every system
// alike. Reads: one untimed warm-up
// pass, then passes until S seconds have gone by.
//
// The reads use a read log of N events (default 1M; --quick 200k; a multiple
// of 1000) loaded into every system but the replicated ones: first in runs of 100
// consecutive positions per stream (read_all, read_stream, read_random,
// projection_catchup), then reloaded with the streams interleaved event by
// event (read_stream_interleaved, read_all_interleaved); see ReadLayout in
// peer.h.
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../bench_util.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "peer.h"

namespace rill::bench {

std::string SmallStream(int i) { return absl::StrFormat("order-%04d", i); }
int StreamSlotOfBatch(uint64_t b) {
  if (b % 10 == 0) return kSmallStreams;
  return static_cast<int>((b - b / 10 - 1) % kSmallStreams);
}
int StreamSlotOfEvent(uint64_t i, ReadLayout layout) {
  if (layout == ReadLayout::kRuns) return StreamSlotOfBatch(i / kReadBatch);
  if (i % 10 == 0) return kSmallStreams;
  return static_cast<int>((i - i / 10 - 1) % kSmallStreams);
}
std::string StreamOfSlot(int slot) {
  return slot == kSmallStreams ? std::string(kBigStream) : SmallStream(slot);
}

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string dir = "/tmp";
  bool quick = false;
  std::vector<std::string> systems = {"rill", "seglog", "lmdb", "sqlite", "messagedb"};
  bool systems_given = false;
  std::vector<std::string> workloads;  // empty: all
  std::string pg_app, pg_admin;
  std::vector<std::string> nats;  // client URLs; empty: no replicated systems
  double seconds = 0;
  uint64_t read_events = 0;
};

double Secs(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
double Us(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

struct Figure {
  uint64_t events = 0;
  uint64_t calls = 0;
  double seconds = 0;
  std::vector<double> lat_us;
  std::map<std::string, double> extra;
};

double Pct(std::vector<double>& v, double q) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
}

void Emit(const std::string& workload, const std::string& system, Figure& f,
          double bytes_per_event = -1) {
  std::string extra;
  for (const auto& [k, v] : f.extra) extra += absl::StrFormat(", \"%s\": %.6g", k, v);
  auto num = [](double v) { return v < 0 ? std::string("null") : absl::StrFormat("%.6g", v); };
  absl::PrintF(
      "{\"workload\": \"%s\", \"system\": \"%s\", \"events_per_s\": %s, \"p50_us\": %s, "
      "\"p99_us\": %s, \"bytes_per_event\": %s, \"events\": %d, \"calls\": %d, "
      "\"seconds\": %.4f%s}\n",
      workload, system, num(f.seconds > 0 ? f.events / f.seconds : -1), num(Pct(f.lat_us, 0.50)),
      num(Pct(f.lat_us, 0.99)), num(bytes_per_event), f.events, f.calls, f.seconds, extra);
  std::fflush(stdout);
  absl::FPrintF(stderr, "  %-23s %-15s %12.0f events/s  p50 %8.1f us  p99 %8.1f us%s\n", workload,
                system, f.seconds > 0 ? f.events / f.seconds : 0, Pct(f.lat_us, 0.5),
                Pct(f.lat_us, 0.99),
                f.extra.count("cpu_s") && f.extra["cpu_s"] > 0
                    ? absl::StrFormat("  (%.0f events per CPU-second)", f.events / f.extra["cpu_s"])
                    : "");
}

// ------------------------------------------------------------- appends ----

constexpr int kStreams = 1000;
constexpr int kThreads = 16;
constexpr int kStreamsPerThread = 4;

// One system's state during a single-writer append workload.
struct SerialRun {
  Peer* peer;
  std::unique_ptr<PeerWriter> writer;
  std::vector<int64_t> last;  // per stream; -1: none yet
  uint64_t request = 0;       // idempotent: requests sent
  Figure fig;
};

struct Request {
  int stream;
  int64_t expected;
};

// Appends `batch` events per call to 1000 streams round robin for `secs`.
void RunBatches(SerialRun& r, const std::vector<std::string>& payloads, double secs) {
  const Clock::time_point start = Clock::now();
  int s = static_cast<int>(r.fig.calls % kStreams);
  while (Secs(start) < secs) {
    const std::string stream = SmallStream(s);
    const Clock::time_point t0 = Clock::now();
    r.writer->Append(stream, r.last[s], payloads);
    r.fig.lat_us.push_back(Us(t0));
    r.last[s] += static_cast<int64_t>(payloads.size());
    r.fig.events += payloads.size();
    ++r.fig.calls;
    if (++s == kStreams) s = 0;
  }
  r.fig.seconds += Secs(start);
}

// One event per request with an idempotency key; every 10th request is a
// retry of the request sent five before it (same key, same request).
void RunIdempotent(SerialRun& r, std::vector<Request>& sent, double secs) {
  const Clock::time_point start = Clock::now();
  while (Secs(start) < secs) {
    const uint64_t i = r.request++;
    const bool retry = i % 10 == 9;
    const uint64_t id = retry ? i - 5 : i;
    if (!retry) {
      const int s = static_cast<int>(i % kStreams);
      sent.push_back(Request{s, r.last[s]});
      r.last[s] += 1;
    } else {
      sent.push_back(sent[id]);
    }
    const Request& q = sent[id];
    const Clock::time_point t0 = Clock::now();
    const bool dedup = r.writer->AppendIdempotent(SmallStream(q.stream), q.expected, Payload(id),
                                                  absl::StrFormat("req-%d", id));
    r.fig.lat_us.push_back(Us(t0));
    if (dedup != retry) {
      Die(absl::StrFormat("%s: request %d deduplicated=%d, expected %d", r.peer->name(), i, dedup,
                          retry));
    }
    r.fig.extra["deduplicated"] += dedup;
    ++r.fig.events;
    ++r.fig.calls;
  }
  r.fig.seconds += Secs(start);
}

// Rounds per append figure; the system order of odd rounds is reversed.
constexpr int kRounds = 4;

size_t InRound(int round, size_t k, size_t n) { return round % 2 == 0 ? k : n - 1 - k; }

void SerialWorkload(const std::string& workload, std::vector<Peer*>& peers, int batch,
                    double secs) {
  std::fprintf(stderr, "== %s\n", workload.c_str());
  std::vector<SerialRun> runs;
  for (Peer* p : peers) {
    p->OpenFresh(workload);
    runs.push_back(
        SerialRun{p, p->NewThreadWriter(0, 1), std::vector<int64_t>(kStreams, -1), 0, {}});
    runs.back().fig.lat_us.reserve(1 << 20);
  }
  std::vector<std::string> payloads;
  for (int i = 0; i < std::max(batch, 1); ++i) payloads.push_back(Payload(i));
  std::vector<std::vector<Request>> sent(runs.size());
  for (int round = 0; round < kRounds; ++round) {
    for (size_t k = 0; k < runs.size(); ++k) {
      const size_t j = InRound(round, k, runs.size());
      if (batch > 0) {
        RunBatches(runs[j], payloads, secs / kRounds);
      } else {
        RunIdempotent(runs[j], sent[j], secs / kRounds);
      }
    }
  }
  for (SerialRun& r : runs) {
    r.writer.reset();
    Emit(workload, r.peer->name(), r.fig);
  }
}

// 16 threads, each with its own writer and 4 streams of its own, single
// events, for `secs`.
Figure Concurrent(Peer* peer, double secs) {
  std::vector<std::unique_ptr<PeerWriter>> writers;
  for (int t = 0; t < kThreads; ++t) writers.push_back(peer->NewThreadWriter(t, kThreads));
  std::atomic<bool> stop{false};
  std::atomic<int> ready{0};
  std::vector<Figure> figs(kThreads);
  std::vector<std::thread> threads;
  const std::string payload = Payload(7);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<int64_t> last(kStreamsPerThread, -1);
      std::vector<std::string> names;
      for (int k = 0; k < kStreamsPerThread; ++k) {
        names.push_back(absl::StrFormat("w%02d-%d", t, k));  // category w<t>
      }
      figs[t].lat_us.reserve(1 << 18);
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();
      for (int k = 0; !stop.load(std::memory_order_relaxed); k = (k + 1) % kStreamsPerThread) {
        const Clock::time_point t0 = Clock::now();
        writers[t]->Append(names[k], last[k], absl::MakeConstSpan(&payload, 1));
        figs[t].lat_us.push_back(Us(t0));
        ++last[k];
        ++figs[t].events;
      }
    });
  }
  while (ready.load() < kThreads) std::this_thread::yield();
  const Clock::time_point start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(secs));
  stop.store(true);
  for (std::thread& th : threads) th.join();
  Figure f;
  f.seconds = Secs(start);
  for (Figure& g : figs) {
    f.events += g.events;
    f.calls += g.events;
    f.lat_us.insert(f.lat_us.end(), g.lat_us.begin(), g.lat_us.end());
  }
  f.extra["threads"] = kThreads;
  return f;
}

void ConcurrentWorkload(std::vector<Peer*>& peers, double secs) {
  std::fprintf(stderr, "== concurrent16\n");
  std::vector<Figure> figs(peers.size());
  for (Peer* p : peers) p->OpenFresh("concurrent16");
  for (int round = 0; round < kRounds; ++round) {
    for (size_t k = 0; k < peers.size(); ++k) {
      const size_t j = InRound(round, k, peers.size());
      // A fresh set of streams per round: the threads' streams start at -1.
      if (round > 0) peers[j]->OpenFresh(absl::StrFormat("concurrent16-%d", round + 1));
      Figure f = Concurrent(peers[j], secs / kRounds);
      const double epc = peers[j]->CloseAndCountEventsPerCommit(f.events);
      if (epc > 0) figs[j].extra[absl::StrFormat("events_per_commit_round%d", round + 1)] = epc;
      figs[j].events += f.events;
      figs[j].calls += f.calls;
      figs[j].seconds += f.seconds;
      figs[j].lat_us.insert(figs[j].lat_us.end(), f.lat_us.begin(), f.lat_us.end());
      for (const auto& [k, v] : f.extra) figs[j].extra[k] = v;
    }
  }
  for (size_t j = 0; j < peers.size(); ++j) Emit("concurrent16", peers[j]->name(), figs[j]);
}

// --------------------------------------------------------------- reads ----

double CpuSecs() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Read passes after one untimed warm-up pass. Also records the process's CPU
// time (extra "cpu_s"): for the in-process systems it shows how much of a
// figure a busy machine took away (wall time includes waiting for a CPU).
template <typename Fn>
Figure TimedPasses(double secs, Fn pass) {
  Figure f;
  uint64_t sum = 0;
  pass(&sum);  // warm-up, untimed: the VM evicts idle file cache
  const Clock::time_point start = Clock::now();
  const double cpu0 = CpuSecs();
  do {
    const Clock::time_point t0 = Clock::now();
    f.events += pass(&sum);
    f.lat_us.push_back(Us(t0));
    ++f.calls;
  } while (Secs(start) < secs);
  f.seconds = Secs(start);
  f.extra["cpu_s"] = CpuSecs() - cpu0;
  if (sum == 42) std::fprintf(stderr, " ");  // keep `sum` alive
  return f;
}

// Loads the read log of `n` events in `layout` into every reader; returns
// each one's bytes per event, by name.
std::map<std::string, double> LoadReadLogs(const std::vector<Peer*>& readers, uint64_t n,
                                           ReadLayout layout) {
  absl::FPrintF(stderr, "== read log: %d events, %s\n", n,
                layout == ReadLayout::kRuns ? "runs of 100" : "interleaved");
  std::map<std::string, double> bytes;
  for (Peer* p : readers) {
    const Clock::time_point t0 = Clock::now();
    p->LoadReadLog(n, layout);
    bytes[p->name()] = p->BytesPerEvent();
    std::fprintf(stderr, "  %-10s loaded in %.1f s, %.0f bytes/event\n", p->name().c_str(),
                 Secs(t0), bytes[p->name()]);
  }
  return bytes;
}

// The whole log forwards, `n` events (read_all, read_all_interleaved); raw
// LMDB also with XXH3 when `xxh3`.
void ReadAllWorkload(const std::string& workload, const std::vector<Peer*>& readers, uint64_t n,
                     double secs, std::map<std::string, double>& bytes, bool xxh3) {
  std::fprintf(stderr, "== %s\n", workload.c_str());
  for (Peer* p : readers) {
    Figure f = TimedPasses(secs, [&](uint64_t* sum) {
      const uint64_t got = p->ReadAll(sum);
      if (got != n) Die(absl::StrFormat("%s %s: %d of %d", p->name(), workload, got, n));
      return got;
    });
    f.lat_us.clear();  // one figure per full scan: not a latency
    if (xxh3 && p->name() == "lmdb") {
      Figure h = TimedPasses(secs / 2, [&](uint64_t* sum) { return p->ReadAllHashed(sum); });
      f.extra["events_per_s_xxh3"] = h.events / h.seconds;
    }
    Emit(workload, p->name(), f, bytes[p->name()]);
  }
}

// kBigStream whole, forwards, `big` events (read_stream,
// read_stream_interleaved).
void ReadStreamWorkload(const std::string& workload, const std::vector<Peer*>& readers,
                        uint64_t big, double secs, std::map<std::string, double>& bytes) {
  std::fprintf(stderr, "== %s\n", workload.c_str());
  for (Peer* p : readers) {
    Figure f = TimedPasses(secs, [&](uint64_t* sum) {
      const uint64_t got = p->ReadStream(kBigStream, sum);
      if (got != big) Die(absl::StrFormat("%s %s: %d of %d", p->name(), workload, got, big));
      return got;
    });
    f.lat_us.clear();
    Emit(workload, p->name(), f, bytes[p->name()]);
  }
}

void ReadWorkloads(std::vector<Peer*>& peers, const Args& args,
                   const std::vector<std::string>& wanted) {
  auto want = [&](const char* w) {
    return wanted.empty() || std::find(wanted.begin(), wanted.end(), w) != wanted.end();
  };
  const bool runs =
      want("read_all") || want("read_stream") || want("read_random") || want("projection_catchup");
  const bool interleaved = want("read_stream_interleaved") || want("read_all_interleaved");
  if (!runs && !interleaved) return;
  const uint64_t n = args.read_events;
  // Only then do both layouts give kBigStream exactly n / 10 events.
  if (n % 1000 != 0) Die(absl::StrFormat("--read-events %d: must be a multiple of 1000", n));
  const uint64_t big = n / 10;
  std::vector<Peer*> readers;
  for (Peer* p : peers) {
    if (p->reads()) readers.push_back(p);
  }
  if (readers.empty()) return;
  const double secs = args.seconds;
  std::map<std::string, double> bytes;
  if (runs) bytes = LoadReadLogs(readers, n, ReadLayout::kRuns);
  if (want("read_all")) ReadAllWorkload("read_all", readers, n, secs, bytes, true);
  if (want("read_stream")) ReadStreamWorkload("read_stream", readers, big, secs, bytes);
  if (want("read_random")) {
    std::fprintf(stderr, "== read_random\n");
    constexpr int kSlice = 20;
    // Small streams that hold events, and the fewest events any of them holds.
    const uint64_t small_batches = n / kReadBatch - (n / kReadBatch + 9) / 10;
    const int streams = static_cast<int>(std::min<uint64_t>(kSmallStreams, small_batches));
    const int64_t small_len =
        static_cast<int64_t>(small_batches / static_cast<uint64_t>(streams)) * kReadBatch;
    for (Peer* p : readers) {
      uint64_t sum = 0;
      for (int s = 0; s < streams; ++s) p->ReadStream(SmallStream(s), &sum);  // warm
      std::mt19937_64 rng(7);
      Figure f;
      const Clock::time_point start = Clock::now();
      while (Secs(start) < secs) {
        const int s = static_cast<int>(rng() % streams);
        const int64_t from = static_cast<int64_t>(rng() % (small_len - kSlice + 1));
        const Clock::time_point t0 = Clock::now();
        const uint64_t got = p->ReadSlice(SmallStream(s), from, kSlice, &sum);
        f.lat_us.push_back(Us(t0));
        if (got != kSlice) Die(absl::StrFormat("%s read_random: %d of %d", p->name(), got, kSlice));
        f.events += got;
        ++f.calls;
      }
      f.seconds = Secs(start);
      f.extra["events_per_read"] = kSlice;
      Emit("read_random", p->name(), f);
    }
  }
  if (want("projection_catchup")) {
    std::fprintf(stderr, "== projection_catchup\n");
    for (Peer* p : readers) {
      if (!p->projections()) continue;
      uint64_t sum = 0;
      p->ReadAll(&sum);  // warm
      Figure f;
      const Clock::time_point start = Clock::now();
      do {
        const double s = p->ProjectionCatchUpSeconds();
        f.seconds += s;
        f.events += n;
        f.lat_us.push_back(s * 1e6);
        ++f.calls;
      } while (Secs(start) < secs);
      f.lat_us.clear();
      Emit("projection_catchup", p->name(), f);
    }
  }
  if (interleaved) {
    bytes = LoadReadLogs(readers, n, ReadLayout::kInterleaved);
    if (want("read_stream_interleaved")) {
      ReadStreamWorkload("read_stream_interleaved", readers, big, secs, bytes);
    }
    if (want("read_all_interleaved")) {
      ReadAllWorkload("read_all_interleaved", readers, n, secs, bytes, false);
    }
  }
}

std::vector<std::string> List(const char* s) { return absl::StrSplit(s, ',', absl::SkipEmpty()); }

// The replicas R of a replicated system named `prefix` R [suffix] (R in
// 1..5; the suffix empty or `suffix`), and whether it has the suffix. Dies on
// another name, or without --nats.
int ParseReplicated(const std::string& system, const Args& args, const std::string& prefix,
                    const char* suffix, bool* has_suffix) {
  int replicas = 0;
  char rest[8] = {};
  const std::string format = prefix + "%d%7s";
  if (system.rfind(prefix, 0) != 0 ||
      std::sscanf(system.c_str(), format.c_str(), &replicas, rest) < 1 || replicas < 1 ||
      replicas > 5 || (rest[0] != '\0' && std::strcmp(rest, suffix) != 0)) {
    Die("unknown system " + system);
  }
  if (args.nats.empty()) Die(system + " needs --nats URL,URL,...");
  *has_suffix = rest[0] != '\0';
  return replicas;
}

// rill_repl_r<R>[_2n]: a stream of R replicas, one node or two.
std::unique_ptr<Peer> NewReplicated(const std::string& system, const Args& args) {
  bool two_nodes = false;
  const int replicas = ParseReplicated(system, args, "rill_repl_r", "_2n", &two_nodes);
  return NewReplicatedRillPeer(system, args.dir + "/" + system, args.nats, replicas,
                               two_nodes ? 2 : 1);
}

// jetstream_r<R>[_rx]: JetStream alone, R replicas; _rx waits for delivery.
std::unique_ptr<Peer> NewJetStream(const std::string& system, const Args& args) {
  bool receive = false;
  const int replicas = ParseReplicated(system, args, "jetstream_r", "_rx", &receive);
  return NewJetStreamPeer(system, args.nats, replicas, receive);
}

}  // namespace
}  // namespace rill::bench

int main(int argc, char** argv) {
  using namespace rill::bench;
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) Die("missing value after " + a);
      return argv[++i];
    };
    if (a == "--dir")
      args.dir = next();
    else if (a == "--quick")
      args.quick = true;
    else if (a == "--systems") {
      args.systems = List(next());
      args.systems_given = true;
    } else if (a == "--workloads")
      args.workloads = List(next());
    else if (a == "--pg-app")
      args.pg_app = next();
    else if (a == "--pg-admin")
      args.pg_admin = next();
    else if (a == "--seconds")
      args.seconds = std::atof(next());
    else if (a == "--nats")
      args.nats = List(next());
    else if (a == "--read-events")
      args.read_events = std::strtoull(next(), nullptr, 10);
    else
      Die("unknown argument " + a);
  }
  if (args.seconds <= 0) args.seconds = args.quick ? 1.0 : 4.0;
  if (args.read_events == 0) args.read_events = args.quick ? 200000 : 1000000;
  if (!args.nats.empty() && !args.systems_given) {
    for (const char* s : {"rill_repl_r3", "rill_repl_r1", "rill_repl_r3_2n", "rill_repl_r1_2n",
                          "jetstream_r3", "jetstream_r3_rx", "jetstream_r1_rx"}) {
      args.systems.push_back(s);
    }
  }

  std::vector<std::unique_ptr<Peer>> owned;
  for (const std::string& s : args.systems) {
    if (s == "rill")
      owned.push_back(NewRillPeer(args.dir + "/rill"));
    else if (s == "lmdb")
      owned.push_back(NewLmdbPeer(args.dir + "/lmdb"));
    else if (s == "seglog")
      owned.push_back(NewSeglogPeer(args.dir + "/seglog"));
    else if (s == "sqlite")
      owned.push_back(NewSqlitePeer(args.dir + "/sqlite"));
    else if (s == "messagedb")
      owned.push_back(NewMessageDbPeer(args.pg_app, args.pg_admin));
    else if (s.rfind("rill_repl_r", 0) == 0)
      owned.push_back(NewReplicated(s, args));
    else if (s.rfind("jetstream_r", 0) == 0)
      owned.push_back(NewJetStream(s, args));
    else
      Die("unknown system " + s);
  }
  std::vector<Peer*> peers;
  for (auto& p : owned) peers.push_back(p.get());
  auto want = [&](const char* w) {
    return args.workloads.empty() ||
           std::find(args.workloads.begin(), args.workloads.end(), w) != args.workloads.end();
  };
  for (int batch : {1, 10, 100, 1000}) {
    const std::string w = absl::StrFormat("append_b%d", batch);
    if (want(w.c_str())) SerialWorkload(w, peers, batch, args.seconds);
  }
  if (want("concurrent16")) ConcurrentWorkload(peers, args.seconds);
  if (want("idempotent")) {
    std::vector<Peer*> embedded;
    for (Peer* p : peers) {
      if (!p->replicated()) embedded.push_back(p);
    }
    if (!embedded.empty()) SerialWorkload("idempotent", embedded, 0, args.seconds);
  }
  ReadWorkloads(peers, args, args.workloads);
  for (Peer* p : peers) p->Close();
  return 0;
}
