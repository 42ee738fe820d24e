// The replicated store across processes and faults, on a real three-server
// NATS JetStream cluster (R=3) that each test starts: nodes in separate
// processes appending to shared and private streams; a stale node's
// conflict; the stream leader's server killed (and restarted) and a server
// paused during appends; a node killed mid-publish whose retries are
// deduplicated; a deleted replica rebuilt from JetStream; NATS unreachable;
// `rill replicate init`, `rill append`, `rill info`, `rill export` and
// `rill verify` on nodes.
//
// What every test checks in the end is VerifyLog (child_checks.h): the log
// is gapless, every stream contiguous, every acknowledged append present
// exactly once where it was acknowledged, and nothing present that nobody
// acknowledged - on every node, which must also hold the same events.
#include <signal.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "child_checks.h"
#include "child_protocol.h"
#include "gtest/gtest.h"
#include "nats_cluster.h"
#include "process_util.h"
#include "rill/replication.h"
#include "rill/store.h"
#include "test_util.h"
#include "tool_util.h"

namespace rill {
namespace {

using ::rill::testing::AckRecord;
using ::rill::testing::ChildEvents;
using ::rill::testing::ChildExpected;
using ::rill::testing::ChildProcess;
using ::rill::testing::ExpectCleanExit;
using ::rill::testing::FormatAck;
using ::rill::testing::MakeEvents;
using ::rill::testing::NatsCluster;
using ::rill::testing::ParseAckFile;
using ::rill::testing::ReadFileOrEmpty;
using ::rill::testing::RunTool;
using ::rill::testing::SameEvent;
using ::rill::testing::StartReady;
using ::rill::testing::TempDir;
using ::rill::testing::ToolRun;
using ::rill::testing::VerifyLog;
using ::rill::testing::WaitUntil;

constexpr absl::Duration kLong = absl::Seconds(90);
constexpr size_t kMaxPad = 200;
constexpr char kStream[] = "orders";

class ReplicationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<NatsCluster>> cluster = NatsCluster::Start(3);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
  }

  ReplicationOptions Options(absl::Duration append_timeout = absl::Seconds(30)) const {
    ReplicationOptions o;
    o.servers = cluster_->urls();
    o.stream = kStream;
    o.replicas = 3;
    o.append_timeout = append_timeout;
    return o;
  }

  // Creates node `name` (its directory under tmp_).
  std::string InitNode(const std::string& name, absl::Duration append_timeout = absl::Seconds(30)) {
    const std::string dir = tmp_.Sub(name);
    absl::Status s = InitReplicatedNode(dir, Options(append_timeout));
    EXPECT_TRUE(s.ok()) << s;
    return dir;
  }

  std::unique_ptr<Store> OpenNode(const std::string& dir) {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  // An appending child on node `dir` (append_child's arguments after dir=
  // and ack=), started and ready.
  std::unique_ptr<ChildProcess> StartAppender(const std::string& dir, const std::string& tag,
                                              std::vector<std::string> args) {
    args.push_back("dir=" + dir);
    args.push_back("ack=" + tmp_.Sub(tag + ".acks"));
    return StartReady(tmp_, "append_child", args, tag);
  }

  std::vector<AckRecord> Acks(const std::string& tag) {
    std::vector<AckRecord> acks;
    EXPECT_TRUE(ParseAckFile(ReadFileOrEmpty(tmp_.Sub(tag + ".acks")), &acks)) << tag;
    return acks;
  }

  size_t AckCount(const std::string& tag) { return Acks(tag).size(); }

  // Every node, caught up, holds the same events, and each passes VerifyLog
  // against `acks`; `rill verify` is clean and `rill export` the same on
  // each. The nodes must not be open elsewhere in this process.
  void ExpectNodesAgree(const std::vector<std::string>& dirs, const std::vector<AckRecord>& acks) {
    std::vector<RecordedEvent> first;
    for (const std::string& dir : dirs) {
      std::unique_ptr<Store> store = OpenNode(dir);
      ASSERT_NE(store, nullptr);
      RILL_ASSERT_OK(WaitForReplica(store.get(), kLong));
      VerifyLog(store.get(), acks, kMaxPad);
      RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> events, store->ReadAll(1));
      if (dir == dirs.front()) {
        first = std::move(events);
        continue;
      }
      ASSERT_EQ(events.size(), first.size()) << dir;
      for (size_t i = 0; i < events.size(); ++i) {
        ASSERT_TRUE(SameEvent(events[i], first[i])) << dir << " position " << i + 1;
      }
    }
    std::string first_export;
    for (const std::string& dir : dirs) {
      const ToolRun verify = RunTool({"verify", dir});
      EXPECT_EQ(verify.exit_code, 0) << verify.Describe();
      const ToolRun exported = RunTool({"export", dir});
      ASSERT_EQ(exported.exit_code, 0) << exported.Describe();
      if (dir == dirs.front()) {
        first_export = exported.out;
        EXPECT_FALSE(first_export.empty());
      } else {
        EXPECT_TRUE(exported.out == first_export) << dir << ": export differs";
      }
    }
  }

