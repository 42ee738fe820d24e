// Crash torture: a child process (torture_child) appends durably from
// several threads (expected versions and idempotency keys, many streams,
// AppendMulti across streams, in-process retries) while a ProjectionRunner
// builds two read models, and is killed with SIGKILL at a random moment,
// cycle after cycle. After every kill this test reopens the store and checks:
//
//   - every append the child acknowledged (its ack line was written after
//     the call returned) is present exactly once, at the positions and
//     versions it was given, with the events the child wrote;
//   - positions are gapless (1..head), stream versions contiguous from 0,
//     every stored event (acknowledged or not) is one the child really wrote
//     for that stream and version, stream records and stats agree;
//   - retrying acknowledged requests (the last of each writer, a random
//     sample, and AppendMulti requests) with their keys returns
//     deduplicated = true and the original result and writes nothing; the
//     same key with another request is AlreadyExists;
//   - after letting a runner in this process catch up, every read model
//     equals an independent fold of the log, and (every 10th cycle and the
//     last) a fresh RebuildAsOf(head) equals it too;
//   - the child saw no broken promise in-process (live retries, rejected
//     AppendMulti writes nothing, ledger views self-consistent).
//
// Odd cycles run the child with a 1 MiB map that grows in 1 MiB steps, so
// kills also land during map growth of both environments.
//
// Environment:
//   RILL_TORTURE_CYCLES=N            cycles (default 30; CI runs the default)
//   RILL_TORTURE_CYCLES_PER_STORE=M  start a fresh store every M cycles
//                                    (default 100), so long runs stay fast
//   RILL_TEST_SEED=S                 reproduce a run (the seed is printed)
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "child_protocol.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "rill/projection.h"
#include "rill/store.h"
#include "test_util.h"
#include "torture_protocol.h"

