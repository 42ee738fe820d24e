// AppendMulti: one atomic append across several distinct streams. Either
// every stream's expected version matches and everything is written, in
// request order, or nothing is.
#include <cstdint>
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
using ::rill::testing::Positions;
using ::rill::testing::TakeSnapshot;
using ::rill::testing::TempDir;
using ::rill::testing::Versions;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class MultiAppendTest : public ::testing::Test {
 protected:
  void SetUp() override { RILL_ASSERT_OK_AND_ASSIGN(store_, Store::Open(dir_.path())); }

  // Asserts that `appends` fails with `code` and writes nothing. Returns the
  // error message.
  std::string ExpectRejected(const std::vector<StreamAppend>& appends, absl::StatusCode code,
                             const AppendOptions& options = AppendOptions()) {
    absl::StatusOr<LogSnapshot> before = TakeSnapshot(*store_);
    EXPECT_TRUE(before.ok()) << before.status();
    absl::StatusOr<std::vector<AppendResult>> r = store_->AppendMulti(appends, options);
    EXPECT_EQ(r.status().code(), code) << r.status();
    absl::StatusOr<LogSnapshot> after = TakeSnapshot(*store_);
    EXPECT_TRUE(after.ok()) << after.status();
    if (before.ok() && after.ok()) {
      EXPECT_EQ(*before, *after);
    }
    return std::string(r.status().message());
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(MultiAppendTest, OneFailingExpectedVersionWritesNoStream) {
  RILL_ASSERT_OK(store_->Append("b", ExpectedVersion::Any(), MakeEvents(12)).status());
  // The failing stream first, in the middle and last.
  for (int bad = 0; bad < 3; ++bad) {
    SCOPED_TRACE(bad);
    std::vector<StreamAppend> appends = {{"a", ExpectedVersion::NoStream(), MakeEvents(2)},
                                         {"b", ExpectedVersion::Exact(11), MakeEvents(1)},
                                         {"c", ExpectedVersion::Any(), MakeEvents(3)}};
    appends[bad].expected = ExpectedVersion::Exact(37);
    ExpectRejected(appends, absl::StatusCode::kAborted);
    for (const char* stream : {"a", "c"}) {
      RILL_ASSERT_OK_AND_ASSIGN(StreamInfo info, store_->GetStreamInfo(stream));
      EXPECT_FALSE(info.exists) << stream;
    }
  }
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store_->HeadPosition());
  EXPECT_EQ(head, 12u);
}

TEST_F(MultiAppendTest, MismatchMessageNamesTheStreamAndBothVersions) {
  RILL_ASSERT_OK(store_->Append("orders-b", ExpectedVersion::Any(), MakeEvents(12)).status());
  std::vector<StreamAppend> appends = {{"orders-a", ExpectedVersion::Any(), MakeEvents(1)},
                                       {"orders-b", ExpectedVersion::Exact(37), MakeEvents(1)}};
  std::string message = ExpectRejected(appends, absl::StatusCode::kAborted);
  EXPECT_THAT(message, HasSubstr("37"));
  EXPECT_THAT(message, HasSubstr("11"));
  EXPECT_THAT(message, HasSubstr("orders-b"));
}

TEST_F(MultiAppendTest, ResultsAreInRequestOrderWithContiguousPositions) {
  RILL_ASSERT_OK(store_->Append("alpha", ExpectedVersion::Any(), MakeEvents(2)).status());
  // Not in name order, so an implementation that sorts would be caught.
  std::vector<StreamAppend> appends = {{"zeta", ExpectedVersion::NoStream(), MakeEvents(2)},
                                       {"alpha", ExpectedVersion::Exact(1), MakeEvents(3, 10)},
                                       {"mid", ExpectedVersion::Any(), MakeEvents(1, 20)}};
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<AppendResult> results, store_->AppendMulti(appends));
  ASSERT_EQ(results.size(), 3u);

  EXPECT_EQ(results[0].stream, "zeta");
  EXPECT_EQ(results[0].first_version, 0);
  EXPECT_EQ(results[0].last_version, 1);
  EXPECT_EQ(results[0].first_position, 3u);
  EXPECT_EQ(results[0].last_position, 4u);

  EXPECT_EQ(results[1].stream, "alpha");
  EXPECT_EQ(results[1].first_version, 2);
  EXPECT_EQ(results[1].last_version, 4);
  EXPECT_EQ(results[1].first_position, 5u);
  EXPECT_EQ(results[1].last_position, 7u);

  EXPECT_EQ(results[2].stream, "mid");
  EXPECT_EQ(results[2].first_version, 0);
  EXPECT_EQ(results[2].last_version, 0);
  EXPECT_EQ(results[2].first_position, 8u);
  EXPECT_EQ(results[2].last_position, 8u);
  for (const AppendResult& r : results) EXPECT_FALSE(r.deduplicated);

  // The log holds the events in request order at those positions.
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> all, store_->ReadAll(3));
  ASSERT_EQ(all.size(), 6u);
  const std::vector<std::pair<std::string, std::string>> want = {{"zeta", "E0"},   {"zeta", "E1"},
                                                                 {"alpha", "E10"}, {"alpha", "E11"},
                                                                 {"alpha", "E12"}, {"mid", "E20"}};
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].position, 3 + i);
    EXPECT_EQ(all[i].stream, want[i].first);
    EXPECT_EQ(all[i].type, want[i].second);
  }
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> alpha, store_->ReadStream("alpha", 0));
  EXPECT_THAT(Versions(alpha), ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(Positions(alpha), ElementsAre(1, 2, 5, 6, 7));
}

