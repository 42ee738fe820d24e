// Many processes on one store: a service appending durably while readers,
// `rill tail`, `rill verify` and `rill backup` run from other processes; and
// a long reader as `rill info` shows it.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "child_protocol.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "process_util.h"
#include "rill/store.h"
#include "test_util.h"
#include "tool_util.h"

namespace rill::testing {
namespace {

using Json = nlohmann::json;
constexpr absl::Duration kLong = absl::Seconds(120);

TEST(ToolManyProcessesTest, AServiceAppendsWhileReadersTailVerifyAndBackupRun) {
  TempDir dir;
  const std::string store_dir = dir.Sub("s");
  constexpr uint64_t kFinal = 2000;
  constexpr int kStreams = 20;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
  RILL_ASSERT_OK(
      store->Append("warmup", ExpectedVersion::NoStream(), ChildEvents("warmup", 0, 0, "w", 16))
          .status());

  std::vector<std::unique_ptr<ChildProcess>> readers;
  for (const char* mode : {"read", "subscribe"}) {
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ChildProcess> r,
        ChildProcess::Start("reader_child",
                            {"dir=" + store_dir, absl::StrCat("final=", kFinal),
                             absl::StrCat("mode=", mode), "timeout_s=300"},
                            dir.Sub(absl::StrCat("reader-", mode, ".err"))));
    RILL_ASSERT_OK_AND_ASSIGN(std::string ready, r->ReadLine(kLong));
    ASSERT_EQ(ready, "ready");
    readers.push_back(std::move(r));
  }
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ChildProcess> tail,
      ChildProcess::Start(ToolBinary(), {"tail", store_dir, "--from", "1", "--json"},
                          dir.Sub("tail.err")));

  // The service: requests of 1..4 events, round robin, with expected
  // versions; every append's latency measured.
  std::atomic<bool> writer_done{false};
  absl::Duration longest = absl::ZeroDuration();
  std::vector<absl::Duration> latencies;
  absl::Status writer_status;
  std::thread writer([&] {
    std::vector<int64_t> next(kStreams, 0);
    uint64_t head = 1;
    for (int i = 0; head < kFinal; ++i) {
      const int s = i % kStreams;
      const std::string stream = absl::StrCat("svc-", s);
      const int64_t n = std::min<int64_t>(1 + i % 4, kFinal - head);
      const absl::Time start = absl::Now();
      absl::StatusOr<AppendResult> r = store->Append(
          stream, ChildExpected(next[s]), ChildEvents(stream, next[s], next[s] + n - 1, "svc", 64));
      const absl::Duration took = absl::Now() - start;
      if (!r.ok()) {
        writer_status = r.status();
        break;
      }
      latencies.push_back(took);
      longest = std::max(longest, took);
      next[s] += n;
      head = r->last_position;
    }
    writer_done = true;
  });

  // Meanwhile, from other processes: verify and backup, again and again.
  int rounds = 0;
  while (!writer_done.load() || rounds < 2) {
    ToolRun v = RunTool({"verify", store_dir});
    EXPECT_EQ(v.exit_code, 0) << v.Describe();
    const std::string dest = dir.Sub(absl::StrCat("backup-", rounds));
    ToolRun b = RunTool({"backup", store_dir, dest, "--json"});
    ASSERT_EQ(b.exit_code, 0) << b.Describe();
    ToolRun bv = RunTool({"verify", dest, "--json"});
    EXPECT_EQ(bv.exit_code, 0) << bv.Describe();
    EXPECT_EQ(Json::parse(bv.out)["head_position"], Json::parse(b.out)["head_position"]);
    ++rounds;
  }
  writer.join();
  RILL_ASSERT_OK(writer_status);

  for (auto& r : readers) {
    RILL_ASSERT_OK_AND_ASSIGN(std::string last, r->ReadLine(kLong));
    EXPECT_EQ(last, absl::StrCat("ok ", kFinal));
    const int status = r->Wait();
    EXPECT_TRUE(ExitedWithCode(status, 0)) << DescribeWaitStatus(status);
  }
  // tail saw every position once, in order.
  for (uint64_t want = 1; want <= kFinal; ++want) {
    RILL_ASSERT_OK_AND_ASSIGN(std::string line, tail->ReadLine(kLong));
    ASSERT_EQ(Json::parse(line)["position"], want);
  }
  tail->Kill(SIGINT);
  EXPECT_TRUE(ExitedWithCode(tail->Wait(), 0));

  std::sort(latencies.begin(), latencies.end());
  const absl::Duration p99 = latencies[latencies.size() * 99 / 100];
  std::cout << "appends: " << latencies.size() << ", verify+backup rounds: " << rounds
            << ", append latency p50 " << latencies[latencies.size() / 2] << ", p99 " << p99
            << ", longest " << longest << "\n";
  RecordProperty("longest_append_us", absl::StrCat(absl::ToInt64Microseconds(longest)));
  RecordProperty("rounds", rounds);
}

TEST(ToolManyProcessesTest, InfoShowsALongReaderAndClearsDeadOnes) {
  TempDir dir;
  const std::string store_dir = dir.Sub("s");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
  RILL_ASSERT_OK(store->Append("a", ExpectedVersion::Any(), MakeEvents(3)).status());
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ChildProcess> reader,
      ChildProcess::Start("lmdb_txn_child", {"read", store_dir + "/log"}, dir.Sub("txn.err")));
  RILL_ASSERT_OK_AND_ASSIGN(std::string locked, reader->ReadLine(kLong));
  ASSERT_EQ(locked, "locked");
  for (int i = 0; i < 10; ++i) {
    RILL_ASSERT_OK(store->Append("a", ExpectedVersion::Any(), MakeEvents(1)).status());
  }
  ToolRun held = RunTool({"info", store_dir, "--json"});
  ASSERT_EQ(held.exit_code, 0) << held.Describe();
  Json j = Json::parse(held.out);
  EXPECT_EQ(j["oldest_reader_pid"], reader->pid());
  EXPECT_GE(j["oldest_reader_lag"].get<uint64_t>(), 10u);
  EXPECT_THAT(RunTool({"info", store_dir}).out,
              ::testing::HasSubstr(absl::StrCat("pid ", reader->pid())));

  // Killed inside its transaction: its slot is stale until cleared (rill
  // clears such slots on open, so the tool's own open already frees it).
  reader->Kill(SIGKILL);
  reader->Wait();
  ToolRun cleared = RunTool({"info", store_dir, "--clear-stale-readers", "--json"});
  ASSERT_EQ(cleared.exit_code, 0) << cleared.Describe();
  Json c = Json::parse(cleared.out);
  EXPECT_EQ(c["stale_readers"], 0);
  EXPECT_NE(c["oldest_reader_pid"], reader->pid());
  EXPECT_TRUE(c.contains("stale_readers_cleared"));
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats stats, store->Stats());
  EXPECT_EQ(stats.stale_readers, 0u);
}

}  // namespace
}  // namespace rill::testing
