// Crash safety: a child process (append_child) appends durably from several
// threads and acknowledges each append that returned; the test kills it with
// SIGKILL at a random moment, reopens the store and checks that nothing
// acknowledged was lost or duplicated, the log is gapless and every stream
// contiguous, and that idempotency keys of acknowledged appends survived.
// Several cycles on the same store, each child continuing where the last
// stopped: durable appends; durable appends into a 1 MiB map that has to grow
// (kills land during growth); and kNoSyncUnsafe, which must also survive a
// process kill. A last test kills children while they create the store.
//
// Reproduce a run with RILL_TEST_SEED=<seed printed by the test>.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdio>
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
#include "rill/store.h"
#include "test_util.h"

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
using ::rill::testing::FormatAck;
using ::rill::testing::ParseAckFile;
using ::rill::testing::ReadFileOrEmpty;
using ::rill::testing::TempDir;

constexpr int kRetriesPerCycle = 40;

struct CrashConfig {
  std::string name;
  int cycles = 10;
  size_t max_pad = 200;    // payload padding, see child_protocol.h
  size_t initial_map = 0;  // StoreOptions.initial_map_size; 0: the default
  bool nosync = false;     // Durability::kNoSyncUnsafe
};

StoreOptions OptionsFor(const CrashConfig& config) {
  StoreOptions options;
  if (config.initial_map != 0) options.initial_map_size = config.initial_map;
  return options;
}

uint64_t TestSeed() {
  const char* env = getenv("RILL_TEST_SEED");
  uint64_t seed = 0;
  if (env != nullptr && absl::SimpleAtoi(env, &seed)) return seed;
  return std::random_device()();
}

// Checks the reopened store against every acknowledgement so far, and
// retries a sample of this cycle's acknowledged appends with their keys.
void VerifyStore(const std::string& store_dir, const CrashConfig& config,
                 const std::vector<AckRecord>& all_acks, const std::vector<AckRecord>& cycle_acks,
                 std::mt19937_64* rng) {
  const size_t kMaxPad = config.max_pad;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(store_dir, OptionsFor(config)));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store->HeadPosition());
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> events, store->ReadAll(1));
  ASSERT_EQ(events.size(), head);

  // The log: gapless positions, contiguous stream versions, and every event
  // (acknowledged or not) is one the child really wrote for that version.
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
    RILL_ASSERT_OK_AND_ASSIGN(const StreamInfo info, store->GetStreamInfo(stream));
    EXPECT_EQ(info.last_version, next - 1) << stream;
    EXPECT_EQ(info.event_count, static_cast<uint64_t>(next)) << stream;
  }
  RILL_ASSERT_OK_AND_ASSIGN(const StoreStats stats, store->Stats());
  EXPECT_EQ(stats.head_position, head);
  EXPECT_EQ(stats.event_count, head);
  EXPECT_EQ(stats.stream_count, next_version.size());

  // Every acknowledged append: present once, where it was acknowledged.
  std::set<uint64_t> claimed;
  for (const AckRecord& a : all_acks) {
    ASSERT_FALSE(a.deduplicated) << FormatAck(a);
    ASSERT_EQ(a.last_position - a.first_position,
              static_cast<uint64_t>(a.last_version - a.first_version))
        << FormatAck(a);
    ASSERT_LE(a.last_position, head) << "acknowledged append lost: " << FormatAck(a);
    for (int64_t v = a.first_version; v <= a.last_version; ++v) {
      const uint64_t p = a.first_position + (v - a.first_version);
      ASSERT_TRUE(claimed.insert(p).second)
          << "position " << p << " acknowledged twice: " << FormatAck(a);
      const RecordedEvent& e = events[p - 1];
      ASSERT_EQ(e.stream, a.stream) << FormatAck(a);
      ASSERT_EQ(e.version, v) << FormatAck(a);
      ASSERT_EQ(e.payload, ChildEventPayload(a.stream, v, a.writer, kMaxPad)) << FormatAck(a);
    }
  }

  // Retrying an acknowledged request returns its original result and writes
  // nothing, even though the stream has moved on.
  std::vector<const AckRecord*> retry;
  std::map<std::string, const AckRecord*> last_of_writer;
  for (const AckRecord& a : cycle_acks) last_of_writer[a.writer] = &a;
  for (const auto& [writer, a] : last_of_writer) retry.push_back(a);
  for (int i = 0; i < kRetriesPerCycle && !cycle_acks.empty(); ++i) {
    retry.push_back(&cycle_acks[(*rng)() % cycle_acks.size()]);
  }
  for (const AckRecord* a : retry) {
    AppendOptions options;
    options.idempotency_key = a->key;
    RILL_ASSERT_OK_AND_ASSIGN(
        const AppendResult r,
        store->Append(a->stream, ChildExpected(a->first_version),
                      ChildEvents(a->stream, a->first_version, a->last_version, a->writer, kMaxPad),
                      options));
    EXPECT_TRUE(r.deduplicated) << FormatAck(*a);
    EXPECT_EQ(r.stream, a->stream);
    EXPECT_EQ(r.first_version, a->first_version) << FormatAck(*a);
    EXPECT_EQ(r.last_version, a->last_version) << FormatAck(*a);
    EXPECT_EQ(r.first_position, a->first_position) << FormatAck(*a);
    EXPECT_EQ(r.last_position, a->last_position) << FormatAck(*a);
  }
  // The same key with a different request is refused.
  if (!cycle_acks.empty()) {
    const AckRecord& a = cycle_acks.front();
    std::vector<EventData> other =
        ChildEvents(a.stream, a.first_version, a.last_version, a.writer, kMaxPad);
    other[0].payload += " ";
    AppendOptions options;
    options.idempotency_key = a.key;
    EXPECT_EQ(
        store->Append(a.stream, ChildExpected(a.first_version), other, options).status().code(),
        absl::StatusCode::kAlreadyExists)
        << FormatAck(a);
  }
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head_after, store->HeadPosition());
  EXPECT_EQ(head_after, head) << "a deduplicated or refused retry wrote events";
}

