// Replay (rill/replay.h): position ranges, time ranges, one stream up to a
// version; filters, stopping early, events appended during a replay, and a
// corrupt record ending a replay with DataLoss. Every expected result is
// computed from ReadAll / ReadStream of the same store.
#include "rill/replay.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::MakeEvent;
using ::rill::testing::MakeEvents;
using ::rill::testing::TempDir;

// Replays into a vector of positions.
struct Collected {
  std::vector<uint64_t> positions;
  ReplayResult result;
};

bool Matches(const EventFilter& f, const RecordedEvent& e) {
  if (!f.stream_prefix.empty() &&
      e.stream.compare(0, f.stream_prefix.size(), f.stream_prefix) != 0) {
    return false;
  }
  if (f.types.empty()) return true;
  for (const std::string& t : f.types) {
    if (t == e.type) return true;
  }
  return false;
}

class ReplayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.durability = Durability::kNoSyncUnsafe;
    RILL_ASSERT_OK_AND_ASSIGN(store_, Store::Open(dir_.Sub("store"), options));
  }

  // 30 events: streams "order-1", "order-2", "cart-1" in turns of 2, types
  // "A" and "B" alternating.
  void AppendThirty() {
    const char* streams[] = {"order-1", "order-2", "cart-1"};
    for (int i = 0; i < 15; ++i) {
      std::vector<EventData> events = {MakeEvent("A", 2 * i), MakeEvent("B", 2 * i + 1)};
      RILL_ASSERT_OK(store_->Append(streams[i % 3], ExpectedVersion::Any(), events).status());
    }
  }

  std::vector<RecordedEvent> All() {
    absl::StatusOr<std::vector<RecordedEvent>> all = store_->ReadAll(0);
    EXPECT_TRUE(all.ok()) << all.status();
    return all.ok() ? *all : std::vector<RecordedEvent>{};
  }

  // Positions in [from, to] of ReadAll that match `filter`.
  std::vector<uint64_t> Expected(uint64_t from, uint64_t to, const EventFilter& filter) {
    std::vector<uint64_t> out;
    for (const RecordedEvent& e : All()) {
      if (e.position >= from && e.position <= to && Matches(filter, e)) {
        out.push_back(e.position);
      }
    }
    return out;
  }

  absl::StatusOr<Collected> Positions(uint64_t from, uint64_t to,
                                      const EventFilter& filter = EventFilter()) {
    Collected c;
    absl::StatusOr<ReplayResult> r =
        ReplayPositions(store_.get(), from, to, filter, [&c](const EventView& e) {
          c.positions.push_back(e.position());
          return true;
        });
    if (!r.ok()) return r.status();
    c.result = *r;
    return c;
  }

  absl::StatusOr<Collected> Times(absl::Time from, absl::Time to,
                                  const EventFilter& filter = EventFilter()) {
    Collected c;
    absl::StatusOr<ReplayResult> r =
        ReplayTimeRange(store_.get(), from, to, filter, [&c](const EventView& e) {
          c.positions.push_back(e.position());
          return true;
        });
    if (!r.ok()) return r.status();
    c.result = *r;
    return c;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(ReplayTest, PositionRanges) {
  AppendThirty();
  struct Case {
    uint64_t from, to;
  };
  for (Case c : {Case{1, 30}, Case{0, 5}, Case{0, 0}, Case{7, 7}, Case{25, 1000}, Case{10, 9},
                 Case{31, 40}, Case{5, kLogEnd}, Case{0, kLogEnd}}) {
    SCOPED_TRACE(absl::StrCat("[", c.from, ", ", c.to, "]"));
    RILL_ASSERT_OK_AND_ASSIGN(Collected got, Positions(c.from, c.to));
    const std::vector<uint64_t> want = Expected(c.from, c.to, EventFilter());
    EXPECT_EQ(got.positions, want);
    EXPECT_EQ(got.result.delivered, want.size());
    EXPECT_EQ(got.result.last_position, want.empty() ? 0 : want.back());
    EXPECT_FALSE(got.result.stopped);
  }
}

TEST_F(ReplayTest, EmptyLog) {
  RILL_ASSERT_OK_AND_ASSIGN(Collected got, Positions(0, kLogEnd));
  EXPECT_TRUE(got.positions.empty());
  RILL_ASSERT_OK_AND_ASSIGN(got, Times(absl::InfinitePast(), absl::InfiniteFuture()));
  EXPECT_TRUE(got.positions.empty());
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t first, FirstPositionAtOrAfter(store_.get(), absl::Now()));
  EXPECT_EQ(first, 1u);
}

