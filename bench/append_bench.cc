// Durable append throughput: rill against raw LMDB doing the same writes.
//
//   BM_RillAppend/batch:N   one Append of N events per iteration, to 1000
//                           streams round robin, ExpectedVersion::Exact.
//   BM_LmdbAppend/batch:N   the raw LMDB ceiling: the same three puts per
//                           event (events with MDB_APPEND, stream_index) and
//                           one streams put, one transaction per batch.
//   BM_RillConcurrent16     16 threads, each appending single events to its
//                           own streams; group commit batches them.
//   BM_LmdbConcurrent16     16 threads, each its own write txn per event
//                           (serialized by LMDB's writer lock).
//   BM_*AppendNoSync/batch:N  diagnostics, NOT durable: the same appends
//                           without syncs, to expose the per-event CPU cost.
//
// Every other figure is durable: the default Durability::kDurable for rill,
// flags 0 (fsync on commit) for LMDB. Counters: events_per_s (the headline), p50_us /
// p99_us per append call, and for rill events_per_commit counted from LMDB's
// transaction ids after the store is closed. Run through bench/run.
#include <benchmark/benchmark.h>
#include <lmdb.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench_util.h"
#include "rill/store.h"

namespace rill::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kStreams = 1000;
constexpr int kThreads = 16;
constexpr int kStreamsPerThread = 4;
constexpr const char* kType = "OrderLinePlaced";

std::string StreamName(int i) { return absl::StrFormat("order-%04d", i); }
std::string ThreadStreamName(int thread, int k) {
  return absl::StrFormat("cart-t%02d-%d", thread, k);
}

EventData MakeEvent(uint64_t n) {
  EventData e;
  e.type = kType;
  e.payload = Payload(n);
  return e;
}

double NsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
}

void SetLatencyCounters(benchmark::State& state, std::vector<double>& lat_ns) {
  state.counters["p50_us"] = PercentileUs(lat_ns, 0.50);
  state.counters["p99_us"] = PercentileUs(lat_ns, 0.99);
}

// ---------------------------------------------------------------- rill ----

std::unique_ptr<Store> OpenStoreOrDie(const std::string& dir, Durability d) {
  StoreOptions options;
  options.durability = d;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir, options);
  if (!store.ok()) Die("Store::Open: " + store.status().ToString());
  return *std::move(store);
}

// Creates `names` with one event each (version 0), without syncs, and closes
// the store again: the timed part then only ever appends with Exact(n).
void SeedStore(const std::string& dir, const std::vector<std::string>& names) {
  std::unique_ptr<Store> store = OpenStoreOrDie(dir, Durability::kNoSyncUnsafe);
  std::vector<StreamAppend> appends;
  appends.reserve(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    appends.push_back(StreamAppend{names[i], ExpectedVersion::NoStream(), {MakeEvent(i)}});
  }
  absl::StatusOr<std::vector<AppendResult>> r = store->AppendMulti(appends);
  if (!r.ok()) Die("seed AppendMulti: " + r.status().ToString());
}

// The LMDB environment of a closed store's log: the env under `store_dir`
// that has an `events` database. Empty when none is found.
std::string FindLogEnv(const std::string& store_dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> candidates;
  if (fs::exists(fs::path(store_dir) / "data.mdb")) candidates.push_back(store_dir);
  for (const fs::directory_entry& e : fs::directory_iterator(store_dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && fs::exists(e.path() / "data.mdb")) {
      candidates.push_back(e.path().string());
    } else if (e.is_regular_file() && name != "data.mdb" && name.size() > 4 &&
               name.substr(name.size() - 4) == ".mdb") {
      candidates.push_back(e.path().string());  // an MDB_NOSUBDIR env
    }
  }
  for (const std::string& c : candidates) {
    MDB_env* env;
    if (mdb_env_create(&env) != MDB_SUCCESS) continue;
    mdb_env_set_maxdbs(env, 16);
    const unsigned flags = MDB_RDONLY | (fs::is_regular_file(c) ? MDB_NOSUBDIR : 0u);
    bool found = false;
    MDB_txn* txn;
    MDB_dbi dbi;
    if (mdb_env_open(env, c.c_str(), flags, 0644) == MDB_SUCCESS &&
        mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) == MDB_SUCCESS) {
      found = mdb_dbi_open(txn, "events", 0, &dbi) == MDB_SUCCESS;
      mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    if (found) return c;
  }
  return "";
}

