// GroupCommitWait: the wait before a group commit takes its next batch, for
// the callers the previous batch carried (StoreOptions::group_commit_wait for
// the embedded writer, ReplicationOptions::group_commit_wait for a replicated
// node's publisher).
//
// Callers that append in a loop are back with their next request within
// microseconds of being answered; waiting for them puts all of them into one
// commit (or one JetStream message) instead of two alternating half-sized
// ones. The wait ends when every caller of the last batch is back, the batch
// is full, none has come back for a quarter of the wait, or the wait is over.
// It adapts: when none of them came back (callers that append once and go on
// to other work) the next wait is halved, down to nothing; after
// kRetryBatches batches without a wait it is tried once more at full length.
// A lone caller never waits for itself: it is the last batch's only caller,
// and it is back when it queues.
//
// Thread-safety: not synchronized. Every call is made holding the owner's
// queue mutex, which Await releases while it waits.
#ifndef RILL_ENGINE_GROUP_COMMIT_WAIT_H_
#define RILL_ENGINE_GROUP_COMMIT_WAIT_H_

#include <cstdint>
#include <functional>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace rill::internal {

class GroupCommitWait {
 public:
  // The longest wait: larger settings are cut to this.
  static constexpr absl::Duration kMax = absl::Seconds(1);
  // Below this a wait is not worth a timed wait: it drops to zero.
  static constexpr absl::Duration kMin = absl::Microseconds(5);
  // Batches after which a wait that fell to zero is tried again.
  static constexpr int kRetryBatches = 64;

  // Counters, for tests.
  struct Stats {
    uint64_t batches = 0;    // batches (calls of Took)
    uint64_t waits = 0;      // waits for the last batch's callers
    uint64_t all_back = 0;   // ... that saw all of them back
    uint64_t none_back = 0;  // ... that saw none of them back
  };

  // `max_wait`: the setting (clamped to [0, kMax]); 0 never waits.
  explicit GroupCommitWait(absl::Duration max_wait);

  // `caller` queued a request: if the last batch carried one of its
  // requests, it is back.
  void Returned(std::thread::id caller) {
    if (!outstanding_.empty()) outstanding_.erase(caller);
  }
  // A new batch was taken (or completed): its callers, added one by one
  // with Carried, replace the last batch's.
  void Took() {
    outstanding_.clear();
    ++stats_.batches;
  }
  void Carried(std::thread::id caller) { outstanding_.insert(caller); }

  // Waits, releasing `mu` (held on entry and on return), for the last
  // batch's callers to come back, until `full()` (the queue holds a full
  // batch, or the owner is stopping) or the wait ends as above; adapts the
  // next wait. `full` is called holding `mu`.
  void Await(absl::Mutex& mu, absl::FunctionRef<bool()> full) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  const Stats& stats() const { return stats_; }

 private:
  absl::flat_hash_set<std::thread::id, std::hash<std::thread::id>> outstanding_;
  const absl::Duration max_wait_;
  absl::Duration wait_;  // the current wait, between zero and max_wait_
  int batches_without_wait_ = 0;
  Stats stats_;
};

}  // namespace rill::internal

#endif  // RILL_ENGINE_GROUP_COMMIT_WAIT_H_
