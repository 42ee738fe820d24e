// rill through its public API, durable (Durability::kDurable: every append
// returns after its commit is fsync'd). The read log is loaded with
// kNoSyncUnsafe and reopened durable.
#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "../bench_util.h"
#include "absl/strings/str_format.h"
#include "peer.h"
#include "rill/projection.h"
#include "rill/store.h"

namespace rill::bench {
namespace {

std::unique_ptr<Store> OpenOrDie(const std::string& dir, Durability d) {
  StoreOptions options;
  options.durability = d;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir, options);
  if (!store.ok()) Die("rill Store::Open: " + store.status().ToString());
  return *std::move(store);
}

}  // namespace

void LoadRillReadLog(Store* store, uint64_t events, ReadLayout layout) {
  // One transaction per kReadBatch events, with one StreamAppend per run
  // of consecutive events of a stream; a stream that comes back ends the
  // transaction early, since AppendMulti takes each stream once. kRuns:
  // one Append of 100 events to one stream per transaction; kInterleaved:
  // one AppendMulti of ten streams of one event each.
  std::vector<std::string> payloads;
  for (int i = 0; i < kReadBatch; ++i) payloads.push_back(Payload(i));
  std::vector<StreamAppend> txn;
  std::vector<int> slots;  // of txn's streams
  uint64_t in_txn = 0;
  auto commit = [&] {
    if (txn.size() == 1) {
      absl::StatusOr<AppendResult> r =
          store->Append(txn[0].stream, ExpectedVersion::Any(), txn[0].events);
      if (!r.ok()) Die("rill read log Append: " + r.status().ToString());
    } else if (!txn.empty()) {
      absl::StatusOr<std::vector<AppendResult>> r = store->AppendMulti(txn);
      if (!r.ok()) Die("rill read log AppendMulti: " + r.status().ToString());
    }
    txn.clear();
    slots.clear();
    in_txn = 0;
  };
  for (uint64_t i = 0; i < events / kReadBatch * kReadBatch; ++i) {
    const int slot = StreamSlotOfEvent(i, layout);
    const bool same_run = !slots.empty() && slots.back() == slot;
    if (in_txn == kReadBatch ||
        (!same_run && std::find(slots.begin(), slots.end(), slot) != slots.end())) {
      commit();
    }
    if (slots.empty() || slots.back() != slot) {
      txn.push_back(StreamAppend{StreamOfSlot(slot), ExpectedVersion::Any(), {}});
      slots.push_back(slot);
    }
    EventData& e = txn.back().events.emplace_back();
    e.type = kEventType;
    e.payload = payloads[i % kReadBatch];
    ++in_txn;
  }
  commit();
}

uint64_t RillReadAll(Store* store, uint64_t* sum) {
  uint64_t n = 0;
  absl::Status s = store->ScanAll(1, ReadOptions(), [&](const EventView& e) {
    *sum += Touch(e.position(), e.payload());
    ++n;
    return true;
  });
  if (!s.ok()) Die("rill ScanAll: " + s.ToString());
  return n;
}

uint64_t RillScanStream(Store* store, const std::string& stream, int64_t from, int limit,
                        uint64_t* sum) {
  ReadOptions options;
  if (limit > 0) options.limit = limit;
  uint64_t n = 0;
  absl::Status s = store->ScanStream(stream, from, options, [&](const EventView& e) {
    *sum += Touch(e.position(), e.payload());
    ++n;
    return true;
  });
  if (!s.ok()) Die("rill ScanStream: " + s.ToString());
  return n;
}

double RillBytesPerEvent(Store* store) {
  absl::StatusOr<StoreStats> stats = store->Stats();
  if (!stats.ok() || stats->event_count == 0) return 0;
  return static_cast<double>(stats->used_bytes) / stats->event_count;
}

double RillProjectionCatchUpSeconds(Store* store, uint64_t events, const std::string& name) {
  uint64_t applied = 0;
  ProjectionDef def;
  def.name = name;
  def.tables = {"t"};
  def.apply = [&applied](const EventView& e, ReadModelTxn&) {
    applied += !e.payload().empty();
    return absl::OkStatus();
  };
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<ProjectionRunner>> runner = ProjectionRunner::Start(store, {def});
  if (!runner.ok()) Die("ProjectionRunner::Start: " + runner.status().ToString());
  absl::Status s = (*runner)->WaitFor(def.name, events, absl::Minutes(5));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  (*runner)->Stop();
  if (!s.ok() || applied != events) {
    Die(absl::StrFormat("projection catch-up: %s, %d of %d applied", s.ToString(), applied,
                        events));
  }
  return secs;
}

