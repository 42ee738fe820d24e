// A small orders service on top of rill: each order is a stream
// "order-<id>" whose events are OrderCreated, InventoryReserved,
// PaymentProcessed, OrderFulfilled and OrderCancelled. The current state of
// an order (the aggregate) is folded from its events; every command appends
// with the version it was decided on, so two clerks acting on the same order
// cannot both win.
#ifndef RILL_EXAMPLES_ORDERS_ORDER_H_
#define RILL_EXAMPLES_ORDERS_ORDER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "rill/snapshot.h"
#include "rill/store.h"

namespace orders {

enum class Status { kNone, kCreated, kReserved, kPaid, kFulfilled, kCancelled };
const char* StatusName(Status s);

struct Order {
  std::string id;
  Status status = Status::kNone;
  int64_t total_cents = 0;
  int64_t reservations = 0;  // InventoryReserved events so far
  int64_t version = -1;      // stream version the state was folded up to

  // Folds one more event of the order's stream into the state.
  void Apply(const rill::EventView& event);
  // The snapshot encoding of the state (schema version kSnapshotSchema).
  std::string Encode() const;
  static absl::StatusOr<Order> Decode(absl::string_view data);
  static constexpr uint32_t kSnapshotSchema = 1;
};

// Pulls the integer after "key": out of a tiny JSON object (the example's own
// payloads; a real service would use a JSON library). InvalidArgument when
// there is none.
absl::StatusOr<int64_t> JsonInt(absl::string_view json, absl::string_view key);

class OrderService {
 public:
  explicit OrderService(rill::Store* store) : store_(store) {}

  static std::string StreamOf(const std::string& order_id) { return "order-" + order_id; }

  // Folds the order's events into its current state.
  absl::StatusOr<Order> Load(const std::string& order_id);
  // The same state, starting from the latest snapshot (and taking new ones
  // as the store's snapshot policy says).
  absl::StatusOr<rill::LoadedAggregate<Order>> LoadWithSnapshots(rill::SnapshotStore* snapshots,
                                                                 const std::string& order_id);

  // Creates the order; `request_id` is the idempotency key, so a client that
  // retries after a timeout cannot create the order twice.
  absl::StatusOr<rill::AppendResult> Create(const std::string& order_id, int64_t total_cents,
                                            const std::string& request_id);
  // The other commands act on a loaded order and append with its version.
  absl::StatusOr<rill::AppendResult> ReserveInventory(const Order& order, const std::string& sku,
                                                      int quantity);
  absl::StatusOr<rill::AppendResult> ProcessPayment(const Order& order);
  absl::StatusOr<rill::AppendResult> Fulfil(const Order& order);
  absl::StatusOr<rill::AppendResult> Cancel(const Order& order, const std::string& reason);

 private:
  absl::StatusOr<rill::AppendResult> AppendTo(const Order& order, const std::string& type,
                                              const std::string& json);
  rill::Store* store_;
};

}  // namespace orders

#endif  // RILL_EXAMPLES_ORDERS_ORDER_H_