// Counts the write transactions a store commits while it is open, from LMDB's
// last transaction id read while the store is closed. Open and Close may
// commit a transaction or two of their own (meta records): Calibrate() opens
// and closes the store once with no appends to measure that.
class CommitCounter {
 public:
  explicit CommitCounter(const std::string& store_dir) : dir_(store_dir) {
    env_ = FindLogEnv(store_dir);
  }
  bool ok() const { return !env_.empty(); }
  void Calibrate() {
    if (!ok()) return;
    const uint64_t before = LastTxnId(env_);
    OpenStoreOrDie(dir_, Durability::kDurable).reset();
    overhead_ = LastTxnId(env_) - before;
  }
  void Start() {
    if (ok()) start_ = LastTxnId(env_);
  }
  // Commits since Start(), minus the open/close overhead.
  int64_t Stop() {
    if (!ok()) return -1;
    return static_cast<int64_t>(LastTxnId(env_) - start_ - overhead_);
  }

 private:
  std::string dir_;
  std::string env_;
  uint64_t overhead_ = 0;
  uint64_t start_ = 0;
};

void BM_RillAppend(benchmark::State& state, Durability durability) {
  const int batch = static_cast<int>(state.range(0));
  ScratchDir scratch("rill-append");
  const std::string dir = scratch.Sub("store");
  std::vector<std::string> names;
  for (int i = 0; i < kStreams; ++i) names.push_back(StreamName(i));
  SeedStore(dir, names);
  CommitCounter commits(dir);
  commits.Calibrate();
  commits.Start();
  std::unique_ptr<Store> store = OpenStoreOrDie(dir, durability);

  std::vector<EventData> events;
  for (int i = 0; i < batch; ++i) events.push_back(MakeEvent(i));
  std::vector<int64_t> last_version(kStreams, 0);
  std::vector<double> lat_ns;
  lat_ns.reserve(1 << 16);
  int s = 0;
  for (auto _ : state) {
    const Clock::time_point t0 = Clock::now();
    absl::StatusOr<AppendResult> r =
        store->Append(names[s], ExpectedVersion::Exact(last_version[s]), events);
    lat_ns.push_back(NsSince(t0));
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      break;
    }
    last_version[s] = r->last_version;
    if (++s == kStreams) s = 0;
  }
  const double n = static_cast<double>(state.iterations()) * batch;
  state.counters["events_per_s"] = benchmark::Counter(n, benchmark::Counter::kIsRate);
  SetLatencyCounters(state, lat_ns);
  store.reset();
  const int64_t c = commits.Stop();
  if (c > 0) state.counters["events_per_commit"] = n / static_cast<double>(c);
}

// One shared store for the 16 threads of BM_RillConcurrent16; thread 0 sets it
// up before the (barrier-synchronized) timed loop and tears it down after.
struct ConcurrentShared {
  std::unique_ptr<ScratchDir> scratch;
  std::string dir;
  std::unique_ptr<CommitCounter> commits;
  std::unique_ptr<Store> store;
  std::mutex mu;
  std::vector<double> lat_ns;
  std::atomic<int> done{0};
};
ConcurrentShared* g_rill_shared = nullptr;

