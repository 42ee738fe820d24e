#include "test_util.h"

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <ostream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace rill::testing {

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string tmpl = absl::StrCat(base && *base ? base : "/tmp", "/rill-test-XXXXXX");
  if (mkdtemp(tmpl.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp failed for " << tmpl;
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

EventData MakeEvent(const std::string& type, int n) {
  EventData e;
  e.type = type;
  e.payload = absl::StrCat("{\"n\":", n, "}");
  return e;
}

std::vector<EventData> MakeEvents(int count, int first_n) {
  std::vector<EventData> events;
  events.reserve(count);
  for (int i = 0; i < count; ++i) {
    events.push_back(MakeEvent(absl::StrCat("E", first_n + i), first_n + i));
  }
  return events;
}

std::string ChildBinary(const std::string& name) {
  if (!name.empty() && name[0] == '/') return name;  // any program, by its path
  return absl::StrCat(RILL_TEST_BIN_DIR, "/", name);
}

}  // namespace rill::testing

// --- Contract-test helpers (expected version, append, idempotency, read) ---
namespace rill::testing {

std::string DescribeEvent(const RecordedEvent& e) {
  std::string headers;
  for (const auto& [key, value] : e.metadata.headers) {
    absl::StrAppend(&headers, key, "=", value, ";");
  }
  return absl::StrCat(
      "pos=", e.position, " stream=", e.stream, " v=", e.version, " id=", e.id.ToString(),
      " type=", e.type, " ct=", ContentTypeName(e.content_type), " sv=", e.schema_version,
      " payload=", e.payload.size(), "B#", std::hash<std::string>()(e.payload),
      " corr=", e.metadata.correlation_id, " cause=", e.metadata.causation_id, " headers=", headers,
      " at=", absl::FormatTime(absl::RFC3339_full, e.recorded_at, absl::UTCTimeZone()));
}

::testing::AssertionResult SameEvent(const RecordedEvent& a, const RecordedEvent& b) {
  // DescribeEvent hashes the payload; compare it in full as well.
  if (DescribeEvent(a) == DescribeEvent(b) && a.payload == b.payload) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "\n  " << DescribeEvent(a) << "\nvs\n  " << DescribeEvent(b);
}

void PrintTo(const LogSnapshot& snapshot, std::ostream* os) {
  *os << "{head=" << snapshot.head << "\n";
  for (const std::string& line : snapshot.events) *os << "  " << line << "\n";
  for (const std::string& line : snapshot.streams) *os << "  " << line << "\n";
  *os << "}";
}

absl::StatusOr<LogSnapshot> TakeSnapshot(Store& store) {
  LogSnapshot snapshot;
  absl::StatusOr<uint64_t> head = store.HeadPosition();
  if (!head.ok()) return head.status();
  snapshot.head = *head;
  absl::StatusOr<std::vector<RecordedEvent>> events = store.ReadAll(0);
  if (!events.ok()) return events.status();
  for (const RecordedEvent& e : *events) {
    snapshot.events.push_back(DescribeEvent(e));
  }
  absl::StatusOr<std::vector<StreamInfo>> streams = store.ListStreams("");
  if (!streams.ok()) return streams.status();
  for (const StreamInfo& s : *streams) {
    snapshot.streams.push_back(absl::StrCat(
        s.name, " exists=", s.exists, " last_version=", s.last_version, " count=", s.event_count,
        " first=", s.first_position, " last=", s.last_position,
        " at=", absl::FormatTime(absl::RFC3339_full, s.last_recorded_at, absl::UTCTimeZone())));
  }
  return snapshot;
}

std::vector<uint64_t> Positions(const std::vector<RecordedEvent>& events) {
  std::vector<uint64_t> out;
  for (const RecordedEvent& e : events) out.push_back(e.position);
  return out;
}

std::vector<int64_t> Versions(const std::vector<RecordedEvent>& events) {
  std::vector<int64_t> out;
  for (const RecordedEvent& e : events) out.push_back(e.version);
  return out;
}

void ExpectEveryCommitHoldsEveryLooper(const std::vector<RecordedEvent>& all, int threads,
                                       const std::string& prefix, int tolerated) {
  // Commit time -> the streams (one per thread) of its events.
  std::map<int64_t, std::multiset<std::string>> commits;
  std::map<std::string, std::pair<int64_t, int64_t>> span;  // stream -> first, last commit
  for (const RecordedEvent& e : all) {
    const int64_t at = absl::ToUnixMicros(e.recorded_at);
    commits[at].insert(e.stream);
    auto [it, fresh] = span.try_emplace(e.stream, at, at);
    it->second.second = at;
  }
  std::multiset<std::string> expected;
  for (int t = 0; t < threads; ++t) expected.insert(absl::StrCat(prefix, t));
  int64_t from = 0, to = INT64_MAX;
  for (const auto& [stream, first_last] : span) {
    from = std::max(from, first_last.first);
    to = std::min(to, first_last.second);
  }
  int mid_run = 0;
  std::vector<std::string> short_commits;
  for (auto it = commits.lower_bound(from); it != commits.end() && it->first <= to; ++it) {
    ++mid_run;
    if (it->second != expected) {
      short_commits.push_back(
          absl::StrCat("commit at ", it->first, " us holds ", it->second.size(), " appends"));
    }
  }
  EXPECT_GT(mid_run, 0) << "the threads never appended at the same time";
  EXPECT_LE(short_commits.size(), static_cast<size_t>(tolerated))
      << "of " << mid_run << " commits while all appended: " << absl::StrJoin(short_commits, "; ");
}

}  // namespace rill::testing
