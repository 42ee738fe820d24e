// Append: versions and positions, the AppendResult, the round trip of every
// envelope field, input validation against limits.h, and read-only stores.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rill/event.h"
#include "rill/limits.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::LogSnapshot;
using ::rill::testing::MakeEvent;
using ::rill::testing::MakeEvents;
using ::rill::testing::Positions;
using ::rill::testing::SameEvent;
using ::rill::testing::TakeSnapshot;
using ::rill::testing::TempDir;
using ::rill::testing::Versions;
using ::testing::ElementsAre;

class AppendTest : public ::testing::Test {
 protected:
  void SetUp() override { RILL_ASSERT_OK_AND_ASSIGN(store_, Store::Open(dir_.path())); }

  // Asserts that appending `events` to `stream` fails with InvalidArgument and
  // leaves the log exactly as it was.
  void ExpectInvalid(absl::string_view stream, std::vector<EventData> events) {
    RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot before, TakeSnapshot(*store_));
    absl::StatusOr<AppendResult> r = store_->Append(stream, ExpectedVersion::Any(), events);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    RILL_ASSERT_OK_AND_ASSIGN(LogSnapshot after, TakeSnapshot(*store_));
    EXPECT_EQ(before, after);
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

// A fully specified event exercising every envelope field.
EventData RichEvent() {
  EventData e;
  e.type = "OrderCreated";
  e.payload = std::string("\x00\x01{\"a\":1}\x00\xff\xfe", 11);
  e.content_type = ContentType::kBinary;
  e.schema_version = 7;
  e.id = EventId({0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x80, 0x01, 0x02, 0x03, 0x04,
                  0x05, 0x06, 0x07});
  e.metadata.correlation_id = "corr-1";
  e.metadata.causation_id = "cause-9";
  // Deliberately not in key order: the order given must be kept.
  e.metadata.headers = {{"zeta", "last"}, {"alpha", "first"}, {"mid", ""}};
  return e;
}

void ExpectMatches(const RecordedEvent& got, const EventData& want) {
  EXPECT_EQ(got.type, want.type);
  EXPECT_EQ(got.payload, want.payload);
  EXPECT_EQ(got.content_type, want.content_type);
  EXPECT_EQ(got.schema_version, want.schema_version);
  if (!want.id.IsNil()) {
    EXPECT_EQ(got.id, want.id);
  }
  EXPECT_EQ(got.metadata.correlation_id, want.metadata.correlation_id);
  EXPECT_EQ(got.metadata.causation_id, want.metadata.causation_id);
  EXPECT_EQ(got.metadata.headers, want.metadata.headers);
}

TEST_F(AppendTest, VersionsStartAtZeroAndAreContiguous) {
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), MakeEvents(3)).status());
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), MakeEvents(2, 3)).status());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> events, store_->ReadStream("s", 0));
  EXPECT_THAT(Versions(events), ElementsAre(0, 1, 2, 3, 4));
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].type, absl::StrCat("E", i));
    EXPECT_EQ(events[i].stream, "s");
  }
}

TEST_F(AppendTest, PositionsStartAtOneAndAreGaplessAcrossStreams) {
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t empty_head, store_->HeadPosition());
  EXPECT_EQ(empty_head, 0u);
  const std::vector<std::pair<std::string, int>> plan = {
      {"a", 2}, {"b", 1}, {"a", 3}, {"c", 1}, {"b", 2}};
  uint64_t next = 1;
  for (const auto& [stream, count] : plan) {
    RILL_ASSERT_OK_AND_ASSIGN(AppendResult r,
                              store_->Append(stream, ExpectedVersion::Any(), MakeEvents(count)));
    EXPECT_EQ(r.first_position, next);
    next += count;
    EXPECT_EQ(r.last_position, next - 1);
  }
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> all, store_->ReadAll(1));
  ASSERT_EQ(all.size(), 9u);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].position, i + 1);
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store_->HeadPosition());
  EXPECT_EQ(head, 9u);
  // Each stream's versions are contiguous while its positions interleave.
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> a, store_->ReadStream("a", 0));
  EXPECT_THAT(Versions(a), ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(Positions(a), ElementsAre(1, 2, 4, 5, 6));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> b, store_->ReadStream("b", 0));
  EXPECT_THAT(Positions(b), ElementsAre(3, 8, 9));
}