void BM_RillConcurrent16(benchmark::State& state) {
  if (state.thread_index() == 0) {
    g_rill_shared = new ConcurrentShared;
    ConcurrentShared& sh = *g_rill_shared;
    sh.scratch = std::make_unique<ScratchDir>("rill-concurrent");
    sh.dir = sh.scratch->Sub("store");
    std::vector<std::string> names;
    for (int t = 0; t < state.threads(); ++t)
      for (int k = 0; k < kStreamsPerThread; ++k) names.push_back(ThreadStreamName(t, k));
    SeedStore(sh.dir, names);
    sh.commits = std::make_unique<CommitCounter>(sh.dir);
    sh.commits->Calibrate();
    sh.commits->Start();
    sh.store = OpenStoreOrDie(sh.dir, Durability::kDurable);
  }
  // (The loop's start is a barrier: thread 0's setup is done before any
  // thread reads g_rill_shared.)
  std::vector<std::string> names;
  std::vector<EventData> event;
  std::vector<int64_t> last_version(kStreamsPerThread, 0);
  std::vector<double> lat_ns;
  lat_ns.reserve(1 << 14);
  int k = 0;
  bool first = true;
  ConcurrentShared* sh = nullptr;
  for (auto _ : state) {
    if (first) {
      first = false;
      sh = g_rill_shared;
      for (int i = 0; i < kStreamsPerThread; ++i)
        names.push_back(ThreadStreamName(state.thread_index(), i));
      event.push_back(MakeEvent(state.thread_index()));
    }
    const Clock::time_point t0 = Clock::now();
    absl::StatusOr<AppendResult> r =
        sh->store->Append(names[k], ExpectedVersion::Exact(last_version[k]), event);
    lat_ns.push_back(NsSince(t0));
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      break;
    }
    last_version[k] = r->last_version;
    if (++k == kStreamsPerThread) k = 0;
  }
  if (sh == nullptr) sh = g_rill_shared;
  {
    std::lock_guard<std::mutex> l(sh->mu);
    sh->lat_ns.insert(sh->lat_ns.end(), lat_ns.begin(), lat_ns.end());
  }
  sh->done.fetch_add(1);
  // Counters are summed over threads: only thread 0 sets the totals.
  if (state.thread_index() == 0) {
    while (sh->done.load() < state.threads()) std::this_thread::yield();
    const double n = static_cast<double>(state.iterations()) * state.threads();
    state.counters["events_per_s"] = benchmark::Counter(n, benchmark::Counter::kIsRate);
    SetLatencyCounters(state, sh->lat_ns);
    sh->store.reset();
    const int64_t c = sh->commits->Stop();
    if (c > 0) {
      state.counters["events_per_commit"] = n / static_cast<double>(c);
      state.counters["commits_per_s"] =
          benchmark::Counter(static_cast<double>(c), benchmark::Counter::kIsRate);
    }
    delete g_rill_shared;
    g_rill_shared = nullptr;
  }
}

// ------------------------------------------------------------ raw LMDB ----

