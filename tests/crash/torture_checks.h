// The crash torture's checks of a store after its child was killed
// (torture_test.cc, SIGKILL) or after a simulated power cut
// (tests/powercut/powercut_test.cc): every acknowledged append present
// exactly once, the log gapless and consistent, acknowledged retries
// deduplicated, read models equal to a fold of the log, snapshots equal to
// the digest of the events they stand for. GoogleTest assertions.
#ifndef RILL_TESTS_CRASH_TORTURE_CHECKS_H_
#define RILL_TESTS_CRASH_TORTURE_CHECKS_H_

#include <stdlib.h>

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "child_protocol.h"
#include "gtest/gtest.h"
#include "rill/projection.h"
#include "rill/snapshot.h"
#include "rill/store.h"
#include "test_util.h"
#include "torture_protocol.h"

namespace rill::testing {

inline constexpr size_t kMaxPad = 200;
inline constexpr size_t kSmallMap = size_t{1} << 20;
inline constexpr int kRetriesPerCycle = 20;

inline int EnvInt(const char* name, int fallback) {
  const char* env = getenv(name);
  int v = 0;
  if (env != nullptr && absl::SimpleAtoi(env, &v) && v > 0) return v;
  return fallback;
}

inline uint64_t TestSeed() {
  const char* env = getenv("RILL_TEST_SEED");
  uint64_t seed = 0;
  if (env != nullptr && absl::SimpleAtoi(env, &seed)) return seed;
  return std::random_device()();
}

// Everything acknowledged into one store so far.
struct Acks {
  std::vector<AckRecord> single;
  std::vector<MultiAck> multi;
};

struct Totals {
  int cycles = 0;
  uint64_t events = 0;        // events in the stores when they were retired
  uint64_t acked_single = 0;  // acknowledged Append calls
  uint64_t acked_multi = 0;   // acknowledged AppendMulti calls
  uint64_t retries = 0;       // deduplicated retries checked
  int kills_before_any_ack = 0;
};

// Adds one cycle's acknowledgements to those of the store and the totals.
inline void AddAcks(const Acks& cycle, Acks* acks, Totals* totals) {
  acks->single.insert(acks->single.end(), cycle.single.begin(), cycle.single.end());
  acks->multi.insert(acks->multi.end(), cycle.multi.begin(), cycle.multi.end());
  totals->acked_single += cycle.single.size();
  totals->acked_multi += cycle.multi.size();
}

// How the driver reopens the store: as the child did, with a 1 MiB map
// growing in 1 MiB steps when `small_map`.
inline StoreOptions TortureStoreOptions(bool small_map) {
  StoreOptions options;
  if (small_map) {
    options.initial_map_size = kSmallMap;
    options.map_growth_step = kSmallMap;
  }
  return options;
}

// Checks one acknowledged part (stream, versions, positions) against the log
// and claims its positions.
inline void CheckPart(const std::vector<RecordedEvent>& events, const AppendResult& part,
                      const std::string& writer, const std::string& what,
                      std::set<uint64_t>* claimed) {
  ASSERT_EQ(part.last_position - part.first_position,
            static_cast<uint64_t>(part.last_version - part.first_version))
      << what;
  ASSERT_GE(part.first_position, 1u) << what;
  ASSERT_LE(part.last_position, events.size()) << "acknowledged append lost: " << what;
  for (int64_t v = part.first_version; v <= part.last_version; ++v) {
    const uint64_t p = part.first_position + (v - part.first_version);
    ASSERT_TRUE(claimed->insert(p).second) << "position " << p << " acknowledged twice: " << what;
    const RecordedEvent& e = events[p - 1];
    ASSERT_EQ(e.stream, part.stream) << what;
    ASSERT_EQ(e.version, v) << what;
    ASSERT_EQ(e.payload, ChildEventPayload(part.stream, v, writer, kMaxPad)) << what;
  }
}

inline void VerifyLog(Store& store, const Acks& acks, std::vector<RecordedEvent>* log) {
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store.HeadPosition());
  RILL_ASSERT_OK_AND_ASSIGN(*log, store.ReadAll(1));
  const std::vector<RecordedEvent>& events = *log;
  ASSERT_EQ(events.size(), head);
  std::map<std::string, int64_t> next_version;
  for (size_t i = 0; i < events.size(); ++i) {
    const RecordedEvent& e = events[i];
    ASSERT_EQ(e.position, i + 1) << "gap or disorder in the log";
    int64_t& next = next_version[e.stream];
    ASSERT_EQ(e.version, next) << "stream " << e.stream << " at position " << e.position;
    ++next;
    ASSERT_EQ(e.payload.rfind(ChildPayloadPrefix(e.stream, e.version), 0), 0u)
        << "position " << e.position << ": " << e.payload;
    ASSERT_EQ(e.type, ChildEventType(e.version));
  }
  for (const auto& [stream, next] : next_version) {
    RILL_ASSERT_OK_AND_ASSIGN(const StreamInfo info, store.GetStreamInfo(stream));
    ASSERT_EQ(info.last_version, next - 1) << stream;
    ASSERT_EQ(info.event_count, static_cast<uint64_t>(next)) << stream;
  }
  RILL_ASSERT_OK_AND_ASSIGN(const StoreStats stats, store.Stats());
  EXPECT_EQ(stats.head_position, head);
  EXPECT_EQ(stats.event_count, head);
  EXPECT_EQ(stats.stream_count, next_version.size());

