// The group commit wait (StoreOptions::group_commit_wait): a new batch waits
// for the callers the last commit released, so threads that append in a loop
// share one commit instead of taking turns; a lone caller never waits for
// itself; callers that do not come back cost a few shrinking waits, not one
// full wait per commit.
//
// A batch is counted by its commit time: every event of one transaction gets
// the same recorded time, and two durable commits are never within the same
// microsecond.
#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/barrier.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::MakeEvents;
using ::rill::testing::TempDir;

StoreOptions WithWait(absl::Duration wait) {
  StoreOptions options;
  options.group_commit_wait = wait;
  return options;
}

// Appends one event to `stream` and fails the test unless it is written.
void AppendOne(Store& store, const std::string& stream) {
  absl::StatusOr<AppendResult> r = store.Append(stream, ExpectedVersion::Any(), MakeEvents(1));
  ASSERT_TRUE(r.ok()) << r.status();
}

// The log's events and the number of distinct commit times among them.
struct Batches {
  size_t events = 0;
  size_t commits = 0;
};

Batches CountBatches(Store& store) {
  absl::StatusOr<std::vector<RecordedEvent>> all = store.ReadAll(1);
  EXPECT_TRUE(all.ok()) << all.status();
  Batches b;
  if (!all.ok()) return b;
  std::set<int64_t> times;
  for (const RecordedEvent& e : *all) times.insert(absl::ToUnixMicros(e.recorded_at));
  b.events = all->size();
  b.commits = times.size();
  return b;
}

TEST(GroupCommitTest, CallersAppendingInALoopShareOneCommitPerRound) {
  constexpr int kThreads = 4;
  constexpr int kRounds = 40;
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.Sub("store"), WithWait(absl::Milliseconds(500))));
  absl::Barrier start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.Block();
      for (int i = 0; i < kRounds; ++i) AppendOne(*store, absl::StrCat("loop-", t));
    });
  }
  for (std::thread& th : threads) th.join();

  // Commit time -> the streams (one per thread) of its events.
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> all, store->ReadAll(1));
  ASSERT_EQ(all.size(), size_t{kThreads * kRounds});
  std::map<int64_t, std::multiset<std::string>> commits;
  std::map<std::string, std::pair<int64_t, int64_t>> span;  // stream -> first, last commit
  for (const RecordedEvent& e : all) {
    const int64_t at = absl::ToUnixMicros(e.recorded_at);
    commits[at].insert(e.stream);
    auto [it, fresh] = span.try_emplace(e.stream, at, at);
    it->second.second = at;
  }
  // While every thread is appending (from the last thread's first commit to
  // the first thread's last one), each commit holds one append of every
  // thread. Threads may start or finish a few commits apart, so the edges
  // are not counted. Without the wait the threads split into groups that
  // take turns, each commit holding about half of them.
  int64_t from = 0, to = INT64_MAX;
  for (const auto& [stream, first_last] : span) {
    from = std::max(from, first_last.first);
    to = std::min(to, first_last.second);
  }
  int full = 0;
  for (auto it = commits.lower_bound(from); it != commits.end() && it->first <= to; ++it) {
    std::multiset<std::string> expected;
    for (int t = 0; t < kThreads; ++t) expected.insert(absl::StrCat("loop-", t));
    EXPECT_EQ(it->second, expected) << "commit at " << it->first << " us";
    ++full;
  }
  EXPECT_GT(full, 0) << "the threads never appended at the same time";
}

TEST(GroupCommitTest, ALoneCallerNeverWaitsForItself) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.Sub("store"), WithWait(absl::Seconds(10))));
  const absl::Time start = absl::Now();
  for (int i = 0; i < 20; ++i) AppendOne(*store, "alone");
  // Waiting for itself even once would take 10 s.
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  const Batches b = CountBatches(*store);
  EXPECT_EQ(b.events, 20u);
  EXPECT_EQ(b.commits, 20u);
}

TEST(GroupCommitTest, CallersThatDoNotComeBackCostAFewShrinkingWaits) {
  constexpr int kCallers = 12;
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.Sub("store"), WithWait(absl::Seconds(1))));
  const absl::Time start = absl::Now();
  // Each caller appends once from its own thread and is gone: every commit
  // after the first waits for a caller that never returns. The wait halves
  // each time (1 s + 0.5 s + ... < 2 s in all); a wait that did not adapt
  // would take kCallers - 1 seconds, one that did not end would hang.
  for (int i = 0; i < kCallers; ++i) {
    std::thread([&, i] { AppendOne(*store, absl::StrCat("once-", i)); }).join();
  }
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(CountBatches(*store).events, size_t{kCallers});
}

}  // namespace
}  // namespace rill
