#include "order.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

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

namespace {

// Pulls the integer after "key": out of a tiny JSON object (good enough for
// this example's own payloads; a real service would use a JSON library).
int64_t JsonInt(absl::string_view json, absl::string_view key) {
  std::string needle = absl::StrCat("\"", key, "\":");
  size_t at = json.find(needle);
  if (at == absl::string_view::npos) return 0;
  return std::strtoll(std::string(json.substr(at + needle.size())).c_str(), nullptr, 10);
}

}  // namespace

absl::StatusOr<Order> OrderService::Load(const std::string& order_id) {
  Order order;
  order.id = order_id;
  absl::Status s = store_->ScanStream(StreamOf(order_id), 0, rill::ReadOptions(),
                                      [&order](const rill::EventView& e) {
                                        if (e.type() == "OrderCreated") {
                                          order.status = Status::kCreated;
                                          order.total_cents = JsonInt(e.payload(), "total_cents");
                                        } else if (e.type() == "InventoryReserved") {
                                          order.status = Status::kReserved;
                                        } else if (e.type() == "PaymentProcessed") {
                                          order.status = Status::kPaid;
                                        } else if (e.type() == "OrderFulfilled") {
                                          order.status = Status::kFulfilled;
                                        } else if (e.type() == "OrderCancelled") {
                                          order.status = Status::kCancelled;
                                        }
                                        order.version = e.version();
                                        return true;
                                      });
  if (!s.ok()) return s;
  return order;
}

absl::StatusOr<rill::AppendResult> OrderService::Create(const std::string& order_id,
                                                        int64_t total_cents,
                                                        const std::string& request_id) {
  rill::EventData created;
  created.type = "OrderCreated";
  created.payload =
      absl::StrFormat(R"({"order_id":"%s","total_cents":%d})", order_id, total_cents);
  created.metadata.correlation_id = request_id;
  rill::AppendOptions options;
  options.idempotency_key = request_id;
  return store_->Append(StreamOf(order_id), rill::ExpectedVersion::NoStream(), {created},
                        options);
}

absl::StatusOr<rill::AppendResult> OrderService::AppendTo(const Order& order,
                                                          const std::string& type,
                                                          const std::string& json) {
  rill::EventData event;
  event.type = type;
  event.payload = json;
  return store_->Append(StreamOf(order.id), rill::ExpectedVersion::Exact(order.version),
                        {event});
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
