// The events seglog_child writes: a pure function of (stream, version), so
// that the test can check every stored event, acknowledged or not.
#ifndef RILL_TESTS_SEGLOG_SEGLOG_EVENTS_H_
#define RILL_TESTS_SEGLOG_SEGLOG_EVENTS_H_

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "rill/event.h"

namespace rill::seglog_test {

inline std::string Payload(absl::string_view stream, int64_t version) {
  const size_t pad = static_cast<size_t>((version * 37 + stream.size() * 11) % 300);
  return absl::StrCat("{\"s\":\"", stream, "\",\"v\":", version, ",\"pad\":\"",
                      std::string(pad, 'x'), "\"}");
}

inline std::vector<EventData> Events(absl::string_view stream, int64_t first, int n) {
  std::vector<EventData> events(n);
  for (int i = 0; i < n; ++i) {
    events[i].type = absl::StrCat("E", (first + i) % 3);
    events[i].payload = Payload(stream, first + i);
  }
  return events;
}

}  // namespace rill::seglog_test

#endif  // RILL_TESTS_SEGLOG_SEGLOG_EVENTS_H_
