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
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/barrier.h"
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
using ::rill::testing::AdoptInFlightTails;
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

// `--sync-replica` (ReplicationOptions::sync_replica): recorded in the node's
// settings, and its replica fsyncs, so it keeps no boot marker; the default
// node keeps one, clean once closed, and honours it even after being
// switched to sync_replica.
TEST_F(ReplicationTest, ASyncedReplicaIsChosenAtInitAndKeepsNoBootMarker) {
  const std::string synced = tmp_.Sub("synced"), plain = tmp_.Sub("plain");
  ASSERT_EQ(RunTool({"replicate", "init", synced, cluster_->url_list(), "--stream", kStream,
                     "--sync-replica"})
                .exit_code,
            0);
  ASSERT_EQ(
      RunTool({"replicate", "init", plain, cluster_->url_list(), "--stream", kStream}).exit_code,
      0);
  RILL_ASSERT_OK_AND_ASSIGN(ReplicationOptions s, ReadReplicationSettings(synced));
  EXPECT_TRUE(s.sync_replica);
  RILL_ASSERT_OK_AND_ASSIGN(ReplicationOptions p, ReadReplicationSettings(plain));
  EXPECT_FALSE(p.sync_replica);
  for (const std::string& dir : {synced, plain}) {
    const ToolRun appended = RunTool(
        {"append", dir, "s-" + dir.substr(dir.rfind('/') + 1), "--type", "T", "--data", "{}"});
    ASSERT_EQ(appended.exit_code, 0) << appended.Describe();
  }
  EXPECT_FALSE(std::filesystem::exists(synced + "/replica.boot"));
  EXPECT_EQ(ReadFileOrEmpty(plain + "/replica.boot"), "clean\n");

  // A node switched to sync_replica while its marker says another boot left
  // it in use (the machine went down, then the setting was changed) is
  // still rebuilt: the damage was done without fsync.
  std::string old_id;
  {
    std::unique_ptr<Store> node = OpenNode(plain);
    ASSERT_NE(node, nullptr);
    old_id = node->store_id();
  }
  ::rill::testing::WriteFile(plain + "/replica.boot", "dirty a-boot-long-gone\n");
  std::string conf = ReadFileOrEmpty(plain + "/replication.conf");
  const size_t at = conf.find("sync_replica = false");
  ASSERT_NE(at, std::string::npos) << conf;
  conf.replace(at, std::string("sync_replica = false").size(), "sync_replica = true");
  ::rill::testing::WriteFile(plain + "/replication.conf", conf);
  std::unique_ptr<Store> node = OpenNode(plain);
  ASSERT_NE(node, nullptr);
  EXPECT_NE(node->store_id(), old_id) << "the replica was not rebuilt";
  RILL_ASSERT_OK(WaitForReplica(node.get(), kLong));
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats stats, node->Stats());
  EXPECT_EQ(stats.event_count, 2u);
}

