// Head: the last committed position of a store's log as this process knows
// it, and the wake-ups of the threads that wait for it to move.
//
// The writer publishes the head after each commit; subscriptions, projection
// workers and Store::WaitForHead wait for it. Commits of other processes are
// not published here: a wait polls the log itself (the `read_log_head`
// function) every poll interval. Wake() interrupts every wait at once
// without a commit, so a waiting thread can look at its stop flag or its
// tasks.
//
// Thread-safety: all methods are thread-safe.
#ifndef RILL_ENGINE_HEAD_H_
#define RILL_ENGINE_HEAD_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace rill::internal {

class Head {
 public:
  // `read_log_head` reads the head position from the log (0: empty).
  explicit Head(std::function<absl::StatusOr<uint64_t>()> read_log_head)
      : read_log_head_(std::move(read_log_head)) {}

  // Records that the log's head is at least `head` and wakes every waiter.
  void Publish(uint64_t head) ABSL_LOCKS_EXCLUDED(mu_);

  // Wakes every waiter without a new head (see Wait's `since_epoch`).
  void Wake() ABSL_LOCKS_EXCLUDED(mu_);
  // How many times Wake() was called.
  uint64_t WakeEpoch() ABSL_LOCKS_EXCLUDED(mu_);

  // Blocks until the head is past `known_head`, `timeout` has passed,
  // *cancel is true, or Wake() is called; returns the head either way.
  // Looks at the log itself every `poll_interval` (50 ms when not positive).
  // A waiter that looks at its flags before it waits must read WakeEpoch()
  // before looking and pass it as `since_epoch`: the wait then also returns
  // at once for a Wake() that came between the look and the wait (without
  // it, the epoch is read when the wait starts and such a Wake() is lost).
  absl::StatusOr<uint64_t> Wait(uint64_t known_head, absl::Duration timeout,
                                absl::Duration poll_interval,
                                const std::atomic<bool>* cancel = nullptr,
                                std::optional<uint64_t> since_epoch = std::nullopt)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const std::function<absl::StatusOr<uint64_t>()> read_log_head_;
  absl::Mutex mu_;
  absl::CondVar cv_;
  uint64_t head_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t wake_epoch_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace rill::internal

#endif  // RILL_ENGINE_HEAD_H_