TEST_F(AppendTest, AppendResultDescribesWhatWasWritten) {
  RILL_ASSERT_OK(store_->Append("other", ExpectedVersion::Any(), MakeEvents(2)).status());
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), MakeEvents(1)).status());
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult r,
                            store_->Append("s", ExpectedVersion::Exact(0), MakeEvents(4)));
  EXPECT_EQ(r.stream, "s");
  EXPECT_EQ(r.first_version, 1);
  EXPECT_EQ(r.last_version, 4);
  EXPECT_EQ(r.first_position, 4u);
  EXPECT_EQ(r.last_position, 7u);
  EXPECT_FALSE(r.deduplicated);

  RILL_ASSERT_OK_AND_ASSIGN(AppendResult single,
                            store_->Append("s", ExpectedVersion::Any(), MakeEvents(1)));
  EXPECT_EQ(single.first_version, 5);
  EXPECT_EQ(single.last_version, 5);
  EXPECT_EQ(single.first_position, 8u);
  EXPECT_EQ(single.last_position, 8u);
  EXPECT_FALSE(single.deduplicated);
}

TEST_F(AppendTest, EveryEnvelopeFieldRoundTrips) {
  const EventData rich = RichEvent();
  const absl::Time before = absl::Now();
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult r,
                            store_->Append("order-1", ExpectedVersion::NoStream(), {rich}));
  const absl::Time after = absl::Now();

  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> by_stream, store_->ReadStream("order-1", 0));
  ASSERT_EQ(by_stream.size(), 1u);
  const RecordedEvent& got = by_stream[0];
  ExpectMatches(got, rich);
  EXPECT_EQ(got.id, rich.id);
  EXPECT_EQ(got.payload.size(), 11u);
  EXPECT_EQ(got.stream, "order-1");
  EXPECT_EQ(got.version, 0);
  EXPECT_EQ(got.position, r.first_position);
  // The store keeps microseconds; allow for the truncation.
  EXPECT_GE(got.recorded_at, before - absl::Milliseconds(1));
  EXPECT_LE(got.recorded_at, after + absl::Milliseconds(1));

  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> by_log, store_->ReadAll(0));
  ASSERT_EQ(by_log.size(), 1u);
  EXPECT_TRUE(SameEvent(by_log[0], got));

  // The zero-copy view sees the same event.
  int seen = 0;
  RILL_ASSERT_OK(store_->ScanAll(0, ReadOptions(), [&](const EventView& v) {
    ++seen;
    EXPECT_TRUE(SameEvent(v.ToOwned(), got));
    EXPECT_EQ(v.stream(), "order-1");
    EXPECT_EQ(v.version(), 0);
    EXPECT_EQ(v.position(), got.position);
    EXPECT_EQ(v.id(), rich.id);
    EXPECT_EQ(v.type(), rich.type);
    EXPECT_EQ(v.content_type(), rich.content_type);
    EXPECT_EQ(v.schema_version(), rich.schema_version);
    EXPECT_EQ(v.payload(), rich.payload);
    EXPECT_EQ(v.recorded_at(), got.recorded_at);
    EXPECT_EQ(v.correlation_id(), rich.metadata.correlation_id);
    EXPECT_EQ(v.causation_id(), rich.metadata.causation_id);
    EXPECT_EQ(v.headers(), rich.metadata.headers);
    return true;
  }));
  EXPECT_EQ(seen, 1);
}

TEST_F(AppendTest, EachContentTypeAndSchemaVersionRoundTrips) {
  std::vector<EventData> events;
  for (ContentType ct : {ContentType::kJson, ContentType::kBinary, ContentType::kFlatBuffers}) {
    for (uint32_t sv : {0u, 1u, 2u, 0xffffffffu}) {
      EventData e = MakeEvent("T", static_cast<int>(sv));
      e.content_type = ct;
      e.schema_version = sv;
      events.push_back(e);
    }
  }
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), events).status());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> got, store_->ReadStream("s", 0));
  ASSERT_EQ(got.size(), events.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(i);
    ExpectMatches(got[i], events[i]);
  }
}

TEST_F(AppendTest, DefaultsAndEmptyFieldsRoundTrip) {
  EventData e;
  e.type = "Empty";  // payload, metadata left empty; json, schema 1 default
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), {e}).status());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> got, store_->ReadStream("s", 0));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload, "");
  EXPECT_EQ(got[0].content_type, ContentType::kJson);
  EXPECT_EQ(got[0].schema_version, 1u);
  EXPECT_TRUE(got[0].metadata.empty());
}

TEST_F(AppendTest, GeneratedIdsAreNonNilAndUnique) {
  const int kEvents = 200;
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), MakeEvents(kEvents / 2)).status());
  RILL_ASSERT_OK(store_->Append("t", ExpectedVersion::Any(), MakeEvents(kEvents / 2)).status());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> all, store_->ReadAll(0));
  ASSERT_EQ(all.size(), static_cast<size_t>(kEvents));
  absl::flat_hash_set<std::string> ids;
  for (const RecordedEvent& e : all) {
    EXPECT_FALSE(e.id.IsNil()) << e.position;
    ids.insert(e.id.ToString());
  }
  EXPECT_EQ(ids.size(), all.size());
  // A generated id is stable: reading again gives the same ids.
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> again, store_->ReadAll(0));
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(again[i].id, all[i].id);
}