// The publisher's group commit wait (ReplicationOptions::group_commit_wait,
// the embedded writer's GroupCommitWait): one message in flight, and before
// the next one the publisher waits for the callers the last one answered, so
// threads appending in a loop share one message per round instead of
// alternating half-full ones. The setting is recorded in the node and
// bounded.
TEST_F(ReplicationTest, CallersAppendingInALoopShareOneMessagePerRound) {
  constexpr int kThreads = 4;
  constexpr int kRounds = 25;
  ReplicationOptions o = Options();
  o.group_commit_wait = absl::Milliseconds(100);  // the most allowed: ample under sanitizers
  const std::string dir = tmp_.Sub("looped");
  RILL_ASSERT_OK(InitReplicatedNode(dir, o));
  RILL_ASSERT_OK_AND_ASSIGN(ReplicationOptions recorded, ReadReplicationSettings(dir));
  EXPECT_EQ(recorded.group_commit_wait, absl::Milliseconds(100));
  std::unique_ptr<Store> node = OpenNode(dir);
  ASSERT_NE(node, nullptr);
  absl::Barrier start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.Block();
      for (int i = 0; i < kRounds; ++i) {
        absl::StatusOr<AppendResult> r = node->Append(
            absl::StrCat("loop-", t),
            i == 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(i - 1), MakeEvents(1));
        ASSERT_TRUE(r.ok()) << r.status();
      }
    });
  }
  for (std::thread& th : threads) th.join();
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> all, node->ReadAll(1));
  ASSERT_EQ(all.size(), size_t{kThreads * kRounds});
  // Each message is applied as one commit: its events share a recorded time.
  // (Two may fall short: the wait's quiet gap is 25 ms, and a thread of a
  // sanitizer build on a loaded machine may be descheduled longer.)
  ::rill::testing::ExpectEveryCommitHoldsEveryLooper(all, kThreads, "loop-", /*tolerated=*/2);
  RILL_ASSERT_OK_AND_ASSIGN(ReplicationStatus status, GetReplicationStatus(node.get()));
  EXPECT_LT(status.stream_last_sequence, uint64_t{kThreads * kRounds} / 2);

  // 0 turns it off; above 100 ms is refused before anything is created.
  const std::string off = tmp_.Sub("off");
  const ToolRun init = RunTool({"replicate", "init", off, cluster_->url_list(), "--stream", kStream,
                                "--group-commit-wait-us", "0"});
  ASSERT_EQ(init.exit_code, 0) << init.Describe();
  RILL_ASSERT_OK_AND_ASSIGN(ReplicationOptions zero, ReadReplicationSettings(off));
  EXPECT_EQ(zero.group_commit_wait, absl::ZeroDuration());
  o.group_commit_wait = absl::Milliseconds(101);
  EXPECT_TRUE(absl::IsInvalidArgument(InitReplicatedNode(tmp_.Sub("too-long"), o)));
  EXPECT_FALSE(std::filesystem::exists(tmp_.Sub("too-long")));
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