  std::set<uint64_t> claimed;
  for (const AckRecord& a : acks.single) {
    AppendResult part{a.stream,         a.first_version, a.last_version,
                      a.first_position, a.last_position, false};
    CheckPart(events, part, a.writer, FormatAck(a), &claimed);
    if (::testing::Test::HasFatalFailure()) return;
  }
  for (const MultiAck& m : acks.multi) {
    // One transaction: the parts are contiguous in request order.
    for (size_t i = 0; i < m.parts.size(); ++i) {
      if (i > 0) {
        ASSERT_EQ(m.parts[i].first_position, m.parts[i - 1].last_position + 1) << FormatMultiAck(m);
      }
      CheckPart(events, m.parts[i], m.writer, FormatMultiAck(m), &claimed);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

inline void RetryAcknowledged(Store& store, const Acks& cycle, std::mt19937_64* rng,
                              Totals* totals) {
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store.HeadPosition());
  std::vector<const AckRecord*> retry;
  std::map<std::string, const AckRecord*> last_of_writer;
  for (const AckRecord& a : cycle.single) last_of_writer[a.writer] = &a;
  for (const auto& [writer, a] : last_of_writer) retry.push_back(a);
  for (int i = 0; i < kRetriesPerCycle && !cycle.single.empty(); ++i) {
    retry.push_back(&cycle.single[(*rng)() % cycle.single.size()]);
  }
  for (const AckRecord* a : retry) {
    AppendOptions options;
    options.idempotency_key = a->key;
    RILL_ASSERT_OK_AND_ASSIGN(
        const AppendResult r,
        store.Append(a->stream, ChildExpected(a->first_version),
                     ChildEvents(a->stream, a->first_version, a->last_version, a->writer, kMaxPad),
                     options));
    EXPECT_TRUE(r.deduplicated) << FormatAck(*a);
    EXPECT_EQ(r.stream, a->stream);
    EXPECT_EQ(r.first_version, a->first_version) << FormatAck(*a);
    EXPECT_EQ(r.last_version, a->last_version) << FormatAck(*a);
    EXPECT_EQ(r.first_position, a->first_position) << FormatAck(*a);
    EXPECT_EQ(r.last_position, a->last_position) << FormatAck(*a);
    ++totals->retries;
  }
  // The newest multi requests, and a few older ones.
  std::vector<const MultiAck*> multis;
  for (size_t i = cycle.multi.size(); i-- > 0 && multis.size() < 5;) {
    multis.push_back(&cycle.multi[i]);
  }
  for (int i = 0; i < 5 && !cycle.multi.empty(); ++i) {
    multis.push_back(&cycle.multi[(*rng)() % cycle.multi.size()]);
  }
  for (const MultiAck* m : multis) {
    AppendOptions options;
    options.idempotency_key = m->key;
    RILL_ASSERT_OK_AND_ASSIGN(const std::vector<AppendResult> r,
                              store.AppendMulti(MultiRequest(*m, kMaxPad), options));
    ASSERT_EQ(r.size(), m->parts.size()) << FormatMultiAck(*m);
    for (size_t i = 0; i < r.size(); ++i) {
      EXPECT_TRUE(r[i].deduplicated) << FormatMultiAck(*m);
      EXPECT_EQ(r[i].stream, m->parts[i].stream) << FormatMultiAck(*m);
      EXPECT_EQ(r[i].first_version, m->parts[i].first_version) << FormatMultiAck(*m);
      EXPECT_EQ(r[i].last_version, m->parts[i].last_version) << FormatMultiAck(*m);
      EXPECT_EQ(r[i].first_position, m->parts[i].first_position) << FormatMultiAck(*m);
      EXPECT_EQ(r[i].last_position, m->parts[i].last_position) << FormatMultiAck(*m);
    }
    ++totals->retries;
  }
  // The same key with another request is refused.
  if (!cycle.single.empty()) {
    const AckRecord& a = cycle.single.front();
    std::vector<EventData> other =
        ChildEvents(a.stream, a.first_version, a.last_version, a.writer, kMaxPad);
    other[0].payload += " ";
    AppendOptions options;
    options.idempotency_key = a.key;
    EXPECT_EQ(
        store.Append(a.stream, ChildExpected(a.first_version), other, options).status().code(),
        absl::StatusCode::kAlreadyExists)
        << FormatAck(a);
  }
  if (!cycle.multi.empty()) {
    const MultiAck& m = cycle.multi.front();
    std::vector<StreamAppend> other = MultiRequest(m, kMaxPad);
    other.pop_back();  // a request for fewer streams
    if (!other.empty()) {
      AppendOptions options;
      options.idempotency_key = m.key;
      EXPECT_EQ(store.AppendMulti(other, options).status().code(), absl::StatusCode::kAlreadyExists)
          << FormatMultiAck(m);
    }
  }
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head_after, store.HeadPosition());
  EXPECT_EQ(head_after, head) << "a deduplicated or refused retry wrote events";
}

// The torture's read model `def` of the first `upto` events of `log`.
inline ModelDump FoldTorture(const ProjectionDef& def, const std::vector<RecordedEvent>& log,
                             uint64_t upto) {
  if (def.name == kLedger) return FoldLedger(log, upto, 1);
  return FoldMStreams(std::vector<RecordedEvent>(log.begin(), log.begin() + upto));
}

// Each read model as the crash left it (before a runner applies anything)
// equals a fold of the log up to its checkpoint; then, resumed, it catches
// up to the head and equals the fold of the whole log (and, when
// `fresh_rebuild`, so does a rebuild from scratch).
inline void VerifyModels(Store& store, const std::vector<RecordedEvent>& log, bool fresh_rebuild,
                         uint64_t* found_behind = nullptr) {
  const uint64_t head = log.size();
  // Every apply waits for `gate`, so the views first taken show the models
  // exactly as they were found.
  auto gate = std::make_shared<absl::Notification>();
  std::vector<ProjectionDef> gated = TortureProjections();
  for (ProjectionDef& def : gated) {
    def.apply = [gate, apply = def.apply](const EventView& e, ReadModelTxn& txn) {
      gate->WaitForNotification();
      return apply(e, txn);
    };
  }
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(&store, std::move(gated)));
  struct Opener {  // opens the gate on every way out, before the runner stops
    std::shared_ptr<absl::Notification> gate;
    ~Opener() {
      if (!gate->HasBeenNotified()) gate->Notify();
    }
  } opener{gate};
  for (const ProjectionDef& def : TortureProjections()) {
    SCOPED_TRACE(def.name);
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view, runner->View(def.name));
    const uint64_t checkpoint = view->checkpoint();
    ASSERT_LE(checkpoint, head);
    if (found_behind != nullptr && checkpoint < head) ++*found_behind;
    RILL_ASSERT_OK_AND_ASSIGN(const ModelDump found, DumpView(*view, def.tables));
    ASSERT_TRUE(found == FoldTorture(def, log, checkpoint))
        << "the model found at checkpoint " << checkpoint << " differs from a fold of the log";
  }
  gate->Notify();
  for (const ProjectionDef& def : TortureProjections()) {
    SCOPED_TRACE(def.name);
    RILL_ASSERT_OK(runner->WaitFor(def.name, head, absl::Seconds(120)));
    const ModelDump want = def.name == kLedger ? FoldLedger(log, head, 1) : FoldMStreams(log);
    {
      RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view, runner->View(def.name));
      ASSERT_EQ(view->checkpoint(), head);
      RILL_ASSERT_OK_AND_ASSIGN(const ModelDump got, DumpView(*view, def.tables));
      ASSERT_TRUE(got == want) << "the model built across kills differs from a fold of the log";
    }
    if (fresh_rebuild) {
      RILL_ASSERT_OK(runner->RebuildAsOf(def.name, head, "fresh"));
      RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view,
                                runner->ViewAsOf(def.name, "fresh"));
      RILL_ASSERT_OK_AND_ASSIGN(const ModelDump fresh, DumpView(*view, def.tables));
      ASSERT_TRUE(fresh == want) << "a fresh rebuild differs from the fold";
    }
  }
}

// Every snapshot equals the digest of its stream's events up to its version.
inline void VerifySnapshots(Store& store, uint64_t* checked) {
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnapshotStore> snapshots, SnapshotStore::Open(&store));
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<Snapshot> all, snapshots->List(""));
  for (const Snapshot& snap : all) {
    RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> events, store.ReadStream(snap.stream, 0));
    ASSERT_LT(snap.version, static_cast<int64_t>(events.size())) << snap.stream;
    events.resize(snap.version + 1);
    ASSERT_EQ(snap.data, SnapshotDigest(events)) << snap.stream << "@" << snap.version;
    ++*checked;
  }
}

}  // namespace rill::testing

#endif  // RILL_TESTS_CRASH_TORTURE_CHECKS_H_
