// Concurrent appends: many threads, one store. Proves that group commit keeps
// the log's invariants (gapless positions in commit order, contiguous stream
// versions, every acknowledged event stored once, results that match the
// log) and that a request rejected inside a group commit fails alone.
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/barrier.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::ChildProcess;
using ::rill::testing::DescribeWaitStatus;
using ::rill::testing::ExitedWithCode;
using ::rill::testing::TempDir;

constexpr int kThreads = 8;
constexpr int kAppendsPerThread = 1000;

// Payload of the `seq`-th append of thread `thread` (event `index` of it).
std::string TickPayload(int thread, int seq, int index = 0) {
  return absl::StrCat("{\"t\":", thread, ",\"s\":", seq, ",\"i\":", index, "}");
}

bool ParseTick(const std::string& payload, int* thread, int* seq, int* index) {
  if (sscanf(payload.c_str(), "{\"t\":%d,\"s\":%d,\"i\":%d}", thread, seq, index) != 3) {
    return false;
  }
  return payload == TickPayload(*thread, *seq, *index);
}

std::vector<EventData> Ticks(int thread, int seq, int count) {
  std::vector<EventData> events;
  for (int i = 0; i < count; ++i) {
    EventData e;
    e.type = "Tick";
    e.payload = TickPayload(thread, seq, i);
    events.push_back(std::move(e));
  }
  return events;
}

class ConcurrencyTest : public ::testing::Test {
 protected:
  void SetUp() override { RILL_ASSERT_OK_AND_ASSIGN(store_, Store::Open(dir_.Sub("store"))); }