TEST_F(AppendTest, GivenAndGeneratedIdsMixInOneRequest) {
  std::vector<EventData> events = MakeEvents(3);
  events[1].id = EventId::Random();
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), events).status());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> got, store_->ReadStream("s", 0));
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[1].id, events[1].id);
  EXPECT_FALSE(got[0].id.IsNil());
  EXPECT_FALSE(got[2].id.IsNil());
  EXPECT_NE(got[0].id, got[2].id);
}

TEST_F(AppendTest, ValidUtf8StreamNamesAndTypesAreAccepted) {
  const std::string name = "заказ-注文-\xF0\x9F\x98\x80";  // incl. a 4-byte char
  EventData e = MakeEvent("Größe\xE2\x82\xAC", 1);
  RILL_ASSERT_OK(store_->Append(name, ExpectedVersion::Any(), {e}).status());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> got, store_->ReadStream(name, 0));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].stream, name);
  EXPECT_EQ(got[0].type, e.type);
}

TEST_F(AppendTest, ZeroEventsIsInvalid) { ExpectInvalid("s", {}); }

TEST_F(AppendTest, EmptyStreamNameIsInvalid) { ExpectInvalid("", MakeEvents(1)); }

TEST_F(AppendTest, StreamNameLengthLimit) {
  ExpectInvalid(std::string(kMaxStreamNameBytes + 1, 'n'), MakeEvents(1));
  const std::string longest(kMaxStreamNameBytes, 'n');
  RILL_ASSERT_OK(store_->Append(longest, ExpectedVersion::Any(), MakeEvents(1)).status());
  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo info, store_->GetStreamInfo(longest));
  EXPECT_TRUE(info.exists);
}

TEST_F(AppendTest, StreamNameWithNulIsInvalid) {
  ExpectInvalid(std::string("ab\0c", 4), MakeEvents(1));
  ExpectInvalid(std::string("\0", 1), MakeEvents(1));
}

TEST_F(AppendTest, StreamNameWithInvalidUtf8IsInvalid) {
  for (const char* bad : {"\xff", "order-\xc3", "\xc0\xaf", "\x80",
                          "\xed\xa0\x80",         // UTF-16 surrogate
                          "\xf4\x90\x80\x80"}) {  // above U+10FFFF
    SCOPED_TRACE(absl::CEscape(bad));
    ExpectInvalid(bad, MakeEvents(1));
  }
}

TEST_F(AppendTest, EmptyTypeIsInvalid) { ExpectInvalid("s", {MakeEvent("", 1)}); }

TEST_F(AppendTest, TypeLimits) {
  ExpectInvalid("s", {MakeEvent(std::string(kMaxTypeBytes + 1, 't'), 1)});
  ExpectInvalid("s", {MakeEvent(std::string("Ty\0pe", 5), 1)});
  ExpectInvalid("s", {MakeEvent("Type\xff", 1)});
  EventData longest = MakeEvent(std::string(kMaxTypeBytes, 't'), 1);
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), {longest}).status());
}

TEST_F(AppendTest, PayloadOverTheLimitIsInvalid) {
  EventData big = MakeEvent("Big", 0);
  big.payload.assign(kMaxPayloadBytes + 1, 'p');
  ExpectInvalid("s", {big});
}

TEST_F(AppendTest, PayloadExactlyAtTheLimitSucceeds) {
  EventData big = MakeEvent("Big", 0);
  big.content_type = ContentType::kBinary;
  big.payload.assign(kMaxPayloadBytes, 'p');
  big.payload.front() = '\0';
  big.payload[kMaxPayloadBytes / 2] = '\x01';
  big.payload.back() = '\xff';
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), {big}).status());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> got, store_->ReadStream("s", 0));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload.size(), kMaxPayloadBytes);
  EXPECT_TRUE(got[0].payload == big.payload);  // no 16 MiB diff on failure
}

TEST_F(AppendTest, MetadataOverTheLimitIsInvalid) {
  EventData e = MakeEvent("T", 0);
  e.metadata.headers = {{"h", std::string(kMaxMetadataBytes + 1, 'v')}};
  ExpectInvalid("s", {e});
  EventData corr = MakeEvent("T", 0);
  corr.metadata.correlation_id.assign(kMaxMetadataBytes + 1, 'c');
  ExpectInvalid("s", {corr});
}

