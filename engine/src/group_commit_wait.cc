#include "group_commit_wait.h"

#include <algorithm>

#include "absl/time/clock.h"

namespace rill::internal {

GroupCommitWait::GroupCommitWait(absl::Duration max_wait)
    : max_wait_(std::clamp(max_wait, absl::ZeroDuration(), kMax)), wait_(max_wait_) {}

void GroupCommitWait::Await(absl::Mutex& mu, absl::FunctionRef<bool()> full) {
  if (outstanding_.empty()) return;
  bool retry = false;
  if (wait_ == absl::ZeroDuration()) {
    if (max_wait_ == absl::ZeroDuration() || ++batches_without_wait_ < kRetryBatches) return;
    batches_without_wait_ = 0;
    wait_ = max_wait_;
    retry = true;
  }
  ++stats_.waits;
  // Callers that append in a loop come back within microseconds of each
  // other: once none has come back for a quarter of the wait, the rest are
  // not coming (a caller that went on to other work, or exited).
  const absl::Duration gap = std::max(wait_ / 4, kMin);
  const absl::Time deadline = absl::Now() + wait_;
  const size_t outstanding = outstanding_.size();
  bool all_back = false;
  for (;;) {
    const size_t before = outstanding_.size();
    auto moved = [this, before, &full]() { return outstanding_.size() < before || full(); };
    const absl::Duration slice = std::min(gap, deadline - absl::Now());
    if (slice <= absl::ZeroDuration() || !mu.AwaitWithTimeout(absl::Condition(&moved), slice)) {
      break;
    }
    if (outstanding_.empty() || full()) {
      all_back = true;
      break;
    }
  }
  if (all_back) {
    ++stats_.all_back;
    wait_ = max_wait_;
  } else if (outstanding_.size() == outstanding) {
    // None came back: these callers are not appending in a loop (or not
    // right now). Wait less next time; a failed retry goes straight back
    // to not waiting.
    ++stats_.none_back;
    wait_ = retry ? absl::ZeroDuration() : wait_ / 2;
    if (wait_ < kMin) wait_ = absl::ZeroDuration();
  }
  // Some came back and the rest did not (looping callers and one-off ones
  // in one batch): the wait was worth it, keep it as it is.
}

}  // namespace rill::internal