  TempDir tmp_;
  std::unique_ptr<NatsCluster> cluster_;
};

TEST_F(ReplicationTest, NodesInSeparateProcessesAgreeOnEveryAcknowledgedAppend) {
  const std::vector<std::string> nodes = {InitNode("n1"), InitNode("n2"), InitNode("n3")};
  std::vector<std::unique_ptr<ChildProcess>> children;
  std::vector<std::string> tags;
  for (int i = 0; i < 3; ++i) {
    const std::string tag = absl::StrCat("own", i + 1);
    tags.push_back(tag);
    children.push_back(StartAppender(
        nodes[i], tag,
        {"mode=own", "threads=2", "streams=4", "appends=40", absl::StrCat("prefix=p", i + 1),
         "writer=" + tag, absl::StrCat("seed=", i + 1)}));
  }
  // Two nodes contend for one shared stream, each append at the version its
  // own replica last showed: the other node's appends make many of them
  // stale, and those must be Aborted (and retried), never both applied.
  for (int i = 0; i < 2; ++i) {
    const std::string tag = absl::StrCat("hot", i + 1);
    tags.push_back(tag);
    children.push_back(StartAppender(
        nodes[i], tag, {"mode=contend", "threads=2", "appends=15", "prefix=hot", "writer=" + tag}));
  }
  for (const auto& c : children) ASSERT_NE(c, nullptr);
  int64_t conflicts = 0;
  std::vector<AckRecord> acks;
  for (size_t i = 0; i < children.size(); ++i) {
    const std::string done = ExpectCleanExit(children[i].get(), tags[i]);
    const std::vector<std::string> fields = absl::StrSplit(done, ' ');
    ASSERT_EQ(fields.size(), 3u) << done;
    int64_t c = 0;
    ASSERT_TRUE(absl::SimpleAtoi(fields[2], &c));
    conflicts += c;
    std::vector<AckRecord> mine = Acks(tags[i]);
    EXPECT_EQ(mine.size(), i < 3 ? 80u : 30u) << tags[i];
    acks.insert(acks.end(), mine.begin(), mine.end());
  }
  std::printf("%lld cross-node conflicts on the shared stream were detected and retried\n",
              static_cast<long long>(conflicts));
  ExpectNodesAgree(nodes, acks);
}

