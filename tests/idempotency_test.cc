// Idempotency keys (Stripe semantics): a retry of the same request returns
// the original result marked deduplicated and writes nothing, even once the
// stream has moved on; the same key with a different request is
// AlreadyExists; keys survive a restart.
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/barrier.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rill/limits.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::LogSnapshot;
using ::rill::testing::MakeEvent;
using ::rill::testing::MakeEvents;
using ::rill::testing::TakeSnapshot;
using ::rill::testing::TempDir;

AppendOptions Key(const std::string& key) {
  AppendOptions options;
  options.idempotency_key = key;
  return options;
}

void ExpectSameResult(const AppendResult& got, const AppendResult& want) {
  EXPECT_EQ(got.stream, want.stream);
  EXPECT_EQ(got.first_version, want.first_version);
  EXPECT_EQ(got.last_version, want.last_version);
  EXPECT_EQ(got.first_position, want.first_position);
  EXPECT_EQ(got.last_position, want.last_position);
}

// The request most tests use: two events with metadata.
std::vector<EventData> Request() {
  std::vector<EventData> events = MakeEvents(2);
  events[0].metadata.correlation_id = "corr";
  events[0].metadata.causation_id = "cause";
  events[0].metadata.headers = {{"a", "1"}, {"b", "2"}};
  return events;
}

class IdempotencyTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    store_.reset();
    RILL_ASSERT_OK_AND_ASSIGN(store_, Store::Open(dir_.path()));
  }

  // Asserts that the request fails with AlreadyExists and writes nothing.
  void ExpectConflict(const std::string& stream, ExpectedVersion expected,
                      const std::vector<EventData>& events, const std::string& key) {
    RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot before, TakeSnapshot(*store_));
    absl::StatusOr<AppendResult> r = store_->Append(stream, expected, events, Key(key));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists) << r.status();
    RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot after, TakeSnapshot(*store_));
    EXPECT_EQ(before, after);
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(IdempotencyTest, RetryReturnsTheOriginalResultAndWritesNothing) {
  RILL_ASSERT_OK(store_->Append("other", ExpectedVersion::Any(), MakeEvents(3)).status());
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult first,
                            store_->Append("s", ExpectedVersion::NoStream(), Request(), Key("k1")));
  EXPECT_FALSE(first.deduplicated);
  EXPECT_EQ(first.first_position, 4u);
  EXPECT_EQ(first.last_position, 5u);
  RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot before, TakeSnapshot(*store_));

  for (int attempt = 0; attempt < 3; ++attempt) {
    RILL_ASSERT_OK_AND_ASSIGN(
        AppendResult retry, store_->Append("s", ExpectedVersion::NoStream(), Request(), Key("k1")));
    EXPECT_TRUE(retry.deduplicated);
    ExpectSameResult(retry, first);
  }
  RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot after, TakeSnapshot(*store_));
  EXPECT_EQ(before, after);
}

TEST_F(IdempotencyTest, RetrySucceedsAfterTheStreamMovedOn) {
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult first,
                            store_->Append("s", ExpectedVersion::NoStream(), Request(), Key("k1")));
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Exact(1), MakeEvents(2)).status());
  // Without the key the same request now fails its expected version ...
  EXPECT_EQ(store_->Append("s", ExpectedVersion::NoStream(), Request()).status().code(),
            absl::StatusCode::kAborted);
  RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot before, TakeSnapshot(*store_));
  // ... with it, it is recognised as the retry it is.
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult retry,
                            store_->Append("s", ExpectedVersion::NoStream(), Request(), Key("k1")));
  EXPECT_TRUE(retry.deduplicated);
  ExpectSameResult(retry, first);
  RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot after, TakeSnapshot(*store_));
  EXPECT_EQ(before, after);
}

TEST_F(IdempotencyTest, EventIdsAreNotPartOfTheRequest) {
  std::vector<EventData> request = Request();
  request[0].id = EventId::Random();
  request[1].id = EventId::Random();
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult first,
                            store_->Append("s", ExpectedVersion::Any(), request, Key("k")));
  request[0].id = EventId::Random();
  request[1].id = EventId();  // nil: would be generated
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult retry,
                            store_->Append("s", ExpectedVersion::Any(), request, Key("k")));
  EXPECT_TRUE(retry.deduplicated);
  ExpectSameResult(retry, first);
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store_->HeadPosition());
  EXPECT_EQ(head, 2u);
}