TEST_F(ReplayTest, FiltersApplyInsideTheRange) {
  AppendThirty();
  EventFilter by_type;
  by_type.types = {"B"};
  EventFilter by_prefix;
  by_prefix.stream_prefix = "order-";
  EventFilter both;
  both.types = {"A"};
  both.stream_prefix = "cart";
  EventFilter nothing;
  nothing.types = {"NoSuchType"};
  for (const EventFilter& f : {by_type, by_prefix, both, nothing}) {
    for (auto [from, to] : {std::pair<uint64_t, uint64_t>{1, 30}, {4, 17}, {6, 6}, {29, 99}}) {
      SCOPED_TRACE(absl::StrCat("[", from, ", ", to, "] prefix=", f.stream_prefix));
      RILL_ASSERT_OK_AND_ASSIGN(Collected got, Positions(from, to, f));
      EXPECT_EQ(got.positions, Expected(from, to, f));
    }
  }
}

TEST_F(ReplayTest, TheHandlerStopsTheReplay) {
  AppendThirty();
  std::vector<uint64_t> seen;
  RILL_ASSERT_OK_AND_ASSIGN(
      ReplayResult r, ReplayPositions(store_.get(), 5, 20, EventFilter(), [&](const EventView& e) {
        seen.push_back(e.position());
        return seen.size() < 3;
      }));
  EXPECT_EQ(seen, (std::vector<uint64_t>{5, 6, 7}));
  EXPECT_EQ(r.delivered, 3u);
  EXPECT_EQ(r.last_position, 7u);
  EXPECT_TRUE(r.stopped);

  seen.clear();
  RILL_ASSERT_OK_AND_ASSIGN(
      r, ReplayStream(store_.get(), "order-1", kStreamEnd, [&](const EventView& e) {
        seen.push_back(e.version());
        return false;
      }));
  EXPECT_EQ(seen, (std::vector<uint64_t>{0}));
  EXPECT_TRUE(r.stopped);
}