  // Reads the whole log back and checks it against what the appending
  // threads were told: results[t][s] is the AppendResult of the s-th append
  // of thread t, whose events carry TickPayload(t, s, i).
  void VerifyLog(const std::vector<std::vector<AppendResult>>& results) {
    uint64_t total = 0;
    for (const auto& r : results) {
      for (const AppendResult& a : r) total += a.last_position - a.first_position + 1;
    }
    RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store_->HeadPosition());
    ASSERT_EQ(head, total);
    RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> events, store_->ReadAll(1));
    ASSERT_EQ(events.size(), total);

    // Every event once, at the position and version its append was told.
    std::set<std::tuple<int, int, int>> seen;
    std::map<std::string, std::vector<const RecordedEvent*>> by_stream;
    for (size_t i = 0; i < events.size(); ++i) {
      const RecordedEvent& e = events[i];
      ASSERT_EQ(e.position, i + 1) << "positions must be gapless from 1";
      int t, s, idx;
      ASSERT_TRUE(ParseTick(e.payload, &t, &s, &idx)) << e.payload;
      ASSERT_TRUE(t >= 0 && t < static_cast<int>(results.size()) && s >= 0 &&
                  s < static_cast<int>(results[t].size()))
          << e.payload;
      ASSERT_TRUE(seen.insert({t, s, idx}).second) << "stored twice: " << e.payload;
      const AppendResult& r = results[t][s];
      EXPECT_EQ(e.stream, r.stream) << e.payload;
      EXPECT_EQ(e.position, r.first_position + idx) << e.payload;
      EXPECT_EQ(e.version, r.first_version + idx) << e.payload;
      EXPECT_EQ(e.type, "Tick");
      by_stream[e.stream].push_back(&e);
    }
    for (size_t t = 0; t < results.size(); ++t) {
      uint64_t last_position = 0;
      for (size_t s = 0; s < results[t].size(); ++s) {
        const AppendResult& r = results[t][s];
        EXPECT_FALSE(r.deduplicated);
        // A request's events are contiguous in the log and in its stream.
        EXPECT_EQ(r.last_position - r.first_position,
                  static_cast<uint64_t>(r.last_version - r.first_version));
        for (uint64_t p = r.first_position; p <= r.last_position; ++p) {
          EXPECT_EQ(seen.count({static_cast<int>(t), static_cast<int>(s),
                                static_cast<int>(p - r.first_position)}),
                    1u)
              << "thread " << t << " append " << s << " not stored";
        }
        // One thread's appends are committed in the order it made them.
        EXPECT_GT(r.first_position, last_position) << "thread " << t << " append " << s;
        last_position = r.last_position;
      }
    }
    EXPECT_EQ(seen.size(), total);

    // Each stream: versions 0.. contiguous, in position order, and the
    // stream index (ReadStream, GetStreamInfo) agrees with the log.
    for (const auto& [stream, stream_events] : by_stream) {
      RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> read,
                                store_->ReadStream(stream, 0));
      ASSERT_EQ(read.size(), stream_events.size()) << stream;
      for (size_t v = 0; v < read.size(); ++v) {
        EXPECT_EQ(stream_events[v]->version, static_cast<int64_t>(v)) << stream;
        EXPECT_EQ(read[v].version, static_cast<int64_t>(v)) << stream;
        EXPECT_EQ(read[v].position, stream_events[v]->position) << stream;
        EXPECT_EQ(read[v].payload, stream_events[v]->payload) << stream;
      }
      RILL_ASSERT_OK_AND_ASSIGN(const StreamInfo info, store_->GetStreamInfo(stream));
      EXPECT_TRUE(info.exists);
      EXPECT_EQ(info.last_version, static_cast<int64_t>(read.size()) - 1);
      EXPECT_EQ(info.event_count, read.size());
      EXPECT_EQ(info.first_position, read.front().position);
      EXPECT_EQ(info.last_position, read.back().position);
    }
    RILL_ASSERT_OK_AND_ASSIGN(const StoreStats stats, store_->Stats());
    EXPECT_EQ(stats.head_position, total);
    EXPECT_EQ(stats.event_count, total);
    EXPECT_EQ(stats.stream_count, by_stream.size());
  }

  // Runs `fn(t)` for t in [0, threads) on threads released together.
  void RunThreads(int threads, const std::function<void(int)>& fn) {
    absl::Barrier* barrier = new absl::Barrier(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        if (barrier->Block()) delete barrier;
        fn(t);
      });
    }
    for (std::thread& th : pool) th.join();
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(ConcurrencyTest, OwnStreamsWithExactVersionsStayGaplessAndContiguous) {
  std::vector<std::vector<AppendResult>> results(kThreads);
  std::vector<std::string> errors(kThreads);
  RunThreads(kThreads, [&](int t) {
    const std::string stream = absl::StrCat("own-", t);
    for (int s = 0; s < kAppendsPerThread; ++s) {
      const ExpectedVersion expected =
          s == 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(s - 1);
      absl::StatusOr<AppendResult> r = store_->Append(stream, expected, Ticks(t, s, 1));
      if (!r.ok()) {
        errors[t] = absl::StrCat("append ", s, ": ", r.status().ToString());
        return;
      }
      results[t].push_back(*r);
    }
  });
  for (int t = 0; t < kThreads; ++t) ASSERT_EQ(errors[t], "") << "thread " << t;
  for (int t = 0; t < kThreads; ++t) {
    for (int s = 0; s < kAppendsPerThread; ++s) {
      ASSERT_EQ(results[t][s].stream, absl::StrCat("own-", t));
      ASSERT_EQ(results[t][s].first_version, s);
      ASSERT_EQ(results[t][s].last_version, s);
    }
  }
  VerifyLog(results);
  // Positions are exactly 1..8000.
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store_->HeadPosition());
  EXPECT_EQ(head, uint64_t{kThreads} * kAppendsPerThread);
}

TEST_F(ConcurrencyTest, SharedStreamsWithAnyStayGaplessAndContiguous) {
  std::vector<std::vector<AppendResult>> results(kThreads);
  std::vector<std::string> errors(kThreads);
  RunThreads(kThreads, [&](int t) {
    for (int s = 0; s < kAppendsPerThread; ++s) {
      const std::string stream = absl::StrCat("shared-", (t + s) % 4);
      absl::StatusOr<AppendResult> r =
          store_->Append(stream, ExpectedVersion::Any(), Ticks(t, s, 1));
      if (!r.ok()) {
        errors[t] = absl::StrCat("append ", s, ": ", r.status().ToString());
        return;
      }
      results[t].push_back(*r);
    }
  });
  for (int t = 0; t < kThreads; ++t) ASSERT_EQ(errors[t], "") << "thread " << t;
  VerifyLog(results);
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store_->HeadPosition());
  EXPECT_EQ(head, uint64_t{kThreads} * kAppendsPerThread);
}