TEST_F(IdempotencyTest, SameKeyWithADifferentRequestIsAlreadyExists) {
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::NoStream(), Request(), Key("k")).status());
  const ExpectedVersion ev = ExpectedVersion::NoStream();

  std::vector<EventData> r = Request();
  r[1].payload = "{\"n\":999}";
  ExpectConflict("s", ev, r, "k");

  r = Request();
  r[0].type = "Other";
  ExpectConflict("s", ev, r, "k");

  r = Request();
  r[0].content_type = ContentType::kBinary;
  ExpectConflict("s", ev, r, "k");

  r = Request();
  r[1].schema_version = 2;
  ExpectConflict("s", ev, r, "k");

  r = Request();
  r[0].metadata.correlation_id = "other-corr";
  ExpectConflict("s", ev, r, "k");

  r = Request();
  r[0].metadata.causation_id = "";
  ExpectConflict("s", ev, r, "k");

  r = Request();
  r[0].metadata.headers[1].second = "3";
  ExpectConflict("s", ev, r, "k");

  r = Request();
  r[0].metadata.headers = {{"b", "2"}, {"a", "1"}};  // header order matters
  ExpectConflict("s", ev, r, "k");

  r = Request();
  r.push_back(MakeEvent("Extra", 3));
  ExpectConflict("s", ev, r, "k");

  r = Request();
  r.pop_back();
  ExpectConflict("s", ev, r, "k");

  ExpectConflict("other-stream", ev, Request(), "k");
  ExpectConflict("s", ExpectedVersion::Any(), Request(), "k");
  ExpectConflict("s", ExpectedVersion::Exact(1), Request(), "k");

  // The original request is still recognised after all those conflicts.
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult retry, store_->Append("s", ev, Request(), Key("k")));
  EXPECT_TRUE(retry.deduplicated);
}

TEST_F(IdempotencyTest, ExpectedVersionKindsAreDistinguished) {
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), MakeEvents(1)).status());
  RILL_ASSERT_OK(
      store_->Append("s", ExpectedVersion::StreamExists(), MakeEvents(1), Key("k")).status());
  ExpectConflict("s", ExpectedVersion::Any(), MakeEvents(1), "k");
  ExpectConflict("s", ExpectedVersion::Exact(0), MakeEvents(1), "k");
}

TEST_F(IdempotencyTest, KeySurvivesCloseAndReopen) {
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult first,
                            store_->Append("s", ExpectedVersion::NoStream(), Request(), Key("k1")));
  Reopen();
  RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot before, TakeSnapshot(*store_));
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult retry,
                            store_->Append("s", ExpectedVersion::NoStream(), Request(), Key("k1")));
  EXPECT_TRUE(retry.deduplicated);
  ExpectSameResult(retry, first);
  RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot after, TakeSnapshot(*store_));
  EXPECT_EQ(before, after);

  std::vector<EventData> different = Request();
  different[0].payload = "{}";
  ExpectConflict("s", ExpectedVersion::NoStream(), different, "k1");
}

TEST_F(IdempotencyTest, DistinctKeysAreIndependent) {
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult a,
                            store_->Append("s", ExpectedVersion::Any(), Request(), Key("k-a")));
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult b,
                            store_->Append("s", ExpectedVersion::Any(), Request(), Key("k-b")));
  EXPECT_FALSE(a.deduplicated);
  EXPECT_FALSE(b.deduplicated);
  EXPECT_EQ(a.first_position, 1u);
  EXPECT_EQ(b.first_position, 3u);

  RILL_ASSERT_OK_AND_ASSIGN(AppendResult a2,
                            store_->Append("s", ExpectedVersion::Any(), Request(), Key("k-a")));
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult b2,
                            store_->Append("s", ExpectedVersion::Any(), Request(), Key("k-b")));
  EXPECT_TRUE(a2.deduplicated);
  EXPECT_TRUE(b2.deduplicated);
  ExpectSameResult(a2, a);
  ExpectSameResult(b2, b);
  // Keys are compared exactly: a prefix or a case change is another key.
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult c,
                            store_->Append("s", ExpectedVersion::Any(), Request(), Key("k-A")));
  EXPECT_FALSE(c.deduplicated);
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult d,
                            store_->Append("s", ExpectedVersion::Any(), Request(), Key("k-")));
  EXPECT_FALSE(d.deduplicated);
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store_->HeadPosition());
  EXPECT_EQ(head, 8u);
}

TEST_F(IdempotencyTest, AppendsWithoutAKeyAreNeverDeduplicated) {
  for (int i = 0; i < 3; ++i) {
    RILL_ASSERT_OK_AND_ASSIGN(AppendResult r,
                              store_->Append("s", ExpectedVersion::Any(), Request()));
    EXPECT_FALSE(r.deduplicated);
  }
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store_->HeadPosition());
  EXPECT_EQ(head, 6u);
}

TEST_F(IdempotencyTest, KeyUsedByAppendConflictsWithAppendMulti) {
  RILL_ASSERT_OK(store_->Append("a", ExpectedVersion::Any(), Request(), Key("k")).status());
  RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot before, TakeSnapshot(*store_));
  std::vector<StreamAppend> multi = {{"a", ExpectedVersion::Any(), Request()},
                                     {"b", ExpectedVersion::Any(), MakeEvents(1)}};
  EXPECT_EQ(store_->AppendMulti(multi, Key("k")).status().code(), absl::StatusCode::kAlreadyExists);
  RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot after, TakeSnapshot(*store_));
  EXPECT_EQ(before, after);
}

TEST_F(IdempotencyTest, KeyUsedByAppendMultiConflictsWithAppend) {
  std::vector<StreamAppend> multi = {{"a", ExpectedVersion::Any(), Request()},
                                     {"b", ExpectedVersion::Any(), MakeEvents(1)}};
  RILL_ASSERT_OK(store_->AppendMulti(multi, Key("k")).status());
  ExpectConflict("a", ExpectedVersion::Any(), Request(), "k");
  ExpectConflict("b", ExpectedVersion::Any(), MakeEvents(1), "k");
}

