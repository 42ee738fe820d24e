#include "order.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace orders {

const char* StatusName(Status s) {
  switch (s) {
    case Status::kNone:
      return "none";
    case Status::kCreated:
      return "created";
    case Status::kReserved:
      return "inventory reserved";
    case Status::kPaid:
      return "paid";
    case Status::kFulfilled:
      return "fulfilled";
    case Status::kCancelled:
      return "cancelled";
  }
  return "?";
}

absl::StatusOr<int64_t> JsonInt(absl::string_view json, absl::string_view key) {
  const std::string needle = absl::StrCat("\"", key, "\":");
  size_t at = json.find(needle);
  int64_t n = 0;
  if (at != absl::string_view::npos) {
    absl::string_view rest = json.substr(at + needle.size());
    if (absl::SimpleAtoi(rest.substr(0, rest.find_first_of(",}")), &n)) return n;
  }
  return absl::InvalidArgumentError(absl::StrCat("no number \"", key, "\" in ", json));
}

void Order::Apply(const rill::EventView& e) {
  if (e.type() == "OrderCreated") {
    status = Status::kCreated;
    total_cents = JsonInt(e.payload(), "total_cents").value_or(0);
  } else if (e.type() == "InventoryReserved") {
    status = Status::kReserved;
    ++reservations;
  } else if (e.type() == "PaymentProcessed") {
    status = Status::kPaid;
  } else if (e.type() == "OrderFulfilled") {
    status = Status::kFulfilled;
  } else if (e.type() == "OrderCancelled") {
    status = Status::kCancelled;
  }
  version = e.version();
}

std::string Order::Encode() const {
  return absl::StrCat(static_cast<int>(status), ",", total_cents, ",", reservations, ",", version);
}

absl::StatusOr<Order> Order::Decode(absl::string_view data) {
  std::vector<absl::string_view> parts = absl::StrSplit(data, ',');
  Order o;
  int status = 0;
  if (parts.size() != 4 || !absl::SimpleAtoi(parts[0], &status) ||
      !absl::SimpleAtoi(parts[1], &o.total_cents) || !absl::SimpleAtoi(parts[2], &o.reservations) ||
      !absl::SimpleAtoi(parts[3], &o.version)) {
    return absl::DataLossError(absl::StrCat("bad order snapshot \"", data, "\""));
  }
  o.status = static_cast<Status>(status);
  return o;
}

absl::StatusOr<Order> OrderService::Load(const std::string& order_id) {
  Order order;
  order.id = order_id;
  absl::Status s = store_->ScanStream(StreamOf(order_id), 0, rill::ReadOptions(),
                                      [&order](const rill::EventView& e) {
                                        order.Apply(e);
                                        return true;
                                      });
  if (!s.ok()) return s;
  return order;
}

absl::StatusOr<rill::LoadedAggregate<Order>> OrderService::LoadWithSnapshots(
    rill::SnapshotStore* snapshots, const std::string& order_id) {
  Order initial;
  initial.id = order_id;
  absl::StatusOr<rill::LoadedAggregate<Order>> loaded = snapshots->LoadAggregate(
      StreamOf(order_id), Order::kSnapshotSchema, initial, &Order::Decode,
      [](const Order& o) { return o.Encode(); },
      [](Order& o, const rill::EventView& e) { o.Apply(e); });
  if (loaded.ok()) loaded->state.id = order_id;
  return loaded;
}

absl::StatusOr<rill::AppendResult> OrderService::Create(const std::string& order_id,
                                                        int64_t total_cents,
                                                        const std::string& request_id) {
  rill::EventData created;
  created.type = "OrderCreated";
  created.payload = absl::StrFormat(R"({"order_id":"%s","total_cents":%d})", order_id, total_cents);
  created.metadata.correlation_id = request_id;
  rill::AppendOptions options;
  options.idempotency_key = request_id;
  return store_->Append(StreamOf(order_id), rill::ExpectedVersion::NoStream(), {created}, options);
}

absl::StatusOr<rill::AppendResult> OrderService::AppendTo(const Order& order,
                                                          const std::string& type,
                                                          const std::string& json) {
  rill::EventData event;
  event.type = type;
  event.payload = json;
  return store_->Append(StreamOf(order.id), rill::ExpectedVersion::Exact(order.version), {event});
}

absl::StatusOr<rill::AppendResult> OrderService::ReserveInventory(const Order& order,
                                                                  const std::string& sku,
                                                                  int quantity) {
  return AppendTo(order, "InventoryReserved",
                  absl::StrFormat(R"({"sku":"%s","quantity":%d})", sku, quantity));
}

absl::StatusOr<rill::AppendResult> OrderService::ProcessPayment(const Order& order) {
  return AppendTo(order, "PaymentProcessed",
                  absl::StrFormat(R"({"amount_cents":%d})", order.total_cents));
}

absl::StatusOr<rill::AppendResult> OrderService::Fulfil(const Order& order) {
  return AppendTo(order, "OrderFulfilled", "{}");
}

absl::StatusOr<rill::AppendResult> OrderService::Cancel(const Order& order,
                                                        const std::string& reason) {
  return AppendTo(order, "OrderCancelled", absl::StrFormat(R"({"reason":"%s"})", reason));
}

}  // namespace orders