namespace {

class RillWriter : public PeerWriter {
 public:
  explicit RillWriter(Store* store) : store_(store) {}

  void Append(const std::string& stream, int64_t expected,
              absl::Span<const std::string> payloads) override {
    FillEvents(payloads, &events_);
    absl::StatusOr<AppendResult> r = store_->Append(stream, ExpectedOf(expected), events_);
    if (!r.ok()) Die("rill Append: " + r.status().ToString());
  }

  bool AppendIdempotent(const std::string& stream, int64_t expected, const std::string& payload,
                        const std::string& key) override {
    FillEvents(absl::MakeConstSpan(&payload, 1), &events_);
    AppendOptions options;
    options.idempotency_key = key;
    absl::StatusOr<AppendResult> r = store_->Append(stream, ExpectedOf(expected), events_, options);
    if (!r.ok()) Die("rill Append (idempotent): " + r.status().ToString());
    return r->deduplicated;
  }

 private:
  Store* const store_;
  std::vector<EventData> events_;
};

class RillPeer : public Peer {
 public:
  explicit RillPeer(std::string dir) : dir_(std::move(dir)) {}
  std::string name() const override { return "rill"; }
  bool projections() const override { return true; }

  void OpenFresh(const std::string& tag) override {
    store_.reset();
    fresh_dir_ = absl::StrFormat("%s/%s-%d", dir_, tag, ++count_);
    store_ = OpenOrDie(fresh_dir_, Durability::kDurable);
  }

  double CloseAndCountEventsPerCommit(uint64_t events) override {
    if (store_ == nullptr || fresh_dir_.empty()) return -1;
    store_.reset();
    // What opening and closing an empty store commits by itself (meta
    // records), measured once on a scratch store.
    if (open_close_commits_ < 0) {
      const std::string scratch = absl::StrFormat("%s/calibrate-%d", dir_, ++count_);
      OpenOrDie(scratch, Durability::kDurable).reset();
      open_close_commits_ = static_cast<int64_t>(LastTxnId(scratch + "/log"));
    }
    const int64_t commits =
        static_cast<int64_t>(LastTxnId(fresh_dir_ + "/log")) - open_close_commits_;
    fresh_dir_.clear();
    return commits > 0 ? static_cast<double>(events) / commits : -1;
  }
  std::unique_ptr<PeerWriter> NewWriter() override {
    return std::make_unique<RillWriter>(store_.get());
  }

  void LoadReadLog(uint64_t events, ReadLayout layout) override {
    store_.reset();
    const std::string dir = absl::StrFormat("%s/read-%d", dir_, ++count_);
    LoadRillReadLog(OpenOrDie(dir, Durability::kNoSyncUnsafe).get(), events, layout);
    store_ = OpenOrDie(dir, Durability::kDurable);
    events_ = events;
  }

  uint64_t ReadAll(uint64_t* sum) override { return RillReadAll(store_.get(), sum); }
  uint64_t ReadStream(const std::string& stream, uint64_t* sum) override {
    return RillScanStream(store_.get(), stream, 0, 0, sum);
  }
  uint64_t ReadSlice(const std::string& stream, int64_t from, int count, uint64_t* sum) override {
    return RillScanStream(store_.get(), stream, from, count, sum);
  }
  double BytesPerEvent() override { return RillBytesPerEvent(store_.get()); }
  double ProjectionCatchUpSeconds() override {
    return RillProjectionCatchUpSeconds(store_.get(), events_,
                                        absl::StrFormat("catchup-%d", ++count_));
  }

  void Close() override { store_.reset(); }

 private:
  const std::string dir_;
  int count_ = 0;
  uint64_t events_ = 0;
  std::string fresh_dir_;            // the store of the last OpenFresh
  int64_t open_close_commits_ = -1;  // see CloseAndCountEventsPerCommit
  std::unique_ptr<Store> store_;
};

}  // namespace

std::unique_ptr<Peer> NewRillPeer(const std::string& dir) {
  return std::make_unique<RillPeer>(dir);
}

}  // namespace rill::bench
