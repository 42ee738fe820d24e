// Aggregate loads with and without snapshots, and replays.
//
// The fixture is built once per process (Durability::kNoSyncUnsafe, to save
// time): four streams of 100k events each (20k with RILL_BENCH_QUICK) of
// 256-byte payloads, appended in interleaved batches of 1000. "plain" has no
// snapshot; "snap-999", "snap-499" and "snap-0" have one snapshot (1 KiB of
// data) that leaves 999, 499 and 0 events to fold. With a policy of a
// snapshot every 1000 events, 999 is the most a load ever folds. Everything
// is in the page cache: these are CPU-bound figures.
//
//   BM_LoadAggregate/plain     LoadAggregate of "plain": folds every event.
//   BM_LoadAggregate/snap_N    LoadAggregate from the snapshot + N events
//                              (policy every 1000: never saves here).
//   BM_SaveSnapshot            Save of 1 KiB (one derived write transaction,
//                              not synced in this fixture) + pruning to 3.
//   BM_ReplayPositions         ReplayPositions over the whole log.
//   BM_ReplayTimeRange         ReplayTimeRange over the last quarter of the
//                              log's time: binary search + scan.
//   BM_FirstPositionAtOrAfter  the binary search alone.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench_util.h"
#include "rill/replay.h"
#include "rill/snapshot.h"
#include "rill/store.h"