TEST_F(ConcurrencyTest, MultiEventAppendsToSharedStreamsStayAtomic) {
  // Requests of 1..5 events to the same streams from all threads: each
  // request's events must stay together in the log and in their stream.
  std::vector<std::vector<AppendResult>> results(kThreads);
  std::vector<std::string> errors(kThreads);
  RunThreads(kThreads, [&](int t) {
    for (int s = 0; s < 250; ++s) {
      const std::string stream = absl::StrCat("multi-", (t * 7 + s) % 3);
      const int n = 1 + (t + s) % 5;
      absl::StatusOr<AppendResult> r =
          store_->Append(stream, ExpectedVersion::Any(), Ticks(t, s, n));
      if (!r.ok()) {
        errors[t] = absl::StrCat("append ", s, ": ", r.status().ToString());
        return;
      }
      if (r->last_version - r->first_version != n - 1) {
        errors[t] = absl::StrCat("append ", s, " of ", n, " events got versions ", r->first_version,
                                 "..", r->last_version);
        return;
      }
      results[t].push_back(*r);
    }
  });
  for (int t = 0; t < kThreads; ++t) ASSERT_EQ(errors[t], "") << "thread " << t;
  VerifyLog(results);
}

// Holds LMDB's writer lock of the store from another process, so appends of
// this process queue up behind it and are drained as one batch on release.
class WriteLockHolder {
 public:
  explicit WriteLockHolder(const TempDir& dir, const std::string& store_dir) {
    auto child = ChildProcess::Start("lmdb_txn_child", {"write", store_dir + "/log"},
                                     dir.Sub("lmdb_txn_child.err"));
    if (!child.ok()) {
      ADD_FAILURE() << child.status();
      return;
    }
    child_ = std::move(child).value();
    absl::StatusOr<std::string> line = child_->ReadLine(absl::Seconds(30));
    if (!line.ok() || *line != "locked") {
      ADD_FAILURE() << "lmdb_txn_child did not lock: "
                    << (line.ok() ? *line : line.status().ToString()) << "\n"
                    << child_->Stderr();
      child_.reset();
    }
  }

  bool locked() const { return child_ != nullptr; }

  void Release() {
    if (child_ == nullptr) return;
    child_->CloseStdin();
    const int status = child_->Wait();
    EXPECT_TRUE(ExitedWithCode(status, 0))
        << "lmdb_txn_child " << DescribeWaitStatus(status) << "\n"
        << child_->Stderr();
    child_.reset();
  }

  ~WriteLockHolder() { Release(); }

 private:
  std::unique_ptr<ChildProcess> child_;
};

// Starts one thread per request, gives them time to queue behind `lock`,
// then releases it and joins. The sleep only makes one batch likely; every
// assertion below holds however the requests are batched.
void RunBehindLock(WriteLockHolder* lock, int threads, const std::function<void(int)>& fn) {
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { fn(t); });
  absl::SleepFor(absl::Milliseconds(300));
  lock->Release();
  for (std::thread& th : pool) th.join();
}

