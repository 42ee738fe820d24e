// Bad input through the API that the contract tests (append_test,
// expected_version_test, idempotency_test, multi_append_test, read_test)
// do not already cover: the edges of every number and name a caller passes.
// Each case must give the most specific status, write nothing, and never
// crash (ASan/UBSan builds run these too). docs/guarantees.md ("Bad input")
// lists every case with the test that covers it.
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rill/event.h"
#include "rill/limits.h"
#include "rill/replay.h"
#include "rill/snapshot.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::LogSnapshot;
using ::rill::testing::MakeEvent;
using ::rill::testing::MakeEvents;
using ::rill::testing::TakeSnapshot;
using ::rill::testing::TempDir;

constexpr int64_t kMaxVersion = std::numeric_limits<int64_t>::max();
constexpr int64_t kMinVersion = std::numeric_limits<int64_t>::min();

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RILL_ASSERT_OK_AND_ASSIGN(store_, Store::Open(dir_.path()));
    RILL_ASSERT_OK(store_->Append("existing", ExpectedVersion::NoStream(), MakeEvents(3)).status());
  }

  // Runs `fn` and checks that it left the log exactly as it was.
  template <typename Fn>
  void ExpectNothingWritten(Fn&& fn) {
    RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot before, TakeSnapshot(*store_));
    fn();
    RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot after, TakeSnapshot(*store_));
    EXPECT_EQ(before, after);
  }

  // Names that can never be a stream's: empty, over the limit, past LMDB's
  // 511-byte key limit, NUL, invalid UTF-8.
  static std::vector<std::string> InvalidNames() {
    return {"",
            std::string(kMaxStreamNameBytes + 1, 'n'),
            std::string(600, 'n'),
            std::string(5000, 'n'),
            std::string("a\0b", 3),
            "\xff",
            "order-\xc3",
            "\xed\xa0\x80"};
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

// --- Expected versions at the edges of int64 --------------------------------

TEST_F(BadInputTest, ExactInt64MaxIsAbortedNamingBothVersionsAndWritesNothing) {
  // The stream's next version would be INT64_MAX + 1: never reached, so a
  // plain mismatch, not an overflow.
  for (const char* stream : {"existing", "missing"}) {
    SCOPED_TRACE(stream);
    ExpectNothingWritten([&] {
      absl::StatusOr<AppendResult> r =
          store_->Append(stream, ExpectedVersion::Exact(kMaxVersion), MakeEvents(2));
      EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted) << r.status();
      EXPECT_NE(r.status().message().find(absl::StrCat(kMaxVersion)), absl::string_view::npos)
          << r.status();
    });
  }
  ExpectNothingWritten([&] {
    absl::StatusOr<std::vector<AppendResult>> r = store_->AppendMulti(
        {StreamAppend{"existing", ExpectedVersion::Exact(2), MakeEvents(1)},
         StreamAppend{"other", ExpectedVersion::Exact(kMaxVersion), MakeEvents(1)}});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted) << r.status();
  });
}

