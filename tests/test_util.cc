#include "test_util.h"

#include <stdlib.h>

#include <filesystem>

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
  return absl::StrCat(RILL_TEST_BIN_DIR, "/", name);
}

}  // namespace rill::testing