TEST_F(ReplicationTest, LeaderKilledDuringAppendsLosesNothingAcknowledged) {
  const std::vector<std::string> nodes = {InitNode("n1"), InitNode("n2")};
  std::vector<std::unique_ptr<ChildProcess>> children;
  const std::vector<std::string> tags = {"w1", "w2"};
  for (int i = 0; i < 2; ++i) {
    children.push_back(StartAppender(
        nodes[i], tags[i],
        {"mode=own", "threads=2", "streams=3", "appends=250", absl::StrCat("prefix=", tags[i]),
         "writer=" + tags[i], absl::StrCat("seed=", i + 7)}));
    ASSERT_NE(children.back(), nullptr);
  }
  ASSERT_TRUE(WaitUntil([&] { return AckCount("w1") >= 50 && AckCount("w2") >= 50; }, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(const int leader, cluster_->StreamLeader(kStream));
  const size_t before = AckCount("w1") + AckCount("w2");
  const absl::Time killed = absl::Now();
  RILL_ASSERT_OK(cluster_->Kill(leader));
  // Appends resume once a new leader is elected (nats-server 2.9's election
  // takes seconds); until then they wait and retry, none fails.
  ASSERT_TRUE(WaitUntil([&] { return AckCount("w1") + AckCount("w2") > before + 20; }, kLong))
      << "acks: " << AckCount("w1") << " + " << AckCount("w2") << " (" << before
      << " at the kill)\n"
      << children[0]->Stderr() << children[1]->Stderr() << cluster_->LogTails();
  const absl::Duration resumed = absl::Now() - killed;
  int new_leader = -1;
  RILL_ASSERT_OK(cluster_->WaitForStreamLeader(kStream, kLong, &new_leader));
  std::printf(
      "stream leader n%d killed after %zu acknowledged appends; appends resumed within "
      "%s (new leader n%d)\n",
      leader + 1, before, absl::FormatDuration(resumed).c_str(), new_leader + 1);
  EXPECT_LT(resumed, kLong);
  RILL_ASSERT_OK(cluster_->Restart(leader));
  std::vector<AckRecord> acks;
  for (int i = 0; i < 2; ++i) {
    ExpectCleanExit(children[i].get(), tags[i]);
    std::vector<AckRecord> mine = Acks(tags[i]);
    EXPECT_EQ(mine.size(), 500u) << tags[i];
    acks.insert(acks.end(), mine.begin(), mine.end());
  }
  ExpectNodesAgree(nodes, acks);
}

TEST_F(ReplicationTest, APausedServerDoesNotStopAppends) {
  const std::string dir = InitNode("n1");
  std::unique_ptr<Store> node = OpenNode(dir);
  ASSERT_NE(node, nullptr);
  RILL_ASSERT_OK(node->Append("warm", ExpectedVersion::Any(), MakeEvents(1)).status());
  int leader = -1;
  RILL_ASSERT_OK(cluster_->WaitForStreamLeader(kStream, kLong, &leader));
  // A follower stops answering (a partition stand-in): the other two are a
  // quorum. If the node was connected to it, it notices by missed pings and
  // reconnects to another server.
  const int follower = (leader + 1) % 3;
  RILL_ASSERT_OK(cluster_->Pause(follower));
  const absl::Time start = absl::Now();
  absl::Duration slowest;
  for (int i = 0; i < 30; ++i) {
    const absl::Time t = absl::Now();
    absl::StatusOr<AppendResult> r =
        node->Append("during-pause", ExpectedVersion::Any(), MakeEvents(1, i));
    ASSERT_TRUE(r.ok()) << r.status();
    slowest = std::max(slowest, absl::Now() - t);
  }
  std::printf("30 appends with server n%d paused took %s (slowest %s)\n", follower + 1,
              absl::FormatDuration(absl::Now() - start).c_str(),
              absl::FormatDuration(slowest).c_str());
  RILL_ASSERT_OK(cluster_->Resume(follower));
  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo info, node->GetStreamInfo("during-pause"));
  EXPECT_EQ(info.event_count, 30u);
}

TEST_F(ReplicationTest, RetriesOfAKilledNodeWithTheSameKeysAreDeduplicated) {
  const std::string dir = InitNode("n1");
  // One event per append, so the request in flight when the node dies is
  // known: the next version of each stream.
  std::unique_ptr<ChildProcess> child =
      StartAppender(dir, "k",
                    {"mode=own", "threads=2", "streams=2", "appends=0", "max_events=1", "prefix=k",
                     "writer=k", "keys=1"});
  ASSERT_NE(child, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return AckCount("k") >= 60; }, kLong));
  child->Kill(SIGKILL);
  child->Wait();
  std::vector<AckRecord> acks = Acks("k");

  std::unique_ptr<Store> node = OpenNode(dir);
  ASSERT_NE(node, nullptr);
  RILL_ASSERT_OK(WaitForReplica(node.get(), kLong));
  // The client retries everything it did not see acknowledged - here the
  // last request of each stream - and some it did, under the same keys.
  std::map<std::string, int64_t> last_acked;
  std::map<std::string, std::string> writer_of;
  for (const AckRecord& a : acks) {
    last_acked[a.stream] =
        std::max(last_acked.count(a.stream) ? last_acked[a.stream] : -1, a.last_version);
    writer_of[a.stream] = a.writer;
  }
  int deduplicated = 0;
  std::vector<AckRecord> retried;
  for (int t = 0; t < 2; ++t) {
    for (int k = 0; k < 2; ++k) {
      const std::string stream = absl::StrCat("k-t", t, "-s", k);
      const std::string writer = absl::StrCat("k-t", t);
      const int64_t v = last_acked.count(stream) ? last_acked[stream] + 1 : 0;
      AppendOptions options;
      options.idempotency_key = absl::StrCat(stream, "@", v);
      RILL_ASSERT_OK_AND_ASSIGN(AppendResult r,
                                node->Append(stream, ChildExpected(v),
                                             ChildEvents(stream, v, v, writer, kMaxPad), options));
      EXPECT_EQ(r.first_version, v);
      if (r.deduplicated) ++deduplicated;
      AckRecord a;
      a.key = options.idempotency_key;
      a.stream = stream;
      a.writer = writer;
      a.first_version = a.last_version = v;
      a.first_position = r.first_position;
      a.last_position = r.last_position;
      retried.push_back(a);
    }
  }
  for (size_t i = 0; i < acks.size(); i += 7) {
    const AckRecord& a = acks[i];
    AppendOptions options;
    options.idempotency_key = a.key;
    RILL_ASSERT_OK_AND_ASSIGN(
        AppendResult r,
        node->Append(a.stream, ChildExpected(a.first_version),
                     ChildEvents(a.stream, a.first_version, a.last_version, a.writer, kMaxPad),
                     options));
    EXPECT_TRUE(r.deduplicated) << FormatAck(a);
    EXPECT_EQ(r.first_position, a.first_position) << FormatAck(a);
  }
  std::printf(
      "%zu appends acknowledged before the kill; of the 4 requests retried at the next "
      "version, %d had been stored by the killed node and were deduplicated\n",
      acks.size(), deduplicated);
  acks.insert(acks.end(), retried.begin(), retried.end());
  node.reset();
  ExpectNodesAgree({dir}, acks);
}