void BM_LmdbAppend(benchmark::State& state, unsigned env_flags) {
  const int batch = static_cast<int>(state.range(0));
  ScratchDir scratch("lmdb-append");
  RawLog log(scratch.Sub("env"), env_flags);
  std::vector<std::string> names;
  std::vector<RawLog::StreamRecord> recs(kStreams, RawLog::StreamRecord{});
  uint64_t next_position = 1;
  const std::string payload = Payload(0);
  {
    MDB_txn* txn;
    CheckMdb(mdb_txn_begin(log.env(), nullptr, 0, &txn), "mdb_txn_begin");
    for (int i = 0; i < kStreams; ++i) {
      names.push_back(StreamName(i));
      log.AppendIn(txn, names[i], &recs[i], &next_position, payload, 1,
                   absl::ToUnixMicros(absl::Now()));
    }
    CheckMdb(mdb_txn_commit(txn), "mdb_txn_commit");
  }
  std::vector<double> lat_ns;
  lat_ns.reserve(1 << 16);
  int s = 0;
  for (auto _ : state) {
    const Clock::time_point t0 = Clock::now();
    MDB_txn* txn;
    CheckMdb(mdb_txn_begin(log.env(), nullptr, 0, &txn), "mdb_txn_begin");
    log.AppendIn(txn, names[s], &recs[s], &next_position, payload, batch,
                 absl::ToUnixMicros(absl::Now()));
    CheckMdb(mdb_txn_commit(txn), "mdb_txn_commit");
    lat_ns.push_back(NsSince(t0));
    if (++s == kStreams) s = 0;
  }
  state.counters["events_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * batch, benchmark::Counter::kIsRate);
  SetLatencyCounters(state, lat_ns);
}

struct RawShared {
  std::unique_ptr<ScratchDir> scratch;
  std::unique_ptr<RawLog> log;
  uint64_t next_position = 1;  // guarded by LMDB's writer lock
  std::mutex mu;
  std::vector<double> lat_ns;
  std::atomic<int> done{0};
};
RawShared* g_raw_shared = nullptr;

void BM_LmdbConcurrent16(benchmark::State& state) {
  if (state.thread_index() == 0) {
    g_raw_shared = new RawShared;
    g_raw_shared->scratch = std::make_unique<ScratchDir>("lmdb-concurrent");
    g_raw_shared->log = std::make_unique<RawLog>(g_raw_shared->scratch->Sub("env"), 0);
  }
  std::vector<std::string> names;
  std::vector<RawLog::StreamRecord> recs(kStreamsPerThread, RawLog::StreamRecord{});
  const std::string payload = Payload(state.thread_index());
  std::vector<double> lat_ns;
  lat_ns.reserve(1 << 14);
  int k = 0;
  bool first = true;
  RawShared* sh = nullptr;
  for (auto _ : state) {
    if (first) {
      first = false;
      sh = g_raw_shared;
      for (int i = 0; i < kStreamsPerThread; ++i)
        names.push_back(ThreadStreamName(state.thread_index(), i));
    }
    const Clock::time_point t0 = Clock::now();
    MDB_txn* txn;
    CheckMdb(mdb_txn_begin(sh->log->env(), nullptr, 0, &txn), "mdb_txn_begin");
    // Inside the write txn: LMDB's writer lock orders next_position.
    sh->log->AppendIn(txn, names[k], &recs[k], &sh->next_position, payload, 1,
                      absl::ToUnixMicros(absl::Now()));
    CheckMdb(mdb_txn_commit(txn), "mdb_txn_commit");
    lat_ns.push_back(NsSince(t0));
    if (++k == kStreamsPerThread) k = 0;
  }
  if (sh == nullptr) sh = g_raw_shared;
  {
    std::lock_guard<std::mutex> l(sh->mu);
    sh->lat_ns.insert(sh->lat_ns.end(), lat_ns.begin(), lat_ns.end());
  }
  sh->done.fetch_add(1);
  if (state.thread_index() == 0) {
    while (sh->done.load() < state.threads()) std::this_thread::yield();
    const double n = static_cast<double>(state.iterations()) * state.threads();
    state.counters["events_per_s"] = benchmark::Counter(n, benchmark::Counter::kIsRate);
    state.counters["events_per_commit"] = 1;
    SetLatencyCounters(state, sh->lat_ns);
    delete g_raw_shared;
    g_raw_shared = nullptr;
  }
}

void RegisterAll() {
  const double min_time = SyncBoundMinTime();
  // Raw and rill alternate per batch size so that drift of the disk over
  // the run does not favour either.
  for (int batch : {1, 10, 100, 1000}) {
    RunLength(benchmark::RegisterBenchmark("BM_LmdbAppend", BM_LmdbAppend, 0u), min_time)
        ->ArgName("batch")
        ->Arg(batch)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
    RunLength(benchmark::RegisterBenchmark("BM_RillAppend", BM_RillAppend, Durability::kDurable),
              min_time)
        ->ArgName("batch")
        ->Arg(batch)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }
  RunLength(benchmark::RegisterBenchmark("BM_LmdbConcurrent16", BM_LmdbConcurrent16), min_time)
      ->Threads(kThreads)
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
  RunLength(benchmark::RegisterBenchmark("BM_RillConcurrent16", BM_RillConcurrent16), min_time)
      ->Threads(kThreads)
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
  // Diagnostics, NOT durable: the same appends without syncs (rill
  // kNoSyncUnsafe, LMDB MDB_NOSYNC) show the CPU and write cost per event
  // that the syncs otherwise hide.
  for (int batch : {1, 1000}) {
    RunLength(
        benchmark::RegisterBenchmark("BM_LmdbAppendNoSync", BM_LmdbAppend, unsigned{MDB_NOSYNC}),
        min_time / 2)
        ->ArgName("batch")
        ->Arg(batch)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
    RunLength(benchmark::RegisterBenchmark("BM_RillAppendNoSync", BM_RillAppend,
                                           Durability::kNoSyncUnsafe),
              min_time / 2)
        ->ArgName("batch")
        ->Arg(batch)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace
}  // namespace rill::bench

int main(int argc, char** argv) {
  rill::bench::RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