namespace rill::bench {
namespace {

constexpr int kBatch = 1000;
constexpr uint32_t kSchema = 1;
constexpr size_t kSnapshotBytes = 1024;
const char* const kStreams[] = {"plain", "snap-999", "snap-499", "snap-0"};
constexpr int64_t kLeftToFold[] = {-1, 999, 499, 0};  // -1: no snapshot

int64_t StreamEvents() { return Quick() ? 20000 : 100000; }

// The aggregate: cheap to fold, so the figures are rill's cost.
struct Account {
  int64_t count = 0;
  int64_t bytes = 0;
  uint64_t mix = 0;
};
void Apply(Account& a, const EventView& e) {
  const absl::string_view p = e.payload();
  ++a.count;
  a.bytes += static_cast<int64_t>(p.size());
  a.mix = a.mix * 31 + static_cast<unsigned char>(p[p.size() / 2]);
}
// 24 bytes of state, padded to kSnapshotBytes as a stand-in for a real one.
std::string Encode(const Account& a) {
  std::string out(kSnapshotBytes, '\0');
  std::memcpy(out.data(), &a, sizeof(a));
  return out;
}
absl::StatusOr<Account> Decode(absl::string_view data) {
  if (data.size() != kSnapshotBytes) {
    return absl::DataLossError("bad snapshot size");
  }
  Account a;
  std::memcpy(&a, data.data(), sizeof(a));
  return a;
}

struct Fixture {
  ScratchDir dir{"snapshot"};  // destroyed after the store
  std::unique_ptr<Store> store;
  std::unique_ptr<SnapshotStore> snapshots;  // policy: every 1000, keep 3
  std::unique_ptr<SnapshotStore> on_demand;  // policy: never saves
  absl::Time quarter_time;                   // 3/4 of the way through the log
  uint64_t head = 0;
};

Fixture* g_fixture = nullptr;  // deleted by TearDown

Fixture& GetFixture() {
  if (g_fixture == nullptr) {
    auto* f = new Fixture;
    StoreOptions options;
    options.durability = Durability::kNoSyncUnsafe;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(f->dir.Sub("store"), options);
    if (!store.ok()) Die("Store::Open: " + store.status().ToString());
    f->store = *std::move(store);
    std::vector<EventData> events(kBatch);
    for (int i = 0; i < kBatch; ++i) {
      events[i].type = "Deposited";
      events[i].payload = Payload(i);
    }
    for (int64_t done = 0; done < StreamEvents(); done += kBatch) {
      for (const char* stream : kStreams) {
        absl::Status s = f->store->Append(stream, ExpectedVersion::Any(), events).status();
        if (!s.ok()) Die("fixture Append: " + s.ToString());
      }
    }
    SnapshotPolicy every_1000;
    every_1000.every_n_events = 1000;
    auto snapshots = SnapshotStore::Open(f->store.get(), every_1000);
    auto on_demand = SnapshotStore::Open(f->store.get());
    if (!snapshots.ok() || !on_demand.ok()) Die("SnapshotStore::Open");
    f->snapshots = *std::move(snapshots);
    f->on_demand = *std::move(on_demand);
    for (size_t i = 0; i < 4; ++i) {
      if (kLeftToFold[i] < 0) continue;
      const int64_t at = StreamEvents() - 1 - kLeftToFold[i];
      Account a;
      absl::Status s = f->store->ScanStream(kStreams[i], 0, ReadOptions(), [&](const EventView& e) {
        if (e.version() > at) {
          return false;
        }
        Apply(a, e);
        return true;
      });
      if (s.ok()) s = f->on_demand->Save(kStreams[i], at, kSchema, Encode(a));
      if (!s.ok()) Die("fixture snapshot: " + s.ToString());
    }
    absl::StatusOr<uint64_t> head = f->store->HeadPosition();
    if (!head.ok()) Die("HeadPosition");
    f->head = *head;
    ReadOptions one;
    one.limit = 1;
    absl::Status s = f->store->ScanAll(f->head * 3 / 4, one, [&](const EventView& e) {
      f->quarter_time = e.recorded_at();
      return false;
    });
    if (!s.ok()) Die("fixture time");
    g_fixture = f;
  }
  return *g_fixture;
}

void TearDown() {
  if (g_fixture == nullptr) return;
  g_fixture->snapshots.reset();
  g_fixture->on_demand.reset();
  g_fixture->store.reset();
  delete g_fixture;  // removes the store's directory
}

void BM_LoadAggregate(benchmark::State& state, size_t which) {
  Fixture& f = GetFixture();
  SnapshotStore& snapshots = kLeftToFold[which] < 0 ? *f.on_demand : *f.snapshots;
  const int64_t want_folded = kLeftToFold[which] < 0 ? StreamEvents() : kLeftToFold[which];
  int64_t folded = 0;
  for (auto _ : state) {
    absl::StatusOr<LoadedAggregate<Account>> loaded =
        snapshots.LoadAggregate(kStreams[which], kSchema, Account{}, Decode, Encode, Apply);
    if (!loaded.ok() || loaded->events_folded != want_folded || loaded->snapshot_saved ||
        loaded->state.count != StreamEvents()) {
      state.SkipWithError(absl::StrFormat("LoadAggregate: %s", loaded.status().ToString()).c_str());
      break;
    }
    folded += loaded->events_folded;
    benchmark::DoNotOptimize(loaded->state.mix);
  }
  state.counters["events_folded_per_load"] = static_cast<double>(want_folded);
  state.counters["loads_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["events_per_s"] =
      benchmark::Counter(static_cast<double>(folded), benchmark::Counter::kIsRate);
}
BENCHMARK_CAPTURE(BM_LoadAggregate, plain, 0)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_LoadAggregate, snap_999, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_LoadAggregate, snap_499, 2)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_LoadAggregate, snap_0, 3)->Unit(benchmark::kMicrosecond);

void BM_SaveSnapshot(benchmark::State& state) {
  Fixture& f = GetFixture();
  const std::string data = Encode(Account{});
  int64_t version = 0;
  for (auto _ : state) {
    absl::Status s = f.on_demand->Save("plain", version, kSchema + 1, data);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    version = (version + 1) % StreamEvents();
  }
  (void)f.on_demand->Drop("plain");
}
BENCHMARK(BM_SaveSnapshot)->Unit(benchmark::kMicrosecond);

void BM_ReplayPositions(benchmark::State& state) {
  Fixture& f = GetFixture();
  uint64_t events = 0;
  for (auto _ : state) {
    uint64_t sum = 0;
    absl::StatusOr<ReplayResult> r =
        ReplayPositions(f.store.get(), 1, kLogEnd, EventFilter(), [&](const EventView& e) {
          sum += e.payload().size();
          return true;
        });
    if (!r.ok() || r->delivered != f.head) {
      state.SkipWithError("ReplayPositions");
      break;
    }
    events += r->delivered;
    benchmark::DoNotOptimize(sum);
  }
  state.counters["events_per_s"] =
      benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ReplayPositions)->Unit(benchmark::kMillisecond);

void BM_ReplayTimeRange(benchmark::State& state) {
  Fixture& f = GetFixture();
  uint64_t events = 0;
  for (auto _ : state) {
    uint64_t sum = 0;
    absl::StatusOr<ReplayResult> r =
        ReplayTimeRange(f.store.get(), f.quarter_time, absl::InfiniteFuture(), EventFilter(),
                        [&](const EventView& e) {
                          sum += e.payload().size();
                          return true;
                        });
    if (!r.ok() || r->delivered == 0) {
      state.SkipWithError("ReplayTimeRange");
      break;
    }
    events += r->delivered;
    benchmark::DoNotOptimize(sum);
  }
  state.counters["events_per_s"] =
      benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ReplayTimeRange)->Unit(benchmark::kMillisecond);

void BM_FirstPositionAtOrAfter(benchmark::State& state) {
  Fixture& f = GetFixture();
  for (auto _ : state) {
    absl::StatusOr<uint64_t> p = FirstPositionAtOrAfter(f.store.get(), f.quarter_time);
    if (!p.ok()) {
      state.SkipWithError(p.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(*p);
  }
}
BENCHMARK(BM_FirstPositionAtOrAfter)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace rill::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  rill::bench::TearDown();
  return 0;
}