TEST_F(BadInputTest, NegativeExactVersionsAreInvalidDownToInt64Min) {
  for (int64_t v : {int64_t{-1}, int64_t{-2}, kMinVersion}) {
    SCOPED_TRACE(v);
    ExpectNothingWritten([&] {
      EXPECT_EQ(
          store_->Append("existing", ExpectedVersion::Exact(v), MakeEvents(1)).status().code(),
          absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(
          store_->AppendMulti({StreamAppend{"existing", ExpectedVersion::Exact(v), MakeEvents(1)}})
              .status()
              .code(),
          absl::StatusCode::kInvalidArgument);
    });
  }
}

TEST_F(BadInputTest, AnAbortedInt64MaxRequestDoesNotUseUpItsKey) {
  AppendOptions key;
  key.idempotency_key = "k-max";
  EXPECT_EQ(store_->Append("existing", ExpectedVersion::Exact(kMaxVersion), MakeEvents(1), key)
                .status()
                .code(),
            absl::StatusCode::kAborted);
  RILL_ASSERT_OK_AND_ASSIGN(
      const AppendResult r,
      store_->Append("existing", ExpectedVersion::Exact(2), MakeEvents(1), key));
  EXPECT_FALSE(r.deduplicated);
  EXPECT_EQ(r.first_version, 3);
}

// --- Stream names in reads ---------------------------------------------------

TEST_F(BadInputTest, ReadsOfNamesThatCannotExistAreNotFoundNotACrash) {
  // Appends refuse such names (InvalidArgument); a read asks whether the
  // stream exists, and a name that can never be a stream's does not:
  // NotFound, or exists = false from GetStreamInfo. Nothing reaches LMDB
  // with a key past its 511-byte limit.
  for (const std::string& name : InvalidNames()) {
    SCOPED_TRACE(absl::CEscape(name.substr(0, 20)) + absl::StrCat(" (", name.size(), " bytes)"));
    EXPECT_EQ(store_->ReadStream(name, 0).status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(
        store_->ScanStream(name, 0, ReadOptions(), [](const EventView&) { return true; }).code(),
        absl::StatusCode::kNotFound);
    RILL_ASSERT_OK_AND_ASSIGN(const StreamInfo info, store_->GetStreamInfo(name));
    EXPECT_FALSE(info.exists);
    EXPECT_EQ(info.last_version, -1);
    EXPECT_EQ(ReplayStream(store_.get(), name, kStreamEnd, [](const EventView&) { return true; })
                  .status()
                  .code(),
              absl::StatusCode::kNotFound);
  }
}

TEST_F(BadInputTest, ListStreamsTakesAnyPrefixAndStartAfter) {
  // A prefix or a paging cursor is not a name: any bytes, any length, are a
  // valid question whose answer may be empty.
  for (const std::string& s : InvalidNames()) {
    SCOPED_TRACE(absl::StrCat(s.size(), " bytes"));
    RILL_ASSERT_OK_AND_ASSIGN(std::vector<StreamInfo> by_prefix, store_->ListStreams(s));
    if (!s.empty()) {
      EXPECT_TRUE(by_prefix.empty());
    }
    RILL_ASSERT_OK_AND_ASSIGN(std::vector<StreamInfo> after, store_->ListStreams("", 10, s));
    for (const StreamInfo& info : after) EXPECT_GT(info.name, s);
  }
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<StreamInfo> before_all,
                            store_->ListStreams("", 10, std::string(600, 'a')));
  ASSERT_EQ(before_all.size(), 1u);
  EXPECT_EQ(before_all[0].name, "existing");
}

TEST_F(BadInputTest, NegativeFromVersionReadsFromTheStartForwardAndNothingBackward) {
  // A version before the first one is "before the start": forward reads
  // begin at version 0, backward reads have nothing before it.
  for (int64_t v : {int64_t{-1}, kMinVersion}) {
    SCOPED_TRACE(v);
    RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> forward,
                              store_->ReadStream("existing", v));
    EXPECT_EQ(forward.size(), 3u);
    ReadOptions backward;
    backward.direction = Direction::kBackward;
    RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> none,
                              store_->ReadStream("existing", v, backward));
    EXPECT_TRUE(none.empty());
  }
  EXPECT_EQ(ReplayStream(store_.get(), "existing", -1, [](const EventView&) { return true; })
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(BadInputTest, VersionsAndPositionsPastTheEndReadNothing) {
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> stream,
                            store_->ReadStream("existing", kMaxVersion - 1));
  EXPECT_TRUE(stream.empty());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> all,
                            store_->ReadAll(std::numeric_limits<uint64_t>::max() - 1));
  EXPECT_TRUE(all.empty());
  RILL_ASSERT_OK_AND_ASSIGN(ReplayResult replayed,
                            ReplayPositions(store_.get(), std::numeric_limits<uint64_t>::max(),
                                            std::numeric_limits<uint64_t>::max(), EventFilter(),
                                            [](const EventView&) { return true; }));
  EXPECT_EQ(replayed.delivered, 0u);
}

// --- Payloads and metadata are bytes -----------------------------------------

TEST_F(BadInputTest, PayloadDeclaredJsonIsNeverParsed) {
  // rill stores payloads as given: the content type is a label for readers,
  // not a promise rill checks. Not JSON, NUL bytes, invalid UTF-8: all kept.
  EventData e = MakeEvent("T", 0);
  e.content_type = ContentType::kJson;
  e.payload = std::string("{not json\0\xff\xfe", 13);
  RILL_ASSERT_OK(store_->Append("payloads", ExpectedVersion::NoStream(), {e}).status());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> got, store_->ReadStream("payloads", 0));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload, e.payload);
  EXPECT_EQ(got[0].content_type, ContentType::kJson);
}

TEST_F(BadInputTest, MetadataIsBytesNotJsonAndRoundTrips) {
  // Metadata is structured by rill (correlation id, causation id, ordered
  // headers), not a JSON document: any bytes are kept exactly, including
  // empty keys, duplicate keys, NUL and invalid UTF-8.
  EventData e = MakeEvent("T", 0);
  e.metadata.correlation_id = std::string("c\0\xff", 3);
  e.metadata.causation_id = "{\"not\": json";
  e.metadata.headers = {{"", ""}, {"dup", "1"}, {"dup", "2"}, {std::string("k\0", 2), "\xc3"}};
  RILL_ASSERT_OK(store_->Append("meta", ExpectedVersion::NoStream(), {e}).status());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> got, store_->ReadStream("meta", 0));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].metadata == e.metadata);
}