TEST_F(ConcurrencyTest, WrongExpectedVersionInGroupCommitFailsAlone) {
  constexpr int kStreams = 16;
  constexpr int kRounds = 4;
  for (int i = 0; i < kStreams; ++i) {
    RILL_ASSERT_OK(
        store_->Append(absl::StrCat("g-", i), ExpectedVersion::NoStream(), Ticks(i, 0, 1))
            .status());
  }
  std::vector<std::vector<AppendResult>> results(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> e,
                              store_->ReadStream(absl::StrCat("g-", i), 0));
    AppendResult r;
    r.stream = e[0].stream;
    r.first_position = r.last_position = e[0].position;
    results[i].push_back(r);
  }
  std::vector<int64_t> version(kStreams, 0);  // each stream's last version
  for (int round = 0; round < kRounds; ++round) {
    // Rounds 0 and 1 queue behind another process's write lock; rounds 2 and
    // 3 just start all threads at once.
    std::unique_ptr<WriteLockHolder> lock;
    if (round < 2) {
      lock = std::make_unique<WriteLockHolder>(dir_, store_->dir());
      ASSERT_TRUE(lock->locked());
    }
    RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head_before, store_->HeadPosition());
    const int bad = (round * 5 + 3) % kStreams;
    std::vector<absl::StatusOr<AppendResult>> got(kStreams, absl::UnknownError("not run"));
    auto append = [&](int i) {
      const ExpectedVersion expected =
          ExpectedVersion::Exact(i == bad ? version[i] + 7 : version[i]);
      got[i] = store_->Append(absl::StrCat("g-", i), expected, Ticks(i, round + 1, 1));
    };
    if (lock) {
      RunBehindLock(lock.get(), kStreams, append);
    } else {
      RunThreads(kStreams, append);
    }
    std::set<absl::Time> commit_times;
    for (int i = 0; i < kStreams; ++i) {
      if (i == bad) {
        ASSERT_EQ(got[i].status().code(), absl::StatusCode::kAborted)
            << "round " << round << ": " << got[i].status();
        // The message names the expected and the actual version.
        EXPECT_NE(got[i].status().message().find(absl::StrCat(version[i] + 7)),
                  absl::string_view::npos)
            << got[i].status();
        EXPECT_NE(got[i].status().message().find(absl::StrCat(version[i])), absl::string_view::npos)
            << got[i].status();
        results[i].push_back(AppendResult());  // position 0: not stored
        continue;
      }
      ASSERT_TRUE(got[i].ok()) << "round " << round << " stream " << i << ": " << got[i].status();
      EXPECT_EQ(got[i]->first_version, version[i] + 1);
      EXPECT_GT(got[i]->first_position, head_before);
      EXPECT_LE(got[i]->first_position, head_before + kStreams - 1);
      ++version[i];
      results[i].push_back(*got[i]);
      RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> e,
                                store_->ReadAll(got[i]->first_position));
      commit_times.insert(e[0].recorded_at);
    }
    // The rejected request wrote nothing; all the others were written.
    RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head_after, store_->HeadPosition());
    EXPECT_EQ(head_after, head_before + kStreams - 1) << "round " << round;
    RILL_ASSERT_OK_AND_ASSIGN(const StreamInfo bad_info,
                              store_->GetStreamInfo(absl::StrCat("g-", bad)));
    EXPECT_EQ(bad_info.last_version, version[bad]);
    // Not asserted (batching is not observable through the API), but shows
    // in the log whether the good requests shared a commit.
    std::printf("round %d: %zu distinct commit times among %d accepted requests\n", round,
                commit_times.size(), kStreams - 1);
  }
  // Every stored event's payload (i, seq) matches the result its append got;
  // no rejected append reached the log.
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> events, store_->ReadAll(1));
  ASSERT_EQ(events.size(), static_cast<size_t>(kStreams * (kRounds + 1) - kRounds));
  for (size_t p = 0; p < events.size(); ++p) {
    const RecordedEvent& e = events[p];
    ASSERT_EQ(e.position, p + 1);
    int t, s, idx;
    ASSERT_TRUE(ParseTick(e.payload, &t, &s, &idx)) << e.payload;
    ASSERT_LT(t, kStreams);
    ASSERT_LT(s, static_cast<int>(results[t].size()));
    EXPECT_NE(results[t][s].first_position, 0u)
        << "the rejected append " << e.payload << " was written";
    EXPECT_EQ(results[t][s].first_position, e.position) << e.payload;
    EXPECT_EQ(e.stream, absl::StrCat("g-", t));
  }
}