TEST_F(ReplicationTest, ADeletedReplicaIsRebuiltFromJetStream) {
  const std::string d1 = InitNode("n1"), d2 = InitNode("n2");
  {
    std::unique_ptr<Store> n1 = OpenNode(d1), n2 = OpenNode(d2);
    ASSERT_TRUE(n1 && n2);
    for (int i = 0; i < 40; ++i) {
      Store* via = i % 2 ? n2.get() : n1.get();
      RILL_ASSERT_OK(
          via->Append(absl::StrCat("s", i % 5), ExpectedVersion::Any(), MakeEvents(1 + i % 3, i))
              .status());
    }
    RILL_ASSERT_OK(WaitForReplica(n2.get(), kLong));
  }
  std::filesystem::remove_all(d2 + "/log");
  std::filesystem::remove_all(d2 + "/derived");
  {
    std::unique_ptr<Store> n2 = OpenNode(d2);
    ASSERT_NE(n2, nullptr);
    RILL_ASSERT_OK(WaitForReplica(n2.get(), kLong));
    RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, n2->HeadPosition());
    EXPECT_EQ(head, 79u);  // 40 appends of 1, 2, 3, 1, ... events
  }
  const ToolRun verify = RunTool({"verify", d2});
  EXPECT_EQ(verify.exit_code, 0) << verify.Describe();
  const ToolRun e1 = RunTool({"export", d1}), e2 = RunTool({"export", d2});
  ASSERT_EQ(e2.exit_code, 0) << e2.Describe();
  EXPECT_TRUE(e1.out == e2.out) << "the rebuilt replica's export differs";
}

