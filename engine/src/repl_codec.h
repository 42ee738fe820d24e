// Encoding of the replicated store's records (schema/replication.fbs): the
// transaction a node publishes as one JetStream message, and the outcome a
// replica keeps for it.
#ifndef RILL_ENGINE_REPL_CODEC_H_
#define RILL_ENGINE_REPL_CODEC_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "rill/event.h"
#include "rill/store.h"
#include "writer.h"

namespace rill::internal {

// A transaction decoded from a message: requests ready for
// Writer::WriteReplicated, owning the data their parts point into.
struct ReplTransaction {
  EventId txid;
  EventId node;  // the publishing node's store id
  int64_t recorded_us = 0;
  std::vector<AppendRequest> requests;
  // What the requests' parts point into (deques: stable addresses).
  std::deque<std::string> streams;
  std::deque<std::vector<EventData>> events;
};

// The event as it was appended: what a transaction carries of a stored or
// decoded event (not its stream, version, position or time).
EventData ToEventData(const EventView& event);

// The message for `requests`: an 8-byte XXH3-64 checksum, then the
// Transaction FlatBuffer. Events with a nil id get a random one here, so
// every node stores the same ids.
std::string EncodeTransaction(const EventId& txid, const EventId& node, int64_t recorded_us,
                              absl::Span<AppendRequest* const> requests);
// DataLoss when `message` fails its checksum or verification (a message not
// published by rill, or damaged).
absl::StatusOr<std::unique_ptr<ReplTransaction>> DecodeTransaction(absl::string_view message);

// What applying a transaction gave each request, in request order.
struct ReplOutcome {
  uint64_t sequence = 0;
  std::vector<absl::StatusOr<std::vector<AppendResult>>> results;
};
std::string EncodeOutcome(uint64_t sequence, absl::Span<const AppendRequest> requests);
absl::StatusOr<ReplOutcome> DecodeOutcome(absl::string_view value);

}  // namespace rill::internal

#endif  // RILL_ENGINE_REPL_CODEC_H_
