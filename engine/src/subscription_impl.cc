// Catch-up subscriptions: a thread that scans the log from its position and,
// once caught up, waits for the head to move (woken by this process's
// commits, polling for other processes').
#include <atomic>
#include <thread>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "store_core.h"
#include "store_impl.h"

namespace rill::internal {
namespace {

class SubscriptionImpl final : public Subscription {
 public:
  SubscriptionImpl(StoreCore* core, uint64_t after_position, SubscriptionOptions options,
                   SubscriptionHandler handler)
      : core_(core),
        options_(std::move(options)),
        handler_(std::move(handler)),
        position_(after_position) {
    if (options_.batch_size == 0) options_.batch_size = 1;
    core_->metrics().AddSubscription(&position_);
    thread_ = std::thread([this] { Run(); });
  }

  ~SubscriptionImpl() override {
    Stop();
    core_->metrics().RemoveSubscription(&position_);
  }

  void Stop() override {
    stop_.store(true);
    core_->head().Wake();
    if (std::this_thread::get_id() == thread_.get_id()) return;  // from the handler
    absl::MutexLock lock(&join_mu_);
    if (thread_.joinable()) thread_.join();
  }

  absl::Status status() const override {
    absl::MutexLock lock(&status_mu_);
    return status_;
  }
  bool running() const override { return running_.load(); }
  uint64_t position() const override { return position_.load(); }
  bool live() const override { return live_.load(); }

 private:
  void Run() {
    absl::Status status = Loop();
    {
      absl::MutexLock lock(&status_mu_);
      status_ = std::move(status);
    }
    running_.store(false);
  }

  absl::Status Loop() {
    uint64_t known_head = 0;
    while (!stop_.load()) {
      ScanProgress progress;
      absl::Status handler_status;
      absl::Status s = core_->ScanChunked(
          position_.load() + 1, Direction::kForward, options_.filter, options_.batch_size,
          [&](const EventView& event) {
            if (stop_.load()) return false;
            handler_status = handler_(event);
            if (!handler_status.ok()) return false;
            position_.store(event.position());
            return true;
          },
          &progress);
      if (!s.ok()) return s;
      if (!handler_status.ok()) return handler_status;
      if (stop_.load()) break;
      // Records that did not match the filter still move the position on.
      if (progress.last_scanned > position_.load()) position_.store(progress.last_scanned);
      if (progress.records == options_.batch_size) continue;  // more to catch up on
      if (!live_.exchange(true) && options_.on_live) options_.on_live();
      absl::StatusOr<uint64_t> head = core_->head().Wait(
          std::max(known_head, position_.load()), absl::Seconds(1), options_.poll_interval, &stop_);
      if (!head.ok()) return head.status();
      known_head = *head;
    }
    return absl::OkStatus();
  }

  StoreCore* const core_;
  SubscriptionOptions options_;
  SubscriptionHandler handler_;
  std::atomic<uint64_t> position_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> running_{true};
  std::atomic<bool> live_{false};
  mutable absl::Mutex status_mu_;
  absl::Status status_ ABSL_GUARDED_BY(status_mu_);
  absl::Mutex join_mu_;
  std::thread thread_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Subscription>> StoreImpl::Subscribe(uint64_t after_position,
                                                                   SubscriptionOptions options,
                                                                   SubscriptionHandler handler) {
  if (!handler) return absl::InvalidArgumentError("subscription has no handler");
  return std::unique_ptr<Subscription>(
      new SubscriptionImpl(&core_, after_position, std::move(options), std::move(handler)));
}

}  // namespace rill::internal
