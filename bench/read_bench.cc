// Read throughput: rill's scans against a raw LMDB cursor over the same data.
//
// The fixtures are built once per process (rill with Durability::kNoSyncUnsafe,
// raw LMDB with MDB_NOSYNC, to save time; reads do not depend on it): a log of
// 1M events (200k with RILL_BENCH_QUICK) of 256-byte payloads, appended in
// batches of 100 events, every 10th batch to the stream "big" (100k events,
// interleaved with the rest of the log), the others round robin over 999
// streams. Everything is in the page cache: these are CPU-bound figures.
//
//   BM_RillReadAll/scan     ScanAll over the whole log, zero-copy views.
//   BM_RillReadAll/owned    ReadAll in pages of 4096 owning RecordedEvents.
//   BM_LmdbReadAll          one cursor over `events` in one read txn.
//   BM_LmdbReadAll/xxh3     the same, also XXH3-64 over each value: what
//                           rill's per-record checksum costs on its own.
//   BM_RillReadStream/scan  ScanStream over "big".
//   BM_RillReadStream/owned ReadStream over "big" in pages of 4096.
//   BM_LmdbReadStream       cursor over stream_index + mdb_get per event.
//
// Every variant touches the position, the payload size and the payload's
// first and last byte of each event, so no read can be optimized away.
#include <benchmark/benchmark.h>
#include <lmdb.h>
#include <xxhash.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench_util.h"
#include "rill/projection.h"
#include "rill/store.h"