TEST_F(ReplicationTest, AdminToolCreatesNodesAppendsThroughJetStreamAndShowsLag) {
  const std::string n1 = tmp_.Sub("n1"), n2 = tmp_.Sub("n2");
  for (const std::string& dir : {n1, n2}) {
    const ToolRun init =
        RunTool({"replicate", "init", dir, cluster_->url_list(), "--stream", kStream});
    ASSERT_EQ(init.exit_code, 0) << init.Describe();
  }
  const ToolRun again =
      RunTool({"replicate", "init", n1, cluster_->url_list(), "--stream", kStream});
  EXPECT_EQ(again.exit_code, 1) << again.Describe();
  EXPECT_NE(again.err.find("not empty"), std::string::npos) << again.err;

  for (int i = 0; i < 3; ++i) {
    const ToolRun appended = RunTool({"append", n1, "order-1", "--type", "Placed", "--data",
                                      absl::StrCat("{\"n\":", i, "}"), "--expected-version",
                                      i == 0 ? "no-stream" : absl::StrCat(i - 1)});
    ASSERT_EQ(appended.exit_code, 0) << appended.Describe();
  }
  // A stale expected version from the other node is a conflict (exit 3).
  const ToolRun stale = RunTool(
      {"append", n2, "order-1", "--type", "Placed", "--data", "{}", "--expected-version", "0"});
  EXPECT_EQ(stale.exit_code, 3) << stale.Describe();

  // Nobody has n2 open: its replica is where the last process left it, and
  // `rill info` says how far behind it is; `rill replicate sync` catches up.
  const ToolRun info = RunTool({"info", n2, "--json"});
  ASSERT_EQ(info.exit_code, 0) << info.Describe();
  EXPECT_NE(info.out.find("\"reachable\": true"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("\"stream_last_sequence\": 4"), std::string::npos) << info.out;
  const ToolRun sync = RunTool({"replicate", "sync", n2});
  ASSERT_EQ(sync.exit_code, 0) << sync.Describe();
  const ToolRun read = RunTool({"read", n2, "order-1", "--json"});
  ASSERT_EQ(read.exit_code, 0) << read.Describe();
  EXPECT_EQ(::rill::testing::Lines(read.out).size(), 3u) << read.out;
  const ToolRun synced = RunTool({"info", n2, "--json"});
  EXPECT_NE(synced.out.find("\"lag\": 0"), std::string::npos) << synced.out;
  const ToolRun e1 = RunTool({"export", n1}), e2 = RunTool({"export", n2});
  ASSERT_EQ(e1.exit_code, 0) << e1.Describe();
  EXPECT_EQ(e1.out, e2.out);
}

TEST_F(ReplicationTest, AStaleNodesExpectedVersionIsAConflict) {
  const std::string d1 = InitNode("n1"), d2 = InitNode("n2");
  std::unique_ptr<Store> n1 = OpenNode(d1), n2 = OpenNode(d2);
  ASSERT_TRUE(n1 && n2);
  RILL_ASSERT_OK(n1->Append("acct", ExpectedVersion::NoStream(), MakeEvents(1)).status());
  RILL_ASSERT_OK(WaitForReplica(n2.get(), kLong));
  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo seen_by_n2, n2->GetStreamInfo("acct"));
  ASSERT_EQ(seen_by_n2.last_version, 0);
  // n1 moves the stream on; n2 decides from what it saw.
  RILL_ASSERT_OK(n1->Append("acct", ExpectedVersion::Exact(0), MakeEvents(1)).status());
  absl::Status s = n2->Append("acct", ExpectedVersion::Exact(0), MakeEvents(1)).status();
  EXPECT_TRUE(absl::IsAborted(s)) << s;
  EXPECT_NE(s.message().find("is at version 1"), std::string::npos) << s;
  // The same key on two nodes: one write, the same result on both.
  AppendOptions keyed;
  keyed.idempotency_key = "acct-close";
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult a,
                            n1->Append("acct", ExpectedVersion::Any(), MakeEvents(1), keyed));
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult b,
                            n2->Append("acct", ExpectedVersion::Any(), MakeEvents(1), keyed));
  EXPECT_FALSE(a.deduplicated);
  EXPECT_TRUE(b.deduplicated);
  EXPECT_EQ(a.first_position, b.first_position);
  RILL_ASSERT_OK(WaitForReplica(n1.get(), kLong));
  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo final_info, n1->GetStreamInfo("acct"));
  EXPECT_EQ(final_info.last_version, 2);
}

}  // namespace
}  // namespace rill