TEST_F(IdempotencyTest, KeyLength) {
  RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot before, TakeSnapshot(*store_));
  const std::string too_long(kMaxIdempotencyKeyBytes + 1, 'k');
  EXPECT_EQ(store_->Append("s", ExpectedVersion::Any(), Request(), Key(too_long)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Append("s", ExpectedVersion::Any(), Request(), Key(std::string("a\0b", 3)))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot after, TakeSnapshot(*store_));
  EXPECT_EQ(before, after);

  const std::string longest(kMaxIdempotencyKeyBytes, 'k');
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult first,
                            store_->Append("s", ExpectedVersion::Any(), Request(), Key(longest)));
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult retry,
                            store_->Append("s", ExpectedVersion::Any(), Request(), Key(longest)));
  EXPECT_TRUE(retry.deduplicated);
  ExpectSameResult(retry, first);
}

TEST_F(IdempotencyTest, ARejectedRequestDoesNotUseUpItsKey) {
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), MakeEvents(1)).status());
  // Fails its expected version: nothing is written, the key is not recorded.
  EXPECT_EQ(store_->Append("s", ExpectedVersion::NoStream(), Request(), Key("k")).status().code(),
            absl::StatusCode::kAborted);
  // Invalid input: same.
  std::vector<EventData> bad = Request();
  bad[0].type = "";
  EXPECT_EQ(store_->Append("s", ExpectedVersion::Any(), bad, Key("k")).status().code(),
            absl::StatusCode::kInvalidArgument);
  // So the key is free for a (different) request that succeeds.
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult r,
                            store_->Append("s", ExpectedVersion::Exact(0), Request(), Key("k")));
  EXPECT_FALSE(r.deduplicated);
  EXPECT_EQ(r.first_version, 1);
}

TEST_F(IdempotencyTest, StatsCountsRecordedKeys) {
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats s0, store_->Stats());
  EXPECT_EQ(s0.idempotency_keys, 0u);
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), Request(), Key("k1")).status());
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), Request(), Key("k1"))
                     .status());  // a retry records nothing new
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), Request()).status());
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats s1, store_->Stats());
  EXPECT_EQ(s1.idempotency_keys, 1u);
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), Request(), Key("k2")).status());
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats s2, store_->Stats());
  EXPECT_EQ(s2.idempotency_keys, 2u);
}

TEST_F(IdempotencyTest, ConcurrentRetriesWriteExactlyOnce) {
  constexpr int kThreads = 8;
  constexpr int kRounds = 20;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(round);
    const std::string key = "key-" + std::to_string(round);
    RILL_ASSERT_OK_AND_ASSIGN(uint64_t head_before, store_->HeadPosition());
    std::vector<absl::StatusOr<AppendResult>> results(kThreads, absl::UnknownError("not run"));
    absl::Barrier* start = new absl::Barrier(kThreads);  // deletes itself
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        if (start->Block()) delete start;
        results[t] = store_->Append("s", ExpectedVersion::Any(), Request(), Key(key));
      });
    }
    for (std::thread& t : threads) t.join();

    int written = 0;
    for (const auto& r : results) {
      ASSERT_TRUE(r.ok()) << r.status();
      if (!r->deduplicated) ++written;
      ExpectSameResult(*r, *results[0]);
    }
    EXPECT_EQ(written, 1);
    EXPECT_EQ(results[0]->first_position, head_before + 1);
    RILL_ASSERT_OK_AND_ASSIGN(uint64_t head_after, store_->HeadPosition());
    EXPECT_EQ(head_after, head_before + 2);
  }
  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo info, store_->GetStreamInfo("s"));
  EXPECT_EQ(info.event_count, 2u * kRounds);
}

TEST_F(IdempotencyTest, ConcurrentDifferentRequestsWithOneKeyWriteOnce) {
  constexpr int kThreads = 8;
  std::vector<absl::StatusOr<AppendResult>> results(kThreads, absl::UnknownError("not run"));
  absl::Barrier* start = new absl::Barrier(kThreads);  // deletes itself
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      if (start->Block()) delete start;
      // Every thread sends a request of its own under the same key.
      results[t] = store_->Append("s", ExpectedVersion::Any(), MakeEvents(1, t), Key("shared"));
    });
  }
  for (std::thread& t : threads) t.join();

  int winner = -1;
  for (int t = 0; t < kThreads; ++t) {
    if (results[t].ok()) {
      EXPECT_EQ(winner, -1) << "two requests succeeded: " << winner << ", " << t;
      EXPECT_FALSE(results[t]->deduplicated);
      winner = t;
    } else {
      EXPECT_EQ(results[t].status().code(), absl::StatusCode::kAlreadyExists)
          << results[t].status();
    }
  }
  ASSERT_NE(winner, -1);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> events, store_->ReadStream("s", 0));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].payload, MakeEvent("E", winner).payload);
}

}  // namespace
}  // namespace rill