TEST_F(BadInputTest, PayloadOneByteOverTheLimitIsInvalidWhateverTheContentType) {
  for (ContentType type : {ContentType::kBinary, ContentType::kJson, ContentType::kFlatBuffers}) {
    ExpectNothingWritten([&] {
      EventData e = MakeEvent("T", 0);
      e.content_type = type;
      e.payload.assign(kMaxPayloadBytes + 1, 'p');
      EXPECT_EQ(store_->Append("big", ExpectedVersion::Any(), {e}).status().code(),
                absl::StatusCode::kInvalidArgument);
    });
  }
}

TEST_F(BadInputTest, EveryContentTypeValuePastTheEnumIsInvalid) {
  for (int v : {3, 4, 127, 128, 255}) {
    SCOPED_TRACE(v);
    ExpectNothingWritten([&] {
      EventData e = MakeEvent("T", 0);
      e.content_type = static_cast<ContentType>(v);
      absl::StatusOr<AppendResult> r = store_->Append("ct", ExpectedVersion::Any(), {e});
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(r.status().message().find(absl::StrCat(v)), absl::string_view::npos) << r.status();
    });
  }
}

// --- Event ids ---------------------------------------------------------------

TEST_F(BadInputTest, DuplicateEventIdsAreStoredAsGiven) {
  // Event ids are the application's: rill neither checks them for
  // uniqueness nor deduplicates on them (idempotency keys do that).
  EventData e = MakeEvent("T", 0);
  e.id = EventId::Random();
  RILL_ASSERT_OK(store_->Append("ids", ExpectedVersion::NoStream(), {e, e}).status());
  RILL_ASSERT_OK(store_->Append("ids", ExpectedVersion::Exact(1), {e}).status());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> got, store_->ReadStream("ids", 0));
  ASSERT_EQ(got.size(), 3u);
  for (const RecordedEvent& r : got) EXPECT_EQ(r.id, e.id);
}

// --- Idempotency keys ---------------------------------------------------------

TEST_F(BadInputTest, IdempotencyKeysAreBytesNotText) {
  // Keys need not be UTF-8 (only NUL is refused): a binary key dedups.
  AppendOptions key;
  key.idempotency_key = "\xff\xfe\x01 binary";
  RILL_ASSERT_OK_AND_ASSIGN(
      const AppendResult first,
      store_->Append("keys", ExpectedVersion::NoStream(), MakeEvents(1), key));
  RILL_ASSERT_OK_AND_ASSIGN(
      const AppendResult again,
      store_->Append("keys", ExpectedVersion::NoStream(), MakeEvents(1), key));
  EXPECT_TRUE(again.deduplicated);
  EXPECT_EQ(again.first_position, first.first_position);
}

TEST_F(BadInputTest, KeyReusedOnAnotherStreamIsAlreadyExistsAndWritesNothing) {
  AppendOptions key;
  key.idempotency_key = "order-42-create";
  RILL_ASSERT_OK(
      store_->Append("order-42", ExpectedVersion::NoStream(), MakeEvents(1), key).status());
  ExpectNothingWritten([&] {
    absl::StatusOr<AppendResult> r =
        store_->Append("order-43", ExpectedVersion::NoStream(), MakeEvents(1), key);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists) << r.status();
    absl::StatusOr<std::vector<AppendResult>> m = store_->AppendMulti(
        {StreamAppend{"order-43", ExpectedVersion::NoStream(), MakeEvents(1)}}, key);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kAlreadyExists) << m.status();
  });
}

// --- Snapshots ---------------------------------------------------------------

TEST_F(BadInputTest, SnapshotsRejectInvalidNamesAndVersions) {
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnapshotStore> snapshots,
                            SnapshotStore::Open(store_.get()));
  for (const std::string& name : InvalidNames()) {
    SCOPED_TRACE(absl::StrCat(name.size(), " bytes"));
    EXPECT_EQ(snapshots->Save(name, 0, 1, "state").code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(snapshots->LoadLatest(name, 1).status().code(), absl::StatusCode::kInvalidArgument);
  }
  for (int64_t v : {int64_t{-1}, kMinVersion, int64_t{3}, kMaxVersion}) {
    SCOPED_TRACE(v);
    EXPECT_EQ(snapshots->Save("existing", v, 1, "state").code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(snapshots->Save("existing", 0, 1, std::string(kMaxSnapshotBytes + 1, 's')).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace rill