TEST_F(AppendTest, MetadataExactlyAtTheLimitSucceeds) {
  // The limit covers correlation id, causation id and headers together.
  EventData e = MakeEvent("T", 0);
  e.metadata.correlation_id = "c";
  e.metadata.causation_id = "d";
  e.metadata.headers = {{"k", std::string(kMaxMetadataBytes - 3, 'v')}};
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), {e}).status());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> got, store_->ReadStream("s", 0));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].metadata == e.metadata);

  e.metadata.causation_id = "dd";  // one byte over, spread over the fields
  ExpectInvalid("s", {e});
}

TEST_F(AppendTest, UnknownContentTypeIsInvalid) {
  EventData e = MakeEvent("T", 0);
  e.content_type = static_cast<ContentType>(7);
  ExpectInvalid("s", {e});
}

TEST_F(AppendTest, TooManyEventsIsInvalid) {
  ExpectInvalid("s", MakeEvents(kMaxEventsPerAppend + 1));
}

TEST_F(AppendTest, ExactlyMaxEventsSucceeds) {
  std::vector<EventData> events(kMaxEventsPerAppend, MakeEvent("T", 0));
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult r, store_->Append("s", ExpectedVersion::Any(), events));
  EXPECT_EQ(r.last_version, static_cast<int64_t>(kMaxEventsPerAppend) - 1);
  EXPECT_EQ(r.last_position, kMaxEventsPerAppend);
}

TEST_F(AppendTest, RequestOverTheTotalByteLimitIsInvalid) {
  // Each payload is within kMaxPayloadBytes; together they exceed
  // kMaxAppendBytes.
  EventData big = MakeEvent("Big", 0);
  big.payload.assign(kMaxPayloadBytes, 'p');
  const size_t count = kMaxAppendBytes / kMaxPayloadBytes + 1;
  ExpectInvalid("s", std::vector<EventData>(count, big));
}

TEST_F(AppendTest, RequestExactlyAtTheTotalByteLimitSucceeds) {
  // limits.h: kMaxAppendBytes bounds "payload plus metadata bytes of one
  // append request"; exactly that much is allowed.
  EventData big = MakeEvent("Big", 0);
  big.content_type = ContentType::kBinary;
  big.payload.assign(kMaxPayloadBytes, 'p');
  const size_t count = kMaxAppendBytes / kMaxPayloadBytes;
  ASSERT_EQ(count * kMaxPayloadBytes, kMaxAppendBytes);
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult r, store_->Append("s", ExpectedVersion::Any(),
                                                           std::vector<EventData>(count, big)));
  EXPECT_EQ(r.last_position, count);
}

TEST_F(AppendTest, OneBadEventRejectsTheWholeRequest) {
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), MakeEvents(1)).status());
  std::vector<EventData> events = MakeEvents(3);
  events[2].type = "";
  ExpectInvalid("s", events);
  events = MakeEvents(3);
  events[1].payload.assign(kMaxPayloadBytes + 1, 'x');
  ExpectInvalid("s", events);
}

TEST(AppendReadOnlyTest, ReadOnlyStoreRejectsAppendsButServesReads) {
  TempDir dir;
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path()));
    RILL_ASSERT_OK(store->Append("s", ExpectedVersion::Any(), MakeEvents(3)).status());
  }
  StoreOptions options;
  options.read_only = true;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path(), options));

  EXPECT_EQ(store->Append("s", ExpectedVersion::Any(), MakeEvents(1)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->Append("new", ExpectedVersion::NoStream(), MakeEvents(1)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  AppendOptions keyed;
  keyed.idempotency_key = "k";
  EXPECT_EQ(store->Append("s", ExpectedVersion::Any(), MakeEvents(1), keyed).status().code(),
            absl::StatusCode::kFailedPrecondition);
  std::vector<StreamAppend> multi = {{"a", ExpectedVersion::Any(), MakeEvents(1)}};
  EXPECT_EQ(store->AppendMulti(multi).status().code(), absl::StatusCode::kFailedPrecondition);

  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> events, store->ReadStream("s", 0));
  EXPECT_THAT(Versions(events), ElementsAre(0, 1, 2));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> all, store->ReadAll(0));
  EXPECT_EQ(all.size(), 3u);
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store->HeadPosition());
  EXPECT_EQ(head, 3u);
  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo info, store->GetStreamInfo("s"));
  EXPECT_EQ(info.last_version, 2);
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats stats, store->Stats());
  EXPECT_TRUE(stats.read_only);
  EXPECT_EQ(stats.event_count, 3u);
}

}  // namespace
}  // namespace rill
