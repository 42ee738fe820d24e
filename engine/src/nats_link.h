// NatsLink: what the replicated store needs of libnats (the NATS C client),
// behind absl::Status: a connection that keeps reconnecting, the JetStream
// stream, publishing a message with a message id, and following the stream
// in order from a sequence (an ordered push consumer, which libnats
// recreates by itself after a gap or missed heartbeats).
//
// Thread-safety: libnats connections and JetStream contexts are thread-safe;
// a Follower is used by one thread.
#ifndef RILL_ENGINE_NATS_LINK_H_
#define RILL_ENGINE_NATS_LINK_H_

#include <nats/nats.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "rill/replication.h"

namespace rill::internal {

class NatsLink {
 public:
  // Connects to `options.servers`. When none answers within
  // options.connect_timeout the link still comes up and keeps trying in the
  // background (libnats' retry-on-failed-connect), unless `must_connect`:
  // then Unavailable.
  static absl::StatusOr<std::unique_ptr<NatsLink>> Connect(const ReplicationOptions& options,
                                                           bool must_connect);
  ~NatsLink();

  bool connected() const;
  // Waits until connected or `deadline`; false when still not connected.
  bool AwaitConnected(absl::Time deadline) const;

  // Creates the stream (options.stream on options.effective_subject(), file
  // storage, options.replicas, no limits, deletes and purges denied) unless
  // it exists. An existing stream is used as it is.
  absl::Status EnsureStream(const ReplicationOptions& options);

  struct StreamState {
    uint64_t last_sequence = 0;
    int replicas = 0;
    std::string leader;
  };
  absl::StatusOr<StreamState> GetStream(const std::string& stream, absl::Duration timeout);

  // One JetStream publish with `msg_id` as Nats-Msg-Id (the server drops a
  // second copy within its duplicate window and acknowledges the first).
  struct Published {
    absl::Status status;
    uint64_t sequence = 0;
    bool duplicate = false;
    // The request may have reached the server (timed out waiting for the
    // acknowledgement): the message may be stored.
    bool maybe_stored = false;
  };
  // `expect_last_sequence` (0: none) makes JetStream refuse the message
  // unless the stream's last sequence is that (Nats-Expected-Last-Sequence).
  Published Publish(const std::string& subject, const std::string& stream,
                    const std::string& msg_id, absl::string_view data, absl::Duration timeout,
                    uint64_t expect_last_sequence = 0);

  // Publishes until JetStream acknowledges or `timeout` has passed: through a leader
  // election (no responders) and unanswered attempts (each waits at most
  // `attempt`), always with the same message id, so JetStream keeps one
  // copy. Returns the sequence, or Unavailable saying whether the message
  // was not stored or may have been (then its outcome is unknown); an error
  // JetStream gives for the message itself (too large, wrong stream, a
  // failed expectation) is returned at once. `cancelled` ends it early.
  absl::StatusOr<uint64_t> PublishRetrying(const std::string& subject, const std::string& stream,
                                           const std::string& msg_id, absl::string_view data,
                                           absl::Duration timeout, absl::Duration attempt,
                                           absl::FunctionRef<bool()> cancelled,
                                           uint64_t expect_last_sequence = 0);

  // Follows `stream` in order, from `start_sequence` (>= 1).
  class Follower {
   public:
    ~Follower();
    struct Message {
      uint64_t sequence;
      std::string data;
    };
    // The next message, or nullopt when none came within `timeout`.
    absl::StatusOr<std::optional<Message>> Next(absl::Duration timeout);

   private:
    friend class NatsLink;
    explicit Follower(natsSubscription* sub) : sub_(sub) {}
    natsSubscription* sub_;
  };
  absl::StatusOr<std::unique_ptr<Follower>> Follow(const std::string& subject,
                                                   const std::string& stream,
                                                   uint64_t start_sequence);

 private:
  NatsLink(natsConnection* nc, jsCtx* js) : nc_(nc), js_(js) {}
  natsConnection* nc_;
  jsCtx* js_;
};

// A libnats status as an absl::Status: `what` names the operation.
absl::Status NatsError(natsStatus s, jsErrCode jerr, absl::string_view what);

}  // namespace rill::internal

#endif  // RILL_ENGINE_NATS_LINK_H_