TEST_F(ConcurrencyTest, RacingExactAppendsToOneStreamLetExactlyOneWin) {
  // All requests of a round expect the same version of one stream: exactly
  // one may win, also when they are checked inside one batch (the writer must
  // see the versions its own batch has just written).
  constexpr int kRacers = 8;
  constexpr int kRounds = 12;
  const std::string stream = "race";
  std::vector<AppendResult> winners;
  for (int round = 0; round < kRounds; ++round) {
    std::unique_ptr<WriteLockHolder> lock;
    if (round % 3 == 0) {
      lock = std::make_unique<WriteLockHolder>(dir_, store_->dir());
      ASSERT_TRUE(lock->locked());
    }
    std::vector<absl::StatusOr<AppendResult>> got(kRacers, absl::UnknownError("not run"));
    auto append = [&](int t) {
      // Each round adds two events: the stream is at version 2 * round - 1.
      const ExpectedVersion expected =
          round == 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(2 * round - 1);
      got[t] = store_->Append(stream, expected, Ticks(t, round, 2));
    };
    if (lock) {
      RunBehindLock(lock.get(), kRacers, append);
    } else {
      RunThreads(kRacers, append);
    }
    int ok = 0;
    for (int t = 0; t < kRacers; ++t) {
      if (got[t].ok()) {
        ++ok;
        winners.push_back(*got[t]);
        EXPECT_EQ(got[t]->first_version, 2 * round);
        EXPECT_EQ(got[t]->last_version, 2 * round + 1);
      } else {
        EXPECT_EQ(got[t].status().code(), absl::StatusCode::kAborted) << got[t].status();
      }
    }
    ASSERT_EQ(ok, 1) << "round " << round << ": exactly one racer must win";
    // The next round expects the version this one left.
    RILL_ASSERT_OK_AND_ASSIGN(const StreamInfo info, store_->GetStreamInfo(stream));
    ASSERT_EQ(info.last_version, 2 * round + 1);
  }
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> events, store_->ReadStream(stream, 0));
  ASSERT_EQ(events.size(), static_cast<size_t>(2 * kRounds));
  for (size_t v = 0; v < events.size(); ++v) {
    EXPECT_EQ(events[v].version, static_cast<int64_t>(v));
    EXPECT_EQ(events[v].position, v + 1);
    EXPECT_EQ(events[v].position, winners[v / 2].first_position + v % 2);
  }
}

TEST_F(ConcurrencyTest, SameIdempotencyKeyRacingInOneBatchWritesOnce) {
  // Identical retries of one request race (often inside one batch): one
  // writes, every other gets its result marked deduplicated, even though the
  // first one has just moved the stream past their expected version. Racing
  // *different* requests under one key: one wins, the rest AlreadyExists.
  constexpr int kRacers = 8;
  constexpr int kRounds = 6;
  int64_t version = -1;  // of stream "idem"
  for (int round = 0; round < kRounds; ++round) {
    std::unique_ptr<WriteLockHolder> lock;
    if (round % 2 == 0) {
      lock = std::make_unique<WriteLockHolder>(dir_, store_->dir());
      ASSERT_TRUE(lock->locked());
    }
    const bool same_request = round < kRounds / 2;
    std::vector<absl::StatusOr<AppendResult>> got(kRacers, absl::UnknownError("not run"));
    auto append = [&](int t) {
      AppendOptions options;
      options.idempotency_key = absl::StrCat("key-", round);
      const ExpectedVersion expected =
          version < 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(version);
      // Same request: every racer sends thread 0's events.
      got[t] = store_->Append("idem", expected, Ticks(same_request ? 0 : t, round, 2), options);
    };
    if (lock) {
      RunBehindLock(lock.get(), kRacers, append);
    } else {
      RunThreads(kRacers, append);
    }
    int writers = 0;
    const AppendResult* first = nullptr;
    for (int t = 0; t < kRacers; ++t) {
      if (!got[t].ok()) {
        EXPECT_FALSE(same_request) << "round " << round << ": " << got[t].status();
        EXPECT_EQ(got[t].status().code(), absl::StatusCode::kAlreadyExists) << got[t].status();
        continue;
      }
      if (!got[t]->deduplicated) ++writers;
      if (first == nullptr) first = &*got[t];
      EXPECT_EQ(got[t]->first_position, first->first_position) << "round " << round;
      EXPECT_EQ(got[t]->last_position, first->last_position) << "round " << round;
      EXPECT_EQ(got[t]->first_version, version + 1) << "round " << round;
    }
    ASSERT_EQ(writers, 1) << "round " << round << ": the request must be written once";
    if (!same_request) {
      int ok = 0;
      for (int t = 0; t < kRacers; ++t) ok += got[t].ok() ? 1 : 0;
      EXPECT_EQ(ok, 1) << "round " << round;
    }
    version += 2;
    RILL_ASSERT_OK_AND_ASSIGN(const StreamInfo info, store_->GetStreamInfo("idem"));
    ASSERT_EQ(info.last_version, version) << "round " << round;
  }
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store_->HeadPosition());
  EXPECT_EQ(head, uint64_t{2} * kRounds);
}

}  // namespace
}  // namespace rill
