// Helpers shared by the test suites: temporary store directories, event
// builders and status assertions (Debian 12's Abseil has no status matchers).
#ifndef RILL_TESTS_TEST_UTIL_H_
#define RILL_TESTS_TEST_UTIL_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "rill/event.h"
#include "rill/store.h"

namespace rill::testing {

// A fresh, empty directory under $TMPDIR (or /tmp), removed with everything
// in it when the object is destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// An event of `type` whose JSON payload is {"n":n}.
EventData MakeEvent(const std::string& type, int n);
// `count` events "E0", "E1", ... with payloads {"n":0}, {"n":1}, ...
std::vector<EventData> MakeEvents(int count, int first_n = 0);

// Path of a child program (tests/children/, tests/crash/torture_child.cc) in
// the build tree (an absolute path is returned as is).
std::string ChildBinary(const std::string& name);

}  // namespace rill::testing

#define RILL_ASSERT_OK(expr)                                   \
  do {                                                         \
    const ::absl::Status rill_status_ = (expr);                \
    ASSERT_TRUE(rill_status_.ok()) << rill_status_.ToString(); \
  } while (0)

#define RILL_EXPECT_OK(expr)                                   \
  do {                                                         \
    const ::absl::Status rill_status_ = (expr);                \
    EXPECT_TRUE(rill_status_.ok()) << rill_status_.ToString(); \
  } while (0)

// ASSERT that a StatusOr is ok and move its value into `lhs` (a declaration).
#define RILL_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  RILL_ASSERT_OK_AND_ASSIGN_IMPL_(RILL_CONCAT_(rill_so_, __LINE__), lhs, expr)
#define RILL_ASSERT_OK_AND_ASSIGN_IMPL_(so, lhs, expr) \
  auto so = (expr);                                    \
  ASSERT_TRUE(so.ok()) << so.status().ToString();      \
  lhs = std::move(so).value()
#define RILL_CONCAT_(a, b) RILL_CONCAT_INNER_(a, b)
#define RILL_CONCAT_INNER_(a, b) a##b

// --- Contract-test helpers (expected version, append, idempotency, read) ---
namespace rill::testing {

// Everything an append can change, rendered as text so that two snapshots
// compare with EXPECT_EQ and a difference prints readably: the head, every
// event of the log and every stream's info. A request that fails must leave
// the snapshot unchanged.
struct LogSnapshot {
  uint64_t head = 0;
  std::vector<std::string> events;   // one line per event, position order
  std::vector<std::string> streams;  // one line per stream, name order

  friend bool operator==(const LogSnapshot& a, const LogSnapshot& b) {
    return a.head == b.head && a.events == b.events && a.streams == b.streams;
  }
  friend bool operator!=(const LogSnapshot& a, const LogSnapshot& b) { return !(a == b); }
};
void PrintTo(const LogSnapshot& snapshot, std::ostream* os);
absl::StatusOr<LogSnapshot> TakeSnapshot(Store& store);

// One line describing every field of `event` (the payload as size + hash).
std::string DescribeEvent(const RecordedEvent& event);
// Success when every field of the two events is equal.
::testing::AssertionResult SameEvent(const RecordedEvent& a, const RecordedEvent& b);

std::vector<uint64_t> Positions(const std::vector<RecordedEvent>& events);
std::vector<int64_t> Versions(const std::vector<RecordedEvent>& events);

// Group commit: `threads` threads appended one event per request in a loop,
// thread t to stream "<prefix>t", and `all` is the log. Every event of one
// commit (or replicated message) has the same recorded time and two commits
// never share one. Fails unless, while every thread was appending (from the
// last thread's first commit to the first thread's last one; threads may
// start or finish a few commits apart), each commit held exactly one append
// of every thread, and there was such a commit. `tolerated`: how many of
// those commits may fall short (a thread descheduled for longer than the
// wait's quiet gap on a loaded machine).
void ExpectEveryCommitHoldsEveryLooper(const std::vector<RecordedEvent>& all, int threads,
                                       const std::string& prefix, int tolerated = 0);

}  // namespace rill::testing

#endif  // RILL_TESTS_TEST_UTIL_H_
