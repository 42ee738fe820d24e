// Expected version on append (EventStoreDB semantics): Any, NoStream,
// StreamExists and Exact(n) on missing and existing streams. A mismatch is
// Aborted, names the expected and the actual version, and writes nothing; a
// negative Exact(n) is InvalidArgument.
#include "rill/expected_version.h"

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::LogSnapshot;
using ::rill::testing::MakeEvents;
using ::rill::testing::TakeSnapshot;
using ::rill::testing::TempDir;
using ::testing::AnyOf;
using ::testing::HasSubstr;

class ExpectedVersionTest : public ::testing::Test {
 protected:
  void SetUp() override { RILL_ASSERT_OK_AND_ASSIGN(store_, Store::Open(dir_.path())); }

  // Gives `stream` `count` events, so that its last version is count - 1.
  void Seed(const std::string& stream, int count) {
    RILL_ASSERT_OK(store_->Append(stream, ExpectedVersion::Any(), MakeEvents(count)).status());
  }

  // Appends two events under `expected` and asserts the append was rejected
  // with `code` and left the whole log unchanged. Returns the error message.
  std::string ExpectRejected(const std::string& stream, ExpectedVersion expected,
                             absl::StatusCode code) {
    absl::StatusOr<LogSnapshot> before = TakeSnapshot(*store_);
    EXPECT_TRUE(before.ok()) << before.status();
    absl::StatusOr<AppendResult> result = store_->Append(stream, expected, MakeEvents(2, 100));
    EXPECT_EQ(result.status().code(), code)
        << "expected " << expected.ToString() << ": " << result.status();
    absl::StatusOr<LogSnapshot> after = TakeSnapshot(*store_);
    EXPECT_TRUE(after.ok()) << after.status();
    if (before.ok() && after.ok()) {
      EXPECT_EQ(*before, *after);
    }
    return std::string(result.status().message());
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(ExpectedVersionTest, AnyCreatesAMissingStream) {
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult r,
                            store_->Append("s", ExpectedVersion::Any(), MakeEvents(2)));
  EXPECT_EQ(r.first_version, 0);
  EXPECT_EQ(r.last_version, 1);
}

TEST_F(ExpectedVersionTest, AnyAppendsToAnExistingStream) {
  Seed("s", 3);
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult r,
                            store_->Append("s", ExpectedVersion::Any(), MakeEvents(1)));
  EXPECT_EQ(r.first_version, 3);
  EXPECT_EQ(r.last_version, 3);
}

TEST_F(ExpectedVersionTest, NoStreamCreatesAMissingStream) {
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult r,
                            store_->Append("s", ExpectedVersion::NoStream(), MakeEvents(2)));
  EXPECT_EQ(r.first_version, 0);
  EXPECT_EQ(r.last_version, 1);
}

TEST_F(ExpectedVersionTest, NoStreamOnAnExistingStreamIsAborted) {
  Seed("s", 12);  // last version 11
  std::string message =
      ExpectRejected("s", ExpectedVersion::NoStream(), absl::StatusCode::kAborted);
  EXPECT_THAT(message, HasSubstr("no stream"));
  EXPECT_THAT(message, HasSubstr("11"));
}

TEST_F(ExpectedVersionTest, StreamExistsOnAnExistingStreamAppends) {
  Seed("s", 2);
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult r,
                            store_->Append("s", ExpectedVersion::StreamExists(), MakeEvents(1)));
  EXPECT_EQ(r.first_version, 2);
}

TEST_F(ExpectedVersionTest, StreamExistsOnAMissingStreamIsAborted) {
  Seed("other", 1);
  std::string message =
      ExpectRejected("s", ExpectedVersion::StreamExists(), absl::StatusCode::kAborted);
  EXPECT_THAT(message, HasSubstr("stream exists"));
  // The actual state of a missing stream may be named in words or as -1.
  EXPECT_THAT(message, AnyOf(HasSubstr("no stream"), HasSubstr("-1"), HasSubstr("not exist")));
  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo info, store_->GetStreamInfo("s"));
  EXPECT_FALSE(info.exists);
}

TEST_F(ExpectedVersionTest, ExactMatchingTheLastVersionAppends) {
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::NoStream(), MakeEvents(1)).status());
  for (int64_t last = 0; last < 5; ++last) {
    RILL_ASSERT_OK_AND_ASSIGN(AppendResult r,
                              store_->Append("s", ExpectedVersion::Exact(last), MakeEvents(1)));
    EXPECT_EQ(r.first_version, last + 1);
  }
  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo info, store_->GetStreamInfo("s"));
  EXPECT_EQ(info.last_version, 5);
}

TEST_F(ExpectedVersionTest, ExactZeroMeansExactlyOneEvent) {
  Seed("one", 1);
  Seed("two", 2);
  RILL_EXPECT_OK(store_->Append("one", ExpectedVersion::Exact(0), MakeEvents(1)).status());
  ExpectRejected("two", ExpectedVersion::Exact(0), absl::StatusCode::kAborted);
  ExpectRejected("missing", ExpectedVersion::Exact(0), absl::StatusCode::kAborted);
}

