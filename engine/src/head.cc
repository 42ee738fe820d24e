#include "head.h"

#include <algorithm>

#include "absl/time/clock.h"

namespace rill::internal {

void Head::Publish(uint64_t head) {
  absl::MutexLock lock(&mu_);
  if (head > head_) head_ = head;
  cv_.SignalAll();
}

void Head::Wake() {
  absl::MutexLock lock(&mu_);
  ++wake_epoch_;
  cv_.SignalAll();
}

uint64_t Head::WakeEpoch() {
  absl::MutexLock lock(&mu_);
  return wake_epoch_;
}

absl::StatusOr<uint64_t> Head::Wait(uint64_t known_head, absl::Duration timeout,
                                    absl::Duration poll_interval, const std::atomic<bool>* cancel,
                                    std::optional<uint64_t> since_epoch) {
  const absl::Time deadline = absl::Now() + timeout;
  if (poll_interval <= absl::ZeroDuration()) poll_interval = absl::Milliseconds(50);
  const uint64_t epoch = since_epoch.has_value() ? *since_epoch : WakeEpoch();
  for (;;) {
    bool woken = false;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time wake_at = std::min(deadline, absl::Now() + poll_interval);
      while (head_ <= known_head && !(cancel && cancel->load()) && wake_epoch_ == epoch &&
             absl::Now() < wake_at) {
        cv_.WaitWithDeadline(&mu_, wake_at);
      }
      if (head_ > known_head) return head_;
      woken = wake_epoch_ != epoch;
    }
    // Commits by other processes are not published: look at the log itself.
    absl::StatusOr<uint64_t> head = read_log_head_();
    if (!head.ok()) return head.status();
    if (*head > known_head) {
      Publish(*head);
      return *head;
    }
    if (woken || (cancel && cancel->load()) || absl::Now() >= deadline) return *head;
  }
}

}  // namespace rill::internal
