// The NATS cluster harness itself: a 3-server JetStream cluster forms, keeps
// an R=3 stream writable when its leader is killed or a follower is paused,
// and takes a killed server back. The timings it prints (start, election) are
// what tests of the replicated store have to budget for.
#include "nats_cluster.h"

#include <signal.h>

#include <cstdio>
#include <map>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "test_util.h"

namespace rill::testing {
namespace {

constexpr char kStream[] = "EVENTS";
constexpr char kSubject[] = "events.>";

// Publishes `data` on events.test through a fresh connection to the live
// servers and returns the stream sequence it got.
absl::StatusOr<uint64_t> Publish(const NatsCluster& cluster, const std::string& data,
                                 absl::Duration wait = absl::Seconds(5)) {
  absl::StatusOr<JetStreamClient> client = ConnectJetStream(cluster.live_urls(), wait);
  if (!client.ok()) return client.status();
  jsPubOptions opts;
  jsPubOptions_Init(&opts);
  opts.MaxWait = absl::ToInt64Milliseconds(wait);
  jsPubAck* raw = nullptr;
  jsErrCode js_err = jsErrCode(0);
  const natsStatus s = js_Publish(&raw, client->js.get(), "events.test", data.data(),
                                  static_cast<int>(data.size()), &opts, &js_err);
  JsPubAckPtr ack(raw);
  if (s != NATS_OK) return NatsError("publish", s, js_err);
  return ack->Sequence;
}

// A started cluster with stream EVENTS (R=3) holding `count` messages.
absl::StatusOr<std::unique_ptr<NatsCluster>> ClusterWithStream(int count) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<NatsCluster>> cluster = NatsCluster::Start();
  if (!cluster.ok()) return cluster.status();
  printf("cluster of %d started in %s\n", (*cluster)->size(),
         absl::FormatDuration(absl::Now() - start).c_str());
  if (absl::Status s = (*cluster)->CreateStream(kStream, kSubject, 3); !s.ok()) return s;
  for (int i = 1; i <= count; ++i) {
    absl::StatusOr<uint64_t> seq = Publish(**cluster, absl::StrCat("m", i));
    if (!seq.ok()) return seq.status();
    if (*seq != static_cast<uint64_t>(i)) {
      return absl::InternalError(absl::StrCat("message ", i, " got sequence ", *seq));
    }
  }
  return cluster;
}

TEST(NatsClusterTest, StartsThreeServersWithReplicatedStream) {
  RILL_ASSERT_OK_AND_ASSIGN(auto cluster, ClusterWithStream(5));
  ASSERT_EQ(cluster->size(), 3);
  EXPECT_EQ(cluster->url_list(),
            absl::StrCat(cluster->url(0), ",", cluster->url(1), ",", cluster->url(2)));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(cluster->server_name(i), absl::StrCat("n", i + 1));
    EXPECT_GT(cluster->pid(i), 0);
    EXPECT_EQ(kill(cluster->pid(i), 0), 0) << cluster->server_name(i) << " is not running";
  }
  RILL_ASSERT_OK_AND_ASSIGN(const int leader, cluster->StreamLeader(kStream));
  EXPECT_GE(leader, 0);
  EXPECT_LT(leader, 3);
}

TEST(NatsClusterTest, NewLeaderAfterLeaderIsKilledAndKilledServerRestarts) {
  RILL_ASSERT_OK_AND_ASSIGN(auto cluster, ClusterWithStream(3));
  int old_leader = -1;
  RILL_ASSERT_OK(cluster->WaitForStreamLeader(kStream, absl::Seconds(10), &old_leader));

  RILL_ASSERT_OK(cluster->Kill(old_leader));
  EXPECT_EQ(cluster->pid(old_leader), -1);
  const absl::Time killed = absl::Now();
  int new_leader = -1;
  RILL_ASSERT_OK(cluster->WaitForStreamLeader(kStream, absl::Seconds(15), &new_leader));
  printf("killed leader %s; %s elected after %s\n", cluster->server_name(old_leader).c_str(),
         cluster->server_name(new_leader).c_str(),
         absl::FormatDuration(absl::Now() - killed).c_str());
  EXPECT_NE(new_leader, old_leader);

  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t seq, Publish(*cluster, "after kill"));
  EXPECT_EQ(seq, 4u);

  const absl::Time restart = absl::Now();
  RILL_ASSERT_OK(cluster->Restart(old_leader));
  printf("restarted %s in %s\n", cluster->server_name(old_leader).c_str(),
         absl::FormatDuration(absl::Now() - restart).c_str());
  EXPECT_GT(cluster->pid(old_leader), 0);
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t seq2, Publish(*cluster, "after restart"));
  EXPECT_EQ(seq2, 5u);
}