// A replica commits without fsync (ReplicationOptions::sync_replica off, the
// default): a SIGKILLed process leaves it marked in use by this boot, and the
// next open keeps it (the page cache held every commit); marked in use by
// another boot - the machine went down with the node open - it is deleted
// and rebuilt from JetStream by the next writable open, and read-only opens
// refuse it until then. Only the last process to close the node syncs it and
// marks it clean. Nothing acknowledged is lost either way.
TEST_F(ReplicationTest, AnUnsyncedReplicaIsKeptAfterAProcessCrashAndRebuiltAfterAReboot) {
  const std::string dir = InitNode("n1"), other = InitNode("n2");
  const std::string boot(
      absl::StripAsciiWhitespace(ReadFileOrEmpty("/proc/sys/kernel/random/boot_id")));
  ASSERT_FALSE(boot.empty());
  auto marker = [&] { return ReadFileOrEmpty(dir + "/replica.boot"); };
  auto kill_appender = [&](const std::string& tag) {
    std::unique_ptr<ChildProcess> child =
        StartAppender(dir, tag,
                      {"mode=own", "threads=2", "streams=2", "appends=0", "max_events=2",
                       "prefix=" + tag, "writer=" + tag, "keys=1"});
    ASSERT_NE(child, nullptr);
    ASSERT_TRUE(WaitUntil([&] { return AckCount(tag) >= 40; }, kLong));
    child->Kill(SIGKILL);
    child->Wait();
  };

  kill_appender("a");
  EXPECT_EQ(marker(), "dirty " + boot + "\n");
  std::string replica_id;
  {
    std::unique_ptr<Store> node = OpenNode(dir);
    ASSERT_NE(node, nullptr);
    replica_id = node->store_id();
    // A second process of the node comes and goes: it is not the last.
    std::unique_ptr<ChildProcess> side = StartAppender(
        dir, "c", {"mode=own", "threads=1", "streams=1", "appends=5", "prefix=c", "writer=c"});
    ASSERT_NE(side, nullptr);
    ExpectCleanExit(side.get(), "c");
    EXPECT_EQ(marker(), "dirty " + boot + "\n");
  }
  EXPECT_EQ(marker(), "clean\n");

  kill_appender("b");
  ASSERT_EQ(marker(), "dirty " + boot + "\n");
  {
    ::rill::testing::ScopedFakeBoot later("a-later-boot");
    StoreOptions read_only;
    read_only.read_only = true;
    const absl::Status refused = Store::Open(dir, read_only).status();
    EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
    EXPECT_NE(refused.message().find("rebuild it from JetStream"), absl::string_view::npos)
        << refused;
    const ToolRun read = RunTool({"read", dir, "a-t0-s0"});
    EXPECT_EQ(read.exit_code, 1) << read.Describe();
    // The documented way back: a writable open, here the admin tool's.
    const ToolRun sync = RunTool({"replicate", "sync", dir});
    ASSERT_EQ(sync.exit_code, 0) << sync.Describe();
    EXPECT_EQ(marker(), "clean\n");
    std::unique_ptr<Store> node = OpenNode(dir);
    ASSERT_NE(node, nullptr);
    EXPECT_NE(node->store_id(), replica_id) << "the replica was not rebuilt";
    EXPECT_EQ(marker(), "dirty a-later-boot\n");
    RILL_ASSERT_OK(WaitForReplica(node.get(), kLong));
  }
  EXPECT_EQ(marker(), "clean\n");

  std::vector<AckRecord> acks = Acks("a");
  for (const char* tag : {"b", "c"}) {
    for (AckRecord& a : Acks(tag)) acks.push_back(std::move(a));
  }
  // The request each killed thread had in flight may have been stored
  // without its acknowledgement: at most one per thread (2 threads, up to 2
  // events each).
  {
    std::unique_ptr<Store> node = OpenNode(dir);
    ASSERT_NE(node, nullptr);
    RILL_ASSERT_OK(WaitForReplica(node.get(), kLong));
    for (const auto& [tag, n] : AdoptInFlightTails(node.get(), {"a", "b"}, &acks)) {
      EXPECT_LE(n, 4) << tag;
    }
  }
  ExpectNodesAgree({dir, other}, acks);
}

