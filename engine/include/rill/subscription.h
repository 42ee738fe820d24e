// Subscription: catch up on the log from a position, then follow it live.
//
// A subscription runs its handler on a thread of its own. It first reads the
// events already in the log after `after_position` (in batches, each in a
// short read transaction that has ended before the handler sees the events),
// then waits for commits: commits made through this process's Store wake it
// at once; commits made by other processes are found by polling the head
// every `poll_interval`. A slow handler delays only its own subscription,
// never an append.
//
// Thread-safety: Stop(), status(), position() and live() may be called from
// any thread. The handler is called from one thread only, never concurrently.
#ifndef RILL_SUBSCRIPTION_H_
#define RILL_SUBSCRIPTION_H_

#include <cstddef>
#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "rill/event.h"
#include "rill/options.h"

namespace rill {

// Called for each event, in position order. The view is valid only until the
// handler returns. A non-OK status ends the subscription with that status.
using SubscriptionHandler = std::function<absl::Status(const EventView&)>;

struct SubscriptionOptions {
  // Which events reach the handler. Positions of filtered-out events still
  // advance position().
  EventFilter filter;
  // Most events read per read transaction.
  size_t batch_size = 1024;
  // How often to look for commits made by other processes while live.
  absl::Duration poll_interval = absl::Milliseconds(50);
  // Called once, on the subscription's thread, when it has caught up with
  // the head for the first time (and before it waits for new events).
  std::function<void()> on_live;
};

class Subscription {
 public:
  virtual ~Subscription() = default;  // stops the subscription (see Stop)

  // Stops the subscription and waits for its thread to end. The handler is
  // not called again once Stop returns. Must not be called from the handler
  // (return a non-OK status from it instead). Idempotent.
  virtual void Stop() = 0;

  // OK while running and after Stop; otherwise why it ended (the handler's
  // status, or a read error such as DataLoss).
  virtual absl::Status status() const = 0;
  // True while the subscription's thread runs.
  virtual bool running() const = 0;
  // Position of the last event read (delivered or filtered out); the
  // subscription resumes after it.
  virtual uint64_t position() const = 0;
  // True once the subscription has caught up with the head at least once.
  virtual bool live() const = 0;
};

}  // namespace rill

#endif  // RILL_SUBSCRIPTION_H_