// Replays hold no transaction while the handler runs, so it may append.
// Events committed during a replay may or may not be delivered (a scan reads
// the log chunk by chunk and ends at the head it finds), but what is
// delivered is always a gapless run of the range, each event once.
TEST_F(ReplayTest, TheHandlerMayAppendDuringAReplay) {
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), MakeEvents(5)).status());
  std::vector<uint64_t> seen;
  RILL_ASSERT_OK_AND_ASSIGN(
      ReplayResult r, ReplayPositions(store_.get(), 1, 8, EventFilter(), [&](const EventView& e) {
        seen.push_back(e.position());
        if (e.position() == 2) {
          EXPECT_TRUE(store_->Append("s", ExpectedVersion::Any(), MakeEvents(5, 5)).ok());
        }
        return true;
      }));
  ASSERT_GE(seen.size(), 5u);
  ASSERT_LE(seen.size(), 8u);
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], i + 1);
  EXPECT_EQ(r.last_position, seen.back());
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store_->HeadPosition());
  EXPECT_EQ(head, 10u);
  // A replay that starts after the append sees all of its range.
  RILL_ASSERT_OK_AND_ASSIGN(Collected again, Positions(1, 8));
  EXPECT_EQ(again.positions, (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST_F(ReplayTest, TimeRangesMatchRecordedTimesExactly) {
  // Five groups of appends a few ms apart, so recorded times differ between
  // groups (the events of one append share a time).
  for (int group = 0; group < 5; ++group) {
    for (int i = 0; i < 3; ++i) {
      RILL_ASSERT_OK(store_
                         ->Append(absl::StrCat(group % 2 ? "odd-" : "even-", i),
                                  ExpectedVersion::Any(), MakeEvents(2, 10 * group + i))
                         .status());
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  const std::vector<RecordedEvent> all = All();
  ASSERT_EQ(all.size(), 30u);
  // Recorded times never decrease along the log.
  for (size_t i = 1; i < all.size(); ++i) {
    ASSERT_LE(all[i - 1].recorded_at, all[i].recorded_at);
  }

  // Boundaries: every recorded time, one microsecond either side, and the
  // infinities.
  std::vector<absl::Time> bounds = {absl::InfinitePast(), absl::InfiniteFuture()};
  for (const RecordedEvent& e : all) {
    bounds.push_back(e.recorded_at);
    bounds.push_back(e.recorded_at - absl::Microseconds(1));
    bounds.push_back(e.recorded_at + absl::Microseconds(1));
  }
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());

  EventFilter odd;
  odd.stream_prefix = "odd-";
  int checked = 0;
  for (const EventFilter& f : {EventFilter(), odd}) {
    for (size_t i = 0; i < bounds.size(); i += 3) {
      for (size_t j = i; j < bounds.size(); j += 2) {
        const absl::Time from = bounds[i], to = bounds[j];
        std::vector<uint64_t> want;
        for (const RecordedEvent& e : all) {
          if (e.recorded_at >= from && e.recorded_at < to && Matches(f, e)) {
            want.push_back(e.position);
          }
        }
        RILL_ASSERT_OK_AND_ASSIGN(Collected got, Times(from, to, f));
        ASSERT_EQ(got.positions, want) << "from " << from << " to " << to;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 100);

  // The first position of each distinct time, and past the end.
  for (const RecordedEvent& e : all) {
    RILL_ASSERT_OK_AND_ASSIGN(uint64_t first, FirstPositionAtOrAfter(store_.get(), e.recorded_at));
    uint64_t want = 0;
    for (const RecordedEvent& x : all) {
      if (x.recorded_at >= e.recorded_at) {
        want = x.position;
        break;
      }
    }
    EXPECT_EQ(first, want);
  }
  RILL_ASSERT_OK_AND_ASSIGN(
      uint64_t past,
      FirstPositionAtOrAfter(store_.get(), all.back().recorded_at + absl::Microseconds(1)));
  EXPECT_EQ(past, 31u);
  // An empty or inverted time range replays nothing.
  RILL_ASSERT_OK_AND_ASSIGN(Collected none, Times(all[5].recorded_at, all[5].recorded_at));
  EXPECT_TRUE(none.positions.empty());
  RILL_ASSERT_OK_AND_ASSIGN(none, Times(all.back().recorded_at, all[0].recorded_at));
  EXPECT_TRUE(none.positions.empty());
}

TEST_F(ReplayTest, StreamUpToAVersion) {
  AppendThirty();
  auto versions = [&](const std::string& stream, int64_t to) -> std::vector<int64_t> {
    std::vector<int64_t> out;
    absl::StatusOr<ReplayResult> r =
        ReplayStream(store_.get(), stream, to, [&](const EventView& e) {
          EXPECT_EQ(e.stream(), stream);
          out.push_back(e.version());
          return true;
        });
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) {
      EXPECT_EQ(r->delivered, out.size());
    }
    return out;
  };
  EXPECT_EQ(versions("order-2", 0), (std::vector<int64_t>{0}));
  EXPECT_EQ(versions("order-2", 4), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  const std::vector<int64_t> all_ten = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(versions("order-2", 9), all_ten);
  EXPECT_EQ(versions("order-2", 500), all_ten);
  EXPECT_EQ(versions("order-2", kStreamEnd), all_ten);

  // The positions are the stream's own, in version order.
  std::vector<uint64_t> positions;
  RILL_ASSERT_OK(ReplayStream(store_.get(), "cart-1", 3, [&](const EventView& e) {
                   positions.push_back(e.position());
                   return true;
                 }).status());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> cart, store_->ReadStream("cart-1", 0));
  ASSERT_GE(cart.size(), 4u);
  EXPECT_EQ(positions, (std::vector<uint64_t>{cart[0].position, cart[1].position, cart[2].position,
                                              cart[3].position}));

  auto noop = [](const EventView&) { return true; };
  EXPECT_EQ(ReplayStream(store_.get(), "missing", kStreamEnd, noop).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ReplayStream(store_.get(), "order-2", -1, noop).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A damaged event ends a replay with DataLoss after the events before it.
TEST_F(ReplayTest, ACorruptEventIsDataLoss) {
  constexpr char kMarker[] = "REPLAY-CORRUPTION-MARKER-41c7";
  for (int i = 0; i < 10; ++i) {
    EventData e = MakeEvent("E", i);
    if (i == 6) e.payload = absl::StrCat("{\"m\":\"", kMarker, "\"}");
    RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Any(), {e}).status());
  }
  store_.reset();
  const std::string file = dir_.Sub("store") + "/log/data.mdb";
  std::string data;
  {
    std::ifstream in(file, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    data = ss.str();
  }
  const int fd = open(file.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  int copies = 0;
  for (size_t at = data.find(kMarker); at != std::string::npos; at = data.find(kMarker, at + 1)) {
    const char flipped = static_cast<char>(data[at + 5] ^ 0x02);
    ASSERT_EQ(pwrite(fd, &flipped, 1, static_cast<off_t>(at + 5)), 1);
    ++copies;
  }
  close(fd);
  ASSERT_GE(copies, 1);
  RILL_ASSERT_OK_AND_ASSIGN(store_, Store::Open(dir_.Sub("store")));

  std::vector<uint64_t> seen;
  auto collect = [&](const EventView& e) {
    seen.push_back(e.position());
    return true;
  };
  absl::StatusOr<ReplayResult> r = ReplayPositions(store_.get(), 1, 10, EventFilter(), collect);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(seen, (std::vector<uint64_t>{1, 2, 3, 4, 5, 6}));
  seen.clear();
  EXPECT_EQ(ReplayStream(store_.get(), "s", kStreamEnd, collect).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(seen.size(), 6u);
  // Ranges that do not reach it are fine.
  RILL_ASSERT_OK_AND_ASSIGN(Collected before, Positions(1, 6));
  EXPECT_EQ(before.positions.size(), 6u);
  RILL_ASSERT_OK_AND_ASSIGN(Collected after, Positions(8, 10));
  EXPECT_EQ(after.positions, (std::vector<uint64_t>{8, 9, 10}));
  seen.clear();
  RILL_ASSERT_OK_AND_ASSIGN(ReplayResult upto5, ReplayStream(store_.get(), "s", 5, collect));
  EXPECT_EQ(upto5.delivered, 6u);
}

}  // namespace
}  // namespace rill