// Openers racing after a reboot: three processes open, at the same moment,
// a node that another boot left in use (RILL_TEST_MARKER_PAUSE_MS holds each
// one after it read the old marker, so that all of them have). One rebuilds
// the replica; the others do not wait for it to close (it keeps its shared
// lock on the marker while it has the node open): all three append side by
// side, and nothing acknowledged is lost. (With a blocking lock conversion
// two of them waited for good.)
TEST_F(ReplicationTest, OpenersRacingAfterARebootAllOpenTheRebuiltReplica) {
  const std::string dir = InitNode("n1");
  std::string old_id;
  {
    std::unique_ptr<Store> node = OpenNode(dir);
    ASSERT_NE(node, nullptr);
    old_id = node->store_id();
  }
  ::rill::testing::WriteFile(dir + "/replica.boot", "dirty a-boot-long-gone\n");
  const std::vector<std::string> tags = {"r0", "r1", "r2"};
  std::vector<std::unique_ptr<ChildProcess>> children;
  for (const std::string& tag : tags) {
    absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Start(
        "append_child",
        {"mode=own", "threads=1", "streams=1", "appends=0", "max_events=2", "prefix=" + tag,
         "writer=" + tag, "dir=" + dir, "ack=" + tmp_.Sub(tag + ".acks")},
        tmp_.Sub(tag + ".err"),
        {"RILL_TEST_FAKE_BOOT_ID=a-later-boot", "RILL_TEST_MARKER_PAUSE_MS=300"});
    ASSERT_TRUE(child.ok()) << child.status();
    children.push_back(*std::move(child));
  }
  for (size_t i = 0; i < children.size(); ++i) {
    absl::StatusOr<std::string> line = children[i]->ReadLine(::rill::testing::kChildHang);
    ASSERT_TRUE(line.ok() && *line == "ready")
        << tags[i] << " did not open the node: " << (line.ok() ? *line : line.status().ToString())
        << "\n"
        << children[i]->Stderr();
  }
  for (const std::string& tag : tags) {
    ASSERT_TRUE(WaitUntil([&] { return AckCount(tag) >= 20; }, kLong)) << tag;
  }
  for (auto& child : children) {
    child->Kill(SIGKILL);
    child->Wait();
  }
  EXPECT_EQ(ReadFileOrEmpty(dir + "/replica.boot"), "dirty a-later-boot\n");

  std::vector<AckRecord> acks;
  for (const std::string& tag : tags) {
    for (AckRecord& a : Acks(tag)) acks.push_back(std::move(a));
  }
  ::rill::testing::ScopedFakeBoot later("a-later-boot");
  std::unique_ptr<Store> node = OpenNode(dir);
  ASSERT_NE(node, nullptr);
  RILL_ASSERT_OK(WaitForReplica(node.get(), kLong));
  // The request each killed child had in flight may be stored unacknowledged.
  for (const auto& [tag, n] : AdoptInFlightTails(node.get(), {"r0", "r1", "r2"}, &acks)) {
    EXPECT_LE(n, 2) << tag;
  }
  EXPECT_NE(node->store_id(), old_id) << "the replica was not rebuilt";
  VerifyLog(node.get(), acks, kMaxPad);
}