TEST_F(MultiAppendTest, SingleStreamBehavesLikeAppend) {
  std::vector<StreamAppend> appends = {{"s", ExpectedVersion::NoStream(), MakeEvents(2)}};
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<AppendResult> results, store_->AppendMulti(appends));
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].stream, "s");
  EXPECT_EQ(results[0].last_version, 1);
  EXPECT_EQ(results[0].last_position, 2u);
}

TEST_F(MultiAppendTest, SameStreamTwiceIsInvalid) {
  std::vector<StreamAppend> appends = {{"a", ExpectedVersion::Any(), MakeEvents(1)},
                                       {"b", ExpectedVersion::Any(), MakeEvents(1)},
                                       {"a", ExpectedVersion::Any(), MakeEvents(1)}};
  ExpectRejected(appends, absl::StatusCode::kInvalidArgument);
}

TEST_F(MultiAppendTest, EmptyRequestIsInvalid) {
  ExpectRejected({}, absl::StatusCode::kInvalidArgument);
}

TEST_F(MultiAppendTest, OneInvalidStreamRejectsTheWholeRequest) {
  std::vector<StreamAppend> appends = {{"a", ExpectedVersion::Any(), MakeEvents(1)},
                                       {"", ExpectedVersion::Any(), MakeEvents(1)}};
  ExpectRejected(appends, absl::StatusCode::kInvalidArgument);
  appends = {{"a", ExpectedVersion::Any(), MakeEvents(1)},
             {"b", ExpectedVersion::Any(), MakeEvents(1)}};
  appends[1].events[0].type = "";
  ExpectRejected(appends, absl::StatusCode::kInvalidArgument);
}

TEST_F(MultiAppendTest, IdempotentRetryReturnsEveryResultDeduplicated) {
  AppendOptions key;
  key.idempotency_key = "multi-1";
  std::vector<StreamAppend> appends = {{"x", ExpectedVersion::NoStream(), MakeEvents(2)},
                                       {"y", ExpectedVersion::NoStream(), MakeEvents(1)},
                                       {"z", ExpectedVersion::NoStream(), MakeEvents(3)}};
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<AppendResult> first, store_->AppendMulti(appends, key));
  // Move one stream on so that the expected versions no longer hold.
  RILL_ASSERT_OK(store_->Append("y", ExpectedVersion::Any(), MakeEvents(1)).status());
  RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot before, TakeSnapshot(*store_));

  RILL_ASSERT_OK_AND_ASSIGN(std::vector<AppendResult> retry, store_->AppendMulti(appends, key));
  ASSERT_EQ(retry.size(), first.size());
  for (size_t i = 0; i < retry.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_FALSE(first[i].deduplicated);
    EXPECT_TRUE(retry[i].deduplicated);
    EXPECT_EQ(retry[i].stream, first[i].stream);
    EXPECT_EQ(retry[i].first_version, first[i].first_version);
    EXPECT_EQ(retry[i].last_version, first[i].last_version);
    EXPECT_EQ(retry[i].first_position, first[i].first_position);
    EXPECT_EQ(retry[i].last_position, first[i].last_position);
  }
  RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot after, TakeSnapshot(*store_));
  EXPECT_EQ(before, after);
}

TEST_F(MultiAppendTest, IdempotentRetryInAnotherStreamOrderIsAlreadyExists) {
  AppendOptions key;
  key.idempotency_key = "multi-2";
  std::vector<StreamAppend> appends = {{"x", ExpectedVersion::Any(), MakeEvents(1)},
                                       {"y", ExpectedVersion::Any(), MakeEvents(1, 5)}};
  RILL_ASSERT_OK(store_->AppendMulti(appends, key).status());
  std::swap(appends[0], appends[1]);
  ExpectRejected(appends, absl::StatusCode::kAlreadyExists, key);
}

}  // namespace
}  // namespace rill
