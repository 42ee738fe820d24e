#include "test_util.h"

#include <stdlib.h>

#include <filesystem>
#include <functional>
#include <ostream>

#include "absl/strings/str_cat.h"

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

}  // namespace rill::testing