TEST_F(ReplicationTest, WithoutNatsAppendsFailInTimeAndReadsGoOn) {
  const std::string dir = InitNode("n1", absl::Seconds(2));
  {
    std::unique_ptr<Store> node = OpenNode(dir);
    ASSERT_NE(node, nullptr);
    AppendOptions keyed;
    keyed.idempotency_key = "s-open";
    RILL_ASSERT_OK(node->Append("s", ExpectedVersion::NoStream(), MakeEvents(2), keyed).status());
  }
  for (int i = 0; i < 3; ++i) RILL_ASSERT_OK(cluster_->Kill(i));
  std::unique_ptr<Store> node = OpenNode(dir);  // opens: the replica is local
  ASSERT_NE(node, nullptr);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> events, node->ReadStream("s", 0));
  EXPECT_EQ(events.size(), 2u);
  // A retry of a request the replica holds is answered by the replica.
  AppendOptions keyed;
  keyed.idempotency_key = "s-open";
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult retried,
                            node->Append("s", ExpectedVersion::NoStream(), MakeEvents(2), keyed));
  EXPECT_TRUE(retried.deduplicated);
  EXPECT_EQ(retried.last_position, 2u);
  EXPECT_TRUE(absl::IsAlreadyExists(
      node->Append("s", ExpectedVersion::NoStream(), MakeEvents(3), keyed).status()));
  const absl::Time start = absl::Now();
  absl::Status s = node->Append("s", ExpectedVersion::Exact(1), MakeEvents(1)).status();
  const absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_NE(s.message().find("not stored"), std::string::npos) << s;
  EXPECT_LT(took, absl::Seconds(6)) << "append_timeout is 2 s";
  std::printf("with every server down an append failed after %s: %s\n",
              absl::FormatDuration(took).c_str(), std::string(s.message()).c_str());
  const ToolRun info = RunTool({"info", dir});
  EXPECT_EQ(info.exit_code, 0) << info.Describe();
  EXPECT_NE(info.out.find("unknown"), std::string::npos) << info.out;

  // The servers come back (with their data): appends go on from where the
  // stream was. While the cluster settles an attempt may end as "outcome
  // unknown" and still be stored, so the client retries as told: under one
  // idempotency key.
  for (int i = 0; i < 3; ++i) RILL_ASSERT_OK(cluster_->Restart(i));
  RILL_ASSERT_OK(cluster_->WaitForStreamLeader(kStream, kLong, nullptr));
  AppendOptions after;
  after.idempotency_key = "s-after-restart";
  absl::StatusOr<AppendResult> r = absl::UnknownError("not tried");
  ASSERT_TRUE(WaitUntil(
      [&] {
        r = node->Append("s", ExpectedVersion::Exact(1), MakeEvents(1), after);
        return r.ok() || absl::IsAborted(r.status());
      },
      kLong))
      << r.status();
  RILL_ASSERT_OK(r.status());
  EXPECT_EQ(r->first_version, 2);
  EXPECT_EQ(r->first_position, 3u);

  // Bad settings are refused before anything is created.
  ReplicationOptions bad = Options();
  bad.servers = {"http://127.0.0.1:1"};
  EXPECT_TRUE(absl::IsInvalidArgument(InitReplicatedNode(tmp_.Sub("bad"), bad)));
  bad.servers = {"nats://127.0.0.1:1"};
  bad.connect_timeout = absl::Milliseconds(300);
  EXPECT_TRUE(absl::IsUnavailable(InitReplicatedNode(tmp_.Sub("bad"), bad)));
  EXPECT_FALSE(std::filesystem::exists(tmp_.Sub("bad")));
}