namespace rill::bench {
namespace {

constexpr int kBatch = 100;
constexpr int kSmallStreams = 999;
constexpr const char* kBigStream = "big";
constexpr size_t kPage = 4096;

uint64_t LogEvents() { return Quick() ? 200000 : 1000000; }
uint64_t BigStreamEvents() { return LogEvents() / 10; }

// Batch b goes to "big" when b % 10 == 0, else to a small stream.
std::string StreamOfBatch(uint64_t b) {
  if (b % 10 == 0) return kBigStream;
  return absl::StrFormat("order-%04d", (b - b / 10 - 1) % kSmallStreams);
}

inline uint64_t Touch(uint64_t position, absl::string_view payload) {
  return position + payload.size() + static_cast<unsigned char>(payload.front()) +
         static_cast<unsigned char>(payload.back());
}

// What one scan saw: the events it read and the sum of Touch() over them.
struct Scanned {
  absl::Status status;
  uint64_t events = 0;
  uint64_t sum = 0;
};

// The loop of every scan benchmark: one call of `scan` (returning Scanned) per
// iteration, each of which must read `expected` events; reports events_per_s.
template <typename Scan>
void RunScans(benchmark::State& state, const char* what, uint64_t expected, Scan scan) {
  for (auto _ : state) {
    Scanned r = scan();
    if (!r.status.ok() || r.events != expected) {
      state.SkipWithError(
          absl::StrFormat("%s: %s, %d of %d events", what, r.status.ToString(), r.events, expected)
              .c_str());
      break;
    }
    benchmark::DoNotOptimize(r.sum);
  }
  state.counters["events_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * expected), benchmark::Counter::kIsRate);
}

// One zero-copy pass: `scan` is ScanAll or ScanStream called with the visitor.
Scanned ScanViews(absl::FunctionRef<absl::Status(absl::FunctionRef<bool(const EventView&)>)> scan) {
  Scanned r;
  r.status = scan([&](const EventView& e) {
    r.sum += Touch(e.position(), e.payload());
    ++r.events;
    return true;
  });
  return r;
}

// One pass in pages of kPage owning RecordedEvents: `read(from)` is ReadAll or
// ReadStream from `from`, and the page after one ending in e starts at next(e).
template <typename From, typename Read, typename Next>
Scanned ReadPages(From from, Read read, Next next) {
  Scanned r;
  while (true) {
    absl::StatusOr<std::vector<RecordedEvent>> page = read(from);
    if (!page.ok()) {
      r.status = page.status();
      break;
    }
    for (const RecordedEvent& e : *page) r.sum += Touch(e.position, e.payload);
    r.events += page->size();
    if (page->size() < kPage) break;
    from = next(page->back());
  }
  return r;
}

ScratchDir* g_scratch = nullptr;
ScratchDir& Scratch() {
  if (g_scratch == nullptr) g_scratch = new ScratchDir("read");
  return *g_scratch;
}

// ---------------------------------------------------------------- rill ----

std::unique_ptr<Store>* g_store = nullptr;

Store& RillFixture() {
  if (g_store != nullptr) return **g_store;
  StoreOptions options;
  options.durability = Durability::kNoSyncUnsafe;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(Scratch().Sub("rill"), options);
  if (!store.ok()) Die("Store::Open: " + store.status().ToString());
  const uint64_t batches = LogEvents() / kBatch;
  std::vector<EventData> events(kBatch);
  for (int i = 0; i < kBatch; ++i) {
    events[i].type = "OrderLinePlaced";
    events[i].payload = Payload(i);
  }
  for (uint64_t b = 0; b < batches; ++b) {
    absl::StatusOr<AppendResult> r =
        (*store)->Append(StreamOfBatch(b), ExpectedVersion::Any(), events);
    if (!r.ok()) Die("fixture Append: " + r.status().ToString());
  }
  g_store = new std::unique_ptr<Store>(*std::move(store));
  return **g_store;
}

// Bytes of the log's pages in use per event (events, index, streams...).
double RillBytesPerEvent(Store& store) {
  absl::StatusOr<StoreStats> stats = store.Stats();
  if (!stats.ok() || stats->event_count == 0) return 0;
  return static_cast<double>(stats->used_bytes) / stats->event_count;
}

void BM_RillReadAllScan(benchmark::State& state) {
  Store& store = RillFixture();
  RunScans(state, "ScanAll", LogEvents(), [&] {
    return ScanViews([&](auto visit) { return store.ScanAll(1, ReadOptions(), visit); });
  });
  state.counters["disk_bytes_per_event"] = RillBytesPerEvent(store);
}

void BM_RillReadAllOwned(benchmark::State& state) {
  Store& store = RillFixture();
  ReadOptions options;
  options.limit = kPage;
  RunScans(state, "ReadAll", LogEvents(), [&] {
    return ReadPages(
        uint64_t{1}, [&](uint64_t from) { return store.ReadAll(from, options); },
        [](const RecordedEvent& last) { return last.position + 1; });
  });
  state.counters["disk_bytes_per_event"] = RillBytesPerEvent(store);
}

void BM_RillReadStreamScan(benchmark::State& state) {
  Store& store = RillFixture();
  RunScans(state, "ScanStream", BigStreamEvents(), [&] {
    return ScanViews(
        [&](auto visit) { return store.ScanStream(kBigStream, 0, ReadOptions(), visit); });
  });
  state.counters["disk_bytes_per_event"] = RillBytesPerEvent(store);
}

void BM_RillReadStreamOwned(benchmark::State& state) {
  Store& store = RillFixture();
  ReadOptions options;
  options.limit = kPage;
  RunScans(state, "ReadStream", BigStreamEvents(), [&] {
    return ReadPages(
        int64_t{0}, [&](int64_t from) { return store.ReadStream(kBigStream, from, options); },
        [](const RecordedEvent& last) { return last.version + 1; });
  });
  state.counters["disk_bytes_per_event"] = RillBytesPerEvent(store);
}

// ------------------------------------------------------------ raw LMDB ----

RawLog* g_raw = nullptr;
uint64_t g_big_stream_id = 0;

RawLog& RawFixture() {
  if (g_raw != nullptr) return *g_raw;
  g_raw = new RawLog(Scratch().Sub("lmdb"), MDB_NOSYNC);
  const uint64_t batches = LogEvents() / kBatch;
  std::vector<std::string> names;
  std::vector<RawLog::StreamRecord> recs(kSmallStreams + 1, RawLog::StreamRecord{});
  uint64_t next_position = 1;
  const std::string payload = Payload(0);
  for (uint64_t b = 0; b < batches; ++b) {
    const size_t slot = b % 10 == 0 ? kSmallStreams : (b - b / 10 - 1) % kSmallStreams;
    MDB_txn* txn;
    CheckMdb(mdb_txn_begin(g_raw->env(), nullptr, 0, &txn), "mdb_txn_begin");
    g_raw->AppendIn(txn, StreamOfBatch(b), &recs[slot], &next_position, payload, kBatch,
                    absl::ToUnixMicros(absl::Now()));
    CheckMdb(mdb_txn_commit(txn), "mdb_txn_commit");
  }
  g_big_stream_id = recs[kSmallStreams].first_position;
  return *g_raw;
}

double RawBytesPerEvent(RawLog& log) {
  MDB_envinfo info;
  MDB_stat stat;
  CheckMdb(mdb_env_info(log.env(), &info), "mdb_env_info");
  CheckMdb(mdb_env_stat(log.env(), &stat), "mdb_env_stat");
  return static_cast<double>(info.me_last_pgno + 1) * stat.ms_psize / LogEvents();
}

void BM_LmdbReadAll(benchmark::State& state, bool hash) {
  RawLog& log = RawFixture();
  RunScans(state, "scan", LogEvents(), [&] {
    uint64_t sum = 0, n = 0;
    MDB_txn* txn;
    MDB_cursor* cur;
    CheckMdb(mdb_txn_begin(log.env(), nullptr, MDB_RDONLY, &txn), "mdb_txn_begin");
    CheckMdb(mdb_cursor_open(txn, log.events(), &cur), "mdb_cursor_open");
    MDB_val k, v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      const absl::string_view value(static_cast<const char*>(v.mv_data), v.mv_size);
      sum += Touch(GetBE64(k.mv_data), value);
      if (hash) sum += XXH3_64bits(v.mv_data, v.mv_size);
      ++n;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return Scanned{absl::OkStatus(), n, sum};
  });
  state.counters["disk_bytes_per_event"] = RawBytesPerEvent(log);
}

void BM_LmdbReadStream(benchmark::State& state) {
  RawLog& log = RawFixture();
  RunScans(state, "stream", BigStreamEvents(), [&] {
    uint64_t sum = 0, n = 0;
    MDB_txn* txn;
    MDB_cursor* cur;
    CheckMdb(mdb_txn_begin(log.env(), nullptr, MDB_RDONLY, &txn), "mdb_txn_begin");
    CheckMdb(mdb_cursor_open(txn, log.index(), &cur), "mdb_cursor_open");
    unsigned char start[16];
    PutBE64(g_big_stream_id, start);
    PutBE64(0, start + 8);
    MDB_val k{16, start}, v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == MDB_SUCCESS && k.mv_size == 16 && GetBE64(k.mv_data) == g_big_stream_id;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      MDB_val pk{8, v.mv_data}, pv;
      CheckMdb(mdb_get(txn, log.events(), &pk, &pv), "mdb_get events");
      const absl::string_view value(static_cast<const char*>(pv.mv_data), pv.mv_size);
      sum += Touch(GetBE64(v.mv_data), value);
      ++n;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return Scanned{absl::OkStatus(), n, sum};
  });
  state.counters["disk_bytes_per_event"] = RawBytesPerEvent(log);
}

// Projection catch-up over the same log: a runner starts a fresh projection
// whose Apply does no I/O (it counts), and the iteration ends when WaitFor
// says the model reflects the head. Compare with BM_RillReadAll/scan: the
// difference is the runner's own cost (batches, checkpoints, commits).
void BM_ProjectionCatchUp(benchmark::State& state) {
  Store& store = RillFixture();
  const uint64_t expected = LogEvents();
  static int generation = 0;
  for (auto _ : state) {
    uint64_t applied = 0;
    ProjectionDef def;
    def.name = absl::StrFormat("catchup-%d", generation++);
    def.tables = {"t"};
    def.apply = [&applied](const EventView& e, ReadModelTxn&) {
      applied += e.payload().size() > 0;
      return absl::OkStatus();
    };
    absl::StatusOr<std::unique_ptr<ProjectionRunner>> runner =
        ProjectionRunner::Start(&store, {def});
    if (!runner.ok()) {
      state.SkipWithError(runner.status().ToString().c_str());
      break;
    }
    absl::Status s = (*runner)->WaitFor(def.name, expected, absl::Minutes(5));
    (*runner)->Stop();
    if (!s.ok() || applied != expected) {
      state.SkipWithError(
          absl::StrFormat("WaitFor: %s, %d of %d events applied", s.ToString(), applied, expected)
              .c_str());
      break;
    }
  }
  state.counters["events_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * expected), benchmark::Counter::kIsRate);
}

void RegisterAll() {
  const double min_time = Quick() ? 0.3 : 1.0;
  auto reg = [&](const char* name, auto fn) {
    RunLength(benchmark::RegisterBenchmark(name, fn), min_time)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  };
  reg("BM_LmdbReadAll", [](benchmark::State& s) { BM_LmdbReadAll(s, false); });
  reg("BM_LmdbReadAll/xxh3", [](benchmark::State& s) { BM_LmdbReadAll(s, true); });
  reg("BM_RillReadAll/scan", BM_RillReadAllScan);
  reg("BM_RillReadAll/owned", BM_RillReadAllOwned);
  reg("BM_LmdbReadStream", BM_LmdbReadStream);
  reg("BM_RillReadStream/scan", BM_RillReadStreamScan);
  reg("BM_RillReadStream/owned", BM_RillReadStreamOwned);
  reg("BM_ProjectionCatchUp", BM_ProjectionCatchUp);
}

void TearDown() {
  if (g_store != nullptr) {
    g_store->reset();
    delete g_store;
  }
  delete g_raw;
  delete g_scratch;  // removes both stores
}

}  // namespace
}  // namespace rill::bench

int main(int argc, char** argv) {
  rill::bench::RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  rill::bench::TearDown();
  return 0;
}
