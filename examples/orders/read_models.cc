#include "read_models.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "order.h"

namespace orders {
namespace {

std::string OrderIdOf(absl::string_view stream) {
  return std::string(absl::StripPrefix(stream, "order-"));
}

// The status an order is in after an event of this type.
std::string StatusAfter(absl::string_view type) {
  if (type == "OrderCreated") return "created";
  if (type == "InventoryReserved") return "reserved";
  if (type == "PaymentProcessed") return "paid";
  if (type == "OrderFulfilled") return "fulfilled";
  if (type == "OrderCancelled") return "cancelled";
  return "unknown";
}

absl::StatusOr<int64_t> GetInt(rill::ReadModelTxn& txn, absl::string_view table,
                               absl::string_view key) {
  absl::StatusOr<std::optional<std::string>> v = txn.Get(table, key);
  if (!v.ok()) return v.status();
  int64_t n = 0;
  if (v->has_value() && !absl::SimpleAtoi(**v, &n)) {
    return absl::DataLossError(absl::StrCat(table, "/", key, " is not a number"));
  }
  return n;
}

absl::Status AddTo(rill::ReadModelTxn& txn, absl::string_view table, absl::string_view key,
                   int64_t delta) {
  absl::StatusOr<int64_t> n = GetInt(txn, table, key);
  if (!n.ok()) return n.status();
  return txn.Put(table, key, absl::StrCat(*n + delta));
}

rill::EventFilter Orders() {
  rill::EventFilter f;
  f.stream_prefix = "order-";
  return f;
}

}  // namespace

rill::ProjectionDef OrderSummaryProjection() {
  rill::ProjectionDef def;
  def.name = "order_summary";
  def.filter = Orders();
  def.tables = {"summary", "totals"};
  def.apply = [](const rill::EventView& e, rill::ReadModelTxn& txn) -> absl::Status {
    const std::string order = OrderIdOf(e.stream());
    if (e.type() == "OrderCreated") {
      absl::StatusOr<int64_t> total = JsonInt(e.payload(), "total_cents");
      if (!total.ok()) return total.status();
      if (absl::Status s = txn.Put("totals", order, absl::StrCat(*total)); !s.ok()) return s;
    }
    absl::StatusOr<int64_t> total = GetInt(txn, "totals", order);
    if (!total.ok()) return total.status();
    return txn.Put("summary", order,
                   absl::StrFormat(R"({"status":"%s","total_cents":%d,"events":%d})",
                                   StatusAfter(e.type()), *total, e.version() + 1));
  };
  return def;
}

rill::ProjectionDef OrdersByStatusProjection() {
  rill::ProjectionDef def;
  def.name = "orders_by_status";
  def.filter = Orders();
  def.tables = {"status_of", "by_status"};
  def.apply = [](const rill::EventView& e, rill::ReadModelTxn& txn) -> absl::Status {
    const std::string order = OrderIdOf(e.stream());
    absl::StatusOr<std::optional<std::string>> old = txn.Get("status_of", order);
    if (!old.ok()) return old.status();
    if (old->has_value()) {
      if (absl::Status s = txn.Delete("by_status", absl::StrCat(**old, "/", order)); !s.ok()) {
        return s;
      }
    }
    const std::string status = StatusAfter(e.type());
    if (absl::Status s = txn.Put("status_of", order, status); !s.ok()) return s;
    return txn.Put("by_status", absl::StrCat(status, "/", order), "");
  };
  return def;
}

rill::ProjectionDef DailyRevenueProjection(uint32_t version) {
  rill::ProjectionDef def;
  def.name = "daily_revenue";
  def.version = version;
  def.filter = Orders();
  def.filter.types = {"PaymentProcessed"};
  if (version >= 2) def.filter.types.push_back("OrderCancelled");
  def.tables = {"revenue", "paid"};
  // A payment whose amount cannot be read is parked, not guessed at.
  def.error_policy = rill::ErrorPolicy::kPark;
  def.retry_backoff = absl::Milliseconds(1);
  def.apply = [](const rill::EventView& e, rill::ReadModelTxn& txn) -> absl::Status {
    const std::string day = absl::FormatTime("%Y-%m-%d", e.recorded_at(), absl::UTCTimeZone());
    const std::string order = OrderIdOf(e.stream());
    if (e.type() == "PaymentProcessed") {
      absl::StatusOr<int64_t> amount = JsonInt(e.payload(), "amount_cents");
      if (!amount.ok()) return amount.status();
      if (absl::Status s = txn.Put("paid", order, absl::StrCat(*amount)); !s.ok()) return s;
      return AddTo(txn, "revenue", day, *amount);
    }
    // Version 2: a cancelled paid order is refunded on the day it is cancelled.
    absl::StatusOr<int64_t> paid = GetInt(txn, "paid", order);
    if (!paid.ok()) return paid.status();
    if (*paid == 0) return absl::OkStatus();
    if (absl::Status s = txn.Delete("paid", order); !s.ok()) return s;
    return AddTo(txn, "revenue", day, -*paid);
  };
  return def;
}

}  // namespace orders