TEST_F(ExpectedVersionTest, ExactOnAMissingStreamIsAborted) {
  std::string message = ExpectRejected("s", ExpectedVersion::Exact(37), absl::StatusCode::kAborted);
  EXPECT_THAT(message, HasSubstr("37"));
  EXPECT_THAT(message, AnyOf(HasSubstr("no stream"), HasSubstr("-1"), HasSubstr("not exist")));
  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo info, store_->GetStreamInfo("s"));
  EXPECT_FALSE(info.exists);
  EXPECT_EQ(store_->ReadStream("s", 0).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ExpectedVersionTest, ExactBehindTheStreamIsAbortedNamingBothVersions) {
  Seed("s", 12);  // last version 11
  std::string message = ExpectRejected("s", ExpectedVersion::Exact(7), absl::StatusCode::kAborted);
  EXPECT_THAT(message, HasSubstr("7"));
  EXPECT_THAT(message, HasSubstr("11"));
}

TEST_F(ExpectedVersionTest, ExactAheadOfTheStreamIsAbortedNamingBothVersions) {
  Seed("s", 12);  // last version 11
  std::string message = ExpectRejected("s", ExpectedVersion::Exact(42), absl::StatusCode::kAborted);
  EXPECT_THAT(message, HasSubstr("42"));
  EXPECT_THAT(message, HasSubstr("11"));
}

TEST_F(ExpectedVersionTest, FailedAppendLeavesHeadAndStreamInfoUnchanged) {
  Seed("s", 3);
  Seed("t", 2);
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head_before, store_->HeadPosition());
  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo s_before, store_->GetStreamInfo("s"));

  // ExpectRejected compares the whole log; check the named facts as well.
  ExpectRejected("s", ExpectedVersion::Exact(0), absl::StatusCode::kAborted);

  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head_after, store_->HeadPosition());
  EXPECT_EQ(head_after, head_before);
  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo s_after, store_->GetStreamInfo("s"));
  EXPECT_EQ(s_after.last_version, s_before.last_version);
  EXPECT_EQ(s_after.event_count, s_before.event_count);
  EXPECT_EQ(s_after.last_position, s_before.last_position);
  EXPECT_EQ(s_after.last_recorded_at, s_before.last_recorded_at);
}

TEST_F(ExpectedVersionTest, RejectionLeavesNoGapInVersionsOrPositions) {
  Seed("s", 2);  // positions 1, 2
  ExpectRejected("s", ExpectedVersion::Exact(5), absl::StatusCode::kAborted);
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult r,
                            store_->Append("s", ExpectedVersion::Exact(1), MakeEvents(2)));
  EXPECT_EQ(r.first_version, 2);
  EXPECT_EQ(r.first_position, 3u);
  EXPECT_EQ(r.last_position, 4u);
}

TEST_F(ExpectedVersionTest, NegativeExactIsInvalidArgument) {
  Seed("s", 1);
  for (int64_t v : {int64_t{-1}, int64_t{-2}, std::numeric_limits<int64_t>::min()}) {
    SCOPED_TRACE(v);
    ExpectRejected("s", ExpectedVersion::Exact(v), absl::StatusCode::kInvalidArgument);
    ExpectRejected("missing", ExpectedVersion::Exact(v), absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(ExpectedVersionTest, NegativeExactIsInvalidArgumentInAppendMulti) {
  absl::StatusOr<LogSnapshot> before = TakeSnapshot(*store_);
  ASSERT_TRUE(before.ok());
  std::vector<StreamAppend> appends = {{"a", ExpectedVersion::Any(), MakeEvents(1)},
                                       {"b", ExpectedVersion::Exact(-1), MakeEvents(1)}};
  EXPECT_EQ(store_->AppendMulti(appends).status().code(), absl::StatusCode::kInvalidArgument);
  RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot after, TakeSnapshot(*store_));
  EXPECT_EQ(*before, after);
}

TEST(ExpectedVersionValueTest, ToString) {
  EXPECT_EQ(ExpectedVersion::Any().ToString(), "any");
  EXPECT_EQ(ExpectedVersion::NoStream().ToString(), "no stream");
  EXPECT_EQ(ExpectedVersion::StreamExists().ToString(), "stream exists");
  EXPECT_EQ(ExpectedVersion::Exact(0).ToString(), "0");
  EXPECT_EQ(ExpectedVersion::Exact(42).ToString(), "42");
  EXPECT_EQ(ExpectedVersion::Exact(9007199254740993).ToString(), "9007199254740993");
}

TEST(ExpectedVersionValueTest, KindVersionAndEquality) {
  EXPECT_EQ(ExpectedVersion::Any().kind(), ExpectedVersion::Kind::kAny);
  EXPECT_EQ(ExpectedVersion::NoStream().kind(), ExpectedVersion::Kind::kNoStream);
  EXPECT_EQ(ExpectedVersion::StreamExists().kind(), ExpectedVersion::Kind::kStreamExists);
  EXPECT_EQ(ExpectedVersion::Exact(3).kind(), ExpectedVersion::Kind::kExact);
  EXPECT_EQ(ExpectedVersion::Exact(3).version(), 3);
  EXPECT_TRUE(ExpectedVersion::Exact(3) == ExpectedVersion::Exact(3));
  EXPECT_FALSE(ExpectedVersion::Exact(3) == ExpectedVersion::Exact(4));
  EXPECT_FALSE(ExpectedVersion::Any() == ExpectedVersion::NoStream());
  static_assert(ExpectedVersion::Exact(5).version() == 5);
}

}  // namespace
}  // namespace rill
