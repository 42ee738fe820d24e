// What the projection runner's tests (tests/projection/*_test.cc, one
// projection_test binary) share: a mixed workload to append, a gate that
// holds a projection's Apply at a chosen position, status polling, a checker
// that views a model from many threads, and a white-box look at the derived
// environment's rows.
//
// No assertion depends on timing: tests wait only through WaitFor or by
// polling Status with generous deadlines (kLong) that merely turn a hang into
// a failure. Where a test must hold a projection at a chosen point it blocks
// that projection's Apply on a Gate at a chosen position.
//
// Exactly-once across real crashes is tests/projection_crash_test.cc.
#ifndef RILL_TESTS_PROJECTION_PROJECTION_TEST_UTIL_H_
#define RILL_TESTS_PROJECTION_PROJECTION_TEST_UTIL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "projector_defs.h"
#include "rill/projection.h"
#include "rill/projection_admin.h"
#include "rill/store.h"

namespace rill {

// Readable states in failure messages.
void PrintTo(ProjectionState state, std::ostream* os);

}  // namespace rill

namespace rill::testing {

// Only turns a hang into a failure; nothing here is expected to take long.
inline constexpr absl::Duration kLong = absl::Seconds(60);

StoreOptions TestStoreOptions();

// Event i of the mixed workload: streams "acct-0".."acct-4" and
// "misc-0".."misc-4", types Opened / Updated / Closed, so that filters by
// type, by prefix and by both each select a different proper subset.
std::string MixedStream(int i);
std::string MixedType(int i);

// Appends events first..first+count-1 of the mixed workload, one append
// each; returns the last position.
absl::StatusOr<uint64_t> AppendMixed(Store& store, int count, int first = 0);

// Blocks threads in Pass() until Open().
class Gate {
 public:
  void Pass() {
    absl::MutexLock lock(&mu_);
    ++waiting_;
    mu_.Await(absl::Condition(&open_));
    --waiting_;
  }
  void Open() {
    absl::MutexLock lock(&mu_);
    open_ = true;
  }
  // True once a thread waits in Pass().
  bool AwaitWaiter(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto waiting = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return waiting_ > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&waiting), timeout);
  }

 private:
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
};

// Opens the gate when the test ends, however it ends, so that no runner
// thread stays blocked in an Apply (the runner's destructor joins it).
struct OpenOnExit {
  Gate* gate;
  ~OpenOnExit() { gate->Open(); }
};

// `def` whose Apply blocks in `gate` the first time it meets position
// `*at` (0: never); *at goes back to 0 then.
ProjectionDef BlockAt(ProjectionDef def, std::shared_ptr<std::atomic<uint64_t>> at, Gate* gate);

ProjectionDef Renamed(ProjectionDef def, const std::string& name);

absl::StatusOr<std::vector<RecordedEvent>> WholeLog(Store& store);

absl::StatusOr<ModelDump> Dump(ProjectionRunner& runner, const ProjectionDef& def);

// Polls Status(name) until `pred` holds; the last status seen goes to *last.
bool AwaitStatus(ProjectionRunner& runner, const std::string& name,
                 const std::function<bool(const ProjectionStatus&)>& pred,
                 ProjectionStatus* last = nullptr, absl::Duration timeout = kLong);

bool RebuildDone(const ProjectionStatus& st);

// White box (docs/format.md): the generations that still hold rows in the
// derived environment's "rm" database. Used to see that a swapped-out
// generation's tables are really dropped.
absl::StatusOr<std::set<uint64_t>> GenerationsWithRows(Store* store);

// Views `name` from `threads` threads in a loop until Stop(), checking each
// view with `check` ("" when the view is fine) and that checkpoints never go
// backwards within one thread.
class ViewHammer {
 public:
  ViewHammer(ProjectionRunner* runner, std::string name, int threads,
             std::function<std::string(ReadModelView&)> check);
  ~ViewHammer() { Stop(); }

  // True once every thread has checked at least `n` views.
  bool AwaitViews(int n, absl::Duration timeout = kLong);
  void Stop();
  std::vector<std::string> errors();
  int64_t total_views() const;

 private:
  void Loop(int t);

  ProjectionRunner* runner_;
  const std::string name_;
  const std::function<std::string(ReadModelView&)> check_;
  std::vector<std::atomic<int64_t>> views_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  absl::Mutex mu_;
  std::vector<std::string> errors_ ABSL_GUARDED_BY(mu_);
};

std::vector<uint64_t> ParkedPositions(const std::vector<ParkedEvent>& parked);

}  // namespace rill::testing

#endif  // RILL_TESTS_PROJECTION_PROJECTION_TEST_UTIL_H_
