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
#include "torture_checks.h"
#include "torture_protocol.h"

namespace rill {
namespace {

using ::rill::testing::AckRecord;
using ::rill::testing::Acks;
using ::rill::testing::AddAcks;
using ::rill::testing::ChildEventPayload;
using ::rill::testing::ChildEvents;
using ::rill::testing::ChildEventType;
using ::rill::testing::ChildExpected;
using ::rill::testing::ChildPayloadPrefix;
using ::rill::testing::ChildProcess;
using ::rill::testing::DescribeWaitStatus;
using ::rill::testing::DumpView;
using ::rill::testing::EnvInt;
using ::rill::testing::FoldLedger;
using ::rill::testing::FoldMStreams;
using ::rill::testing::FormatAck;
using ::rill::testing::FormatMultiAck;
using ::rill::testing::kLedger;
using ::rill::testing::kMaxPad;
using ::rill::testing::kSmallMap;
using ::rill::testing::ModelDump;
using ::rill::testing::MultiAck;
using ::rill::testing::MultiRequest;
using ::rill::testing::ParseTortureAcks;
using ::rill::testing::ReadFileOrEmpty;
using ::rill::testing::RetryAcknowledged;
using ::rill::testing::TempDir;
using ::rill::testing::TestSeed;
using ::rill::testing::TortureProjections;
using ::rill::testing::TortureStoreOptions;
using ::rill::testing::Totals;
using ::rill::testing::VerifyLog;
using ::rill::testing::VerifyModels;

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
    AddAcks(cycle_acks, &acks, &totals);
    if (cycle_acks.single.empty() && cycle_acks.multi.empty()) ++totals.kills_before_any_ack;

    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                              Store::Open(store_dir, TortureStoreOptions(small_map)));
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