namespace rill {
namespace {

using ::rill::testing::AckRecord;
using ::rill::testing::ChildEventPayload;
using ::rill::testing::ChildEvents;
using ::rill::testing::ChildEventType;
using ::rill::testing::ChildExpected;
using ::rill::testing::ChildPayloadPrefix;
using ::rill::testing::ChildProcess;
using ::rill::testing::DescribeWaitStatus;
using ::rill::testing::DumpView;
using ::rill::testing::FoldLedger;
using ::rill::testing::FoldMStreams;
using ::rill::testing::FormatAck;
using ::rill::testing::FormatMultiAck;
using ::rill::testing::kLedger;
using ::rill::testing::ModelDump;
using ::rill::testing::MultiAck;
using ::rill::testing::MultiRequest;
using ::rill::testing::ParseTortureAcks;
using ::rill::testing::ReadFileOrEmpty;
using ::rill::testing::TempDir;
using ::rill::testing::TortureProjections;

constexpr size_t kMaxPad = 200;
constexpr size_t kSmallMap = size_t{1} << 20;
constexpr int kRetriesPerCycle = 20;

int EnvInt(const char* name, int fallback) {
  const char* env = getenv(name);
  int v = 0;
  if (env != nullptr && absl::SimpleAtoi(env, &v) && v > 0) return v;
  return fallback;
}

uint64_t TestSeed() {
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

// Checks one acknowledged part (stream, versions, positions) against the log
// and claims its positions.
void CheckPart(const std::vector<RecordedEvent>& events, const AppendResult& part,
               const std::string& writer, const std::string& what, std::set<uint64_t>* claimed) {
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

void VerifyLog(Store& store, const Acks& acks, std::vector<RecordedEvent>* log) {
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

void RetryAcknowledged(Store& store, const Acks& cycle, std::mt19937_64* rng, Totals* totals) {
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

void VerifyModels(Store& store, const std::vector<RecordedEvent>& log, bool fresh_rebuild) {
  const uint64_t head = log.size();
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(&store, TortureProjections()));
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

TEST(CrashTortureTest, SigkilledAppenderAndProjectorLoseNothingAcknowledged) {
  const int cycles = EnvInt("RILL_TORTURE_CYCLES", 30);
  const int per_store = EnvInt("RILL_TORTURE_CYCLES_PER_STORE", 100);
  const uint64_t seed = TestSeed();
  std::printf("RILL_TEST_SEED=%llu, %d cycles, a fresh store every %d\n",
              static_cast<unsigned long long>(seed), cycles, per_store);
  RecordProperty("seed", absl::StrCat(seed));
  std::mt19937_64 rng(seed);
  const absl::Time start = absl::Now();
  TempDir dir;
  Totals totals;
  Acks acks;
  std::string store_dir;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    SCOPED_TRACE(absl::StrCat("cycle ", cycle, ", RILL_TEST_SEED=", seed));
    if (cycle % per_store == 0) {
      store_dir = dir.Sub(absl::StrCat("store-", cycle / per_store));
      acks = Acks();
    }
    const bool small_map = cycle % 2 == 1;
    const std::string ack_path = dir.Sub(absl::StrCat("acks-", cycle));
    const std::string violations = dir.Sub("violations");
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ChildProcess> child,
        ChildProcess::Start(
            "torture_child",
            {"dir=" + store_dir, "ack=" + ack_path, "violations=" + violations, "threads=3",
             "streams=6", "multi=1", absl::StrCat("max_pad=", kMaxPad),
             absl::StrCat("map=", small_map ? kSmallMap : 0), absl::StrCat("seed=", seed + cycle)},
            dir.Sub("torture_child.err")));
    absl::StatusOr<std::string> ready = child->ReadLine(absl::Seconds(120));
    ASSERT_TRUE(ready.ok() && *ready == "ready")
        << (ready.ok() ? *ready : ready.status().ToString()) << "\n"
        << child->Stderr();
    // One kill in five lands early, while the runner catches up with what
    // the driver appended and the appenders start; the others at random.
    const int64_t wait_ms = rng() % 5 == 0 ? rng() % 30 : 30 + rng() % 371;
    absl::SleepFor(absl::Milliseconds(wait_ms));
    child->Kill(SIGKILL);
    const int status = child->Wait();
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "torture_child " << DescribeWaitStatus(status) << " before the kill:\n"
        << child->Stderr();
    const std::string broken = ReadFileOrEmpty(violations);
    ASSERT_TRUE(broken.empty()) << "the child saw broken promises:\n" << broken;

    Acks cycle_acks;
    ASSERT_TRUE(ParseTortureAcks(ReadFileOrEmpty(ack_path), &cycle_acks.single, &cycle_acks.multi));
    std::remove(ack_path.c_str());
    acks.single.insert(acks.single.end(), cycle_acks.single.begin(), cycle_acks.single.end());
    acks.multi.insert(acks.multi.end(), cycle_acks.multi.begin(), cycle_acks.multi.end());
    totals.acked_single += cycle_acks.single.size();
    totals.acked_multi += cycle_acks.multi.size();
    if (cycle_acks.single.empty() && cycle_acks.multi.empty()) ++totals.kills_before_any_ack;

    StoreOptions options;
    if (small_map) {
      options.initial_map_size = kSmallMap;
      options.map_growth_step = kSmallMap;
    }
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir, options));
    std::vector<RecordedEvent> log;
    VerifyLog(*store, acks, &log);
    if (HasFatalFailure()) return;
    RetryAcknowledged(*store, cycle_acks, &rng, &totals);
    if (HasFatalFailure()) return;
    const bool last_of_store = cycle + 1 == cycles || (cycle + 1) % per_store == 0;
    VerifyModels(*store, log, cycle % 10 == 9 || last_of_store);
    if (HasFatalFailure()) return;
    ++totals.cycles;
    std::printf("cycle %d: killed after %lld ms, %zu+%zu acknowledged, %zu events\n", cycle,
                static_cast<long long>(wait_ms), cycle_acks.single.size(), cycle_acks.multi.size(),
                log.size());
    if (last_of_store) {
      totals.events += log.size();
      store.reset();
      std::filesystem::remove_all(store_dir);
    }
  }
  std::printf(
      "TORTURE SUMMARY: %d cycles survived, %llu events, %llu Append + %llu AppendMulti "
      "acknowledged, %llu deduplicated retries checked, %d kills before any ack, %.1f s\n",
      totals.cycles, static_cast<unsigned long long>(totals.events),
      static_cast<unsigned long long>(totals.acked_single),
      static_cast<unsigned long long>(totals.acked_multi),
      static_cast<unsigned long long>(totals.retries), totals.kills_before_any_ack,
      absl::ToDoubleSeconds(absl::Now() - start));
  EXPECT_GT(totals.acked_single, 0u);
  EXPECT_GT(totals.acked_multi, 0u);
}

}  // namespace
}  // namespace rill