class CrashTest : public ::testing::TestWithParam<CrashConfig> {};

TEST_P(CrashTest, SigkilledAppenderLosesNothingAcknowledged) {
  const CrashConfig& config = GetParam();
  const size_t kMaxPad = config.max_pad;
  const uint64_t seed = TestSeed();
  std::printf("RILL_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed));
  RecordProperty("seed", absl::StrCat(seed));
  std::mt19937_64 rng(seed);
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  {
    // Created up front so that no kill lands in the middle of creation.
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                              Store::Open(store_dir, OptionsFor(config)));
  }
  std::vector<AckRecord> all_acks;
  for (int cycle = 0; cycle < config.cycles; ++cycle) {
    SCOPED_TRACE(absl::StrCat("cycle ", cycle, ", RILL_TEST_SEED=", seed));
    const std::string ack_path = dir.Sub(absl::StrCat("acks-", cycle));
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ChildProcess> child,
        ChildProcess::Start(
            "append_child",
            {"dir=" + store_dir, "ack=" + ack_path, "threads=4", "streams=8", "prefix=crash",
             "writer=w", "appends=0", "max_events=3", absl::StrCat("max_pad=", kMaxPad), "keys=1",
             absl::StrCat("map=", config.initial_map),
             config.nosync ? "durability=nosync" : "durability=durable",
             absl::StrCat("seed=", seed + cycle)},
            dir.Sub("append_child.err")));
    absl::StatusOr<std::string> ready = child->ReadLine(absl::Seconds(60));
    ASSERT_TRUE(ready.ok() && *ready == "ready")
        << (ready.ok() ? *ready : ready.status().ToString()) << "\n"
        << child->Stderr();
    absl::SleepFor(absl::Milliseconds(50 + rng() % 251));
    child->Kill(SIGKILL);
    const int status = child->Wait();
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "append_child " << DescribeWaitStatus(status) << " before the kill:\n"
        << child->Stderr();

    std::vector<AckRecord> cycle_acks;
    ASSERT_TRUE(ParseAckFile(ReadFileOrEmpty(ack_path), &cycle_acks));
    all_acks.insert(all_acks.end(), cycle_acks.begin(), cycle_acks.end());
    std::printf("cycle %d: %zu acknowledged appends (%zu in total)\n", cycle, cycle_acks.size(),
                all_acks.size());
    VerifyStore(store_dir, config, all_acks, cycle_acks, &rng);
    if (HasFatalFailure()) return;
  }
  // The test proved nothing if the children never got an append through.
  EXPECT_GT(all_acks.size(), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, CrashTest,
    ::testing::Values(CrashConfig{"Durable", 10, 200, 0, false},
                      CrashConfig{"DurableGrowingMap", 8, 6000, size_t{1} << 20, false},
                      CrashConfig{"NoSyncUnsafe", 8, 200, 0, true}),
    [](const ::testing::TestParamInfo<CrashConfig>& info) { return info.param.name; });

TEST(CrashCreationTest, ChildKilledWhileCreatingTheStoreLeavesAnOpenableStore) {
  // No "ready" wait here: the kill lands anywhere from exec to the first
  // appends, often inside Store::Open creating the store.
  const uint64_t seed = TestSeed();
  std::printf("RILL_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  TempDir dir;
  for (int i = 0; i < 15; ++i) {
    SCOPED_TRACE(absl::StrCat("iteration ", i, ", RILL_TEST_SEED=", seed));
    const std::string store_dir = dir.Sub(absl::StrCat("store-", i));
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ChildProcess> child,
                              ChildProcess::Start("append_child",
                                                  {"dir=" + store_dir, "ack=" + dir.Sub("acks"),
                                                   "threads=2", "appends=0"},
                                                  dir.Sub("append_child.err")));
    absl::SleepFor(absl::Microseconds(rng() % 40000));
    child->Kill(SIGKILL);
    const int status = child->Wait();
    ASSERT_TRUE(WIFSIGNALED(status)) << "append_child " << DescribeWaitStatus(status) << ":\n"
                                     << child->Stderr();
    // Whatever the child got to, the directory opens as a store (creating
    // it if the child got nowhere) and takes appends.
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(store_dir);
    ASSERT_TRUE(store.ok()) << store.status();
    RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, (*store)->HeadPosition());
    RILL_ASSERT_OK_AND_ASSIGN(
        const AppendResult r,
        (*store)->Append("after-crash", ExpectedVersion::NoStream(), {testing::MakeEvent("E", 1)}));
    EXPECT_EQ(r.first_position, head + 1);
  }
}

}  // namespace
}  // namespace rill