TEST_F(ReplicationTest, APushedStoreAndABackupBootstrapNodesThatMatch) {
  // An embedded store with history: several streams, multi-stream appends,
  // commits at different times, metadata.
  const std::string src = tmp_.Sub("src");
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(src));
    for (int i = 0; i < 30; ++i) {
      std::vector<EventData> events = MakeEvents(1 + i % 3, i);
      events[0].metadata.correlation_id = absl::StrCat("c", i);
      if (i % 5 == 4) {
        std::vector<StreamAppend> multi = {
            {absl::StrCat("m", i), ExpectedVersion::NoStream(), events},
            {"shared", ExpectedVersion::Any(), MakeEvents(1, i)}};
        RILL_ASSERT_OK(store->AppendMulti(multi).status());
      } else {
        RILL_ASSERT_OK(
            store->Append(absl::StrCat("s", i % 4), ExpectedVersion::Any(), events).status());
      }
      if (i % 10 == 0) absl::SleepFor(absl::Milliseconds(2));
    }
  }
  const ToolRun push =
      RunTool({"replicate", "push", src, cluster_->url_list(), "--stream", kStream});
  ASSERT_EQ(push.exit_code, 0) << push.Describe();
  const ToolRun again =
      RunTool({"replicate", "push", src, cluster_->url_list(), "--stream", kStream});
  EXPECT_EQ(again.exit_code, 1) << again.Describe();
  EXPECT_NE(again.err.find("already holds"), std::string::npos) << again.err;

  const std::string n1 = InitNode("n1");
  std::vector<RecordedEvent> original;
  {
    StoreOptions ro;
    ro.read_only = true;
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(src, ro));
    RILL_ASSERT_OK_AND_ASSIGN(original, store->ReadAll(1));
  }
  {
    std::unique_ptr<Store> node = OpenNode(n1);
    ASSERT_NE(node, nullptr);
    RILL_ASSERT_OK(WaitForReplica(node.get(), kLong));
    RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> events, node->ReadAll(1));
    ASSERT_EQ(events.size(), original.size());
    for (size_t i = 0; i < events.size(); ++i) {
      ASSERT_TRUE(SameEvent(events[i], original[i])) << "position " << i + 1;
    }
    // A backup of the node, taken while it is open, is a node too.
    const ToolRun backup = RunTool({"backup", n1, tmp_.Sub("b1")});
    ASSERT_EQ(backup.exit_code, 0) << backup.Describe();
    for (int i = 0; i < 5; ++i) {
      RILL_ASSERT_OK(
          node->Append("after-backup", ExpectedVersion::Any(), MakeEvents(1, i)).status());
    }
  }
  // It follows the stream from where the copy was: the tail only.
  std::unique_ptr<Store> restored = OpenNode(tmp_.Sub("b1"));
  ASSERT_NE(restored, nullptr);
  RILL_ASSERT_OK(WaitForReplica(restored.get(), kLong));
  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo tail, restored->GetStreamInfo("after-backup"));
  EXPECT_EQ(tail.event_count, 5u);
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, restored->HeadPosition());
  EXPECT_EQ(head, original.size() + 5);
  restored.reset();
  const ToolRun e1 = RunTool({"export", n1}), e2 = RunTool({"export", tmp_.Sub("b1")});
  ASSERT_EQ(e2.exit_code, 0) << e2.Describe();
  EXPECT_TRUE(e1.out == e2.out) << "the restored node's export differs";
}

TEST_F(ReplicationTest, AnUnacknowledgedAppendIsOfUnknownOutcomeAndItsRetryIsSafe) {
  const std::string dir = InitNode("n1", absl::Seconds(2));
  std::unique_ptr<Store> node = OpenNode(dir);
  ASSERT_NE(node, nullptr);
  RILL_ASSERT_OK(node->Append("acct", ExpectedVersion::NoStream(), MakeEvents(1)).status());
  // Every server stops answering: the publish is sent (the connection still
  // looks alive) and never acknowledged.
  for (int i = 0; i < 3; ++i) RILL_ASSERT_OK(cluster_->Pause(i));
  AppendOptions keyed;
  keyed.idempotency_key = "acct-deposit-1";
  const std::vector<EventData> deposit = MakeEvents(1, 42);
  absl::Status s = node->Append("acct", ExpectedVersion::Exact(0), deposit, keyed).status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_NE(s.message().find("outcome is unknown"), std::string::npos) << s;
  EXPECT_NE(s.message().find("same idempotency key is safe"), std::string::npos) << s;
  for (int i = 0; i < 3; ++i) RILL_ASSERT_OK(cluster_->Resume(i));
  RILL_ASSERT_OK(cluster_->WaitForStreamLeader(kStream, kLong, nullptr));
  // The client retries as told; whether the first attempt was stored or
  // not, the deposit is in the log once.
  absl::StatusOr<AppendResult> retry = absl::UnknownError("not tried");
  ASSERT_TRUE(WaitUntil(
      [&] {
        retry = node->Append("acct", ExpectedVersion::Exact(0), deposit, keyed);
        return !absl::IsUnavailable(retry.status());
      },
      kLong));
  RILL_ASSERT_OK(retry.status());
  std::printf("the retry %s\n", retry->deduplicated ? "was deduplicated (the first attempt had "
                                                      "been stored)"
                                                    : "stored the deposit (the first attempt had "
                                                      "not been)");
  RILL_ASSERT_OK(WaitForReplica(node.get(), kLong));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> events, node->ReadStream("acct", 0));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].payload, deposit[0].payload);
}

}  // namespace
}  // namespace rill