TEST(NatsClusterTest, PublishesWhileFollowerIsPaused) {
  RILL_ASSERT_OK_AND_ASSIGN(auto cluster, ClusterWithStream(3));
  int leader = -1;
  RILL_ASSERT_OK(cluster->WaitForStreamLeader(kStream, absl::Seconds(10), &leader));
  const int follower = (leader + 1) % cluster->size();

  RILL_ASSERT_OK(cluster->Pause(follower));
  EXPECT_TRUE(cluster->paused(follower));
  EXPECT_EQ(cluster->live_urls().size(), 2u);
  for (uint64_t want = 4; want <= 6; ++want) {
    RILL_ASSERT_OK_AND_ASSIGN(const uint64_t seq, Publish(*cluster, "while paused"));
    EXPECT_EQ(seq, want);
  }
  RILL_ASSERT_OK_AND_ASSIGN(const int still, cluster->StreamLeader(kStream));
  EXPECT_EQ(still, leader);

  RILL_ASSERT_OK(cluster->Resume(follower));
  EXPECT_FALSE(cluster->paused(follower));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t seq, Publish(*cluster, "after resume"));
  EXPECT_EQ(seq, 7u);
}

// What a client sees while the stream elects a new leader: publishes with a
// short wait are retried until one succeeds, and the distinct errors are
// printed (tests of the replicated store assert on them).
TEST(NatsClusterTest, PublishErrorsDuringElection) {
  RILL_ASSERT_OK_AND_ASSIGN(auto cluster, ClusterWithStream(1));
  int leader = -1;
  RILL_ASSERT_OK(cluster->WaitForStreamLeader(kStream, absl::Seconds(10), &leader));
  RILL_ASSERT_OK(cluster->Kill(leader));
  const absl::Time killed = absl::Now();
  // Each distinct error, with how often and when (since the kill) it was first seen.
  std::map<std::string, std::pair<int, absl::Duration>> errors;
  absl::StatusOr<uint64_t> seq;
  for (;;) {
    seq = Publish(*cluster, "during election", absl::Milliseconds(500));
    if (seq.ok() || absl::Now() - killed > absl::Seconds(15)) break;
    auto [it, inserted] =
        errors.try_emplace(std::string(seq.status().ToString()), 0, absl::Now() - killed);
    ++it->second.first;
    absl::SleepFor(absl::Milliseconds(20));  // a failure can be instant (no responders)
  }
  RILL_ASSERT_OK(seq.status());
  EXPECT_EQ(*seq, 2u);
  printf("first publish after killing the leader succeeded after %s; errors before:\n",
         absl::FormatDuration(absl::Now() - killed).c_str());
  for (const auto& [message, seen] : errors) {
    printf("  %d x (first after %s) %s\n", seen.first, absl::FormatDuration(seen.second).c_str(),
           message.c_str());
  }
}

}  // namespace
}  // namespace rill::testing

namespace rill::testing {
namespace {

TEST(NatsClusterTest, KeepsGivenBaseDir) {
  TempDir dir;
  const std::string base = dir.Sub("cluster");
  {
    RILL_ASSERT_OK_AND_ASSIGN(auto cluster, NatsCluster::Start(1, base));
    EXPECT_EQ(cluster->dir(), base);
    RILL_ASSERT_OK(cluster->CreateStream(kStream, kSubject, 1));
    RILL_ASSERT_OK_AND_ASSIGN(const uint64_t seq, Publish(*cluster, "one"));
    EXPECT_EQ(seq, 1u);
  }
  EXPECT_FALSE(ReadFileOrEmpty(base + "/n1.conf").empty());
  EXPECT_FALSE(ReadFileOrEmpty(base + "/n1.log").empty());
}

}  // namespace
}  // namespace rill::testing
