#include "read_side.h"

#include <iostream>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "order.h"
#include "read_models.h"
#include "rill/projection.h"
#include "rill/snapshot.h"

namespace orders {
namespace {

void Say(const std::string& text) { std::cout << text << "\n"; }

bool Check(const absl::Status& s, const std::string& what) {
  if (!s.ok()) std::cerr << "error: " << what << ": " << s << "\n";
  return s.ok();
}

std::string Get(rill::ProjectionRunner& runner, const std::string& projection,
                const std::string& table, const std::string& key) {
  absl::StatusOr<std::unique_ptr<rill::ReadModelView>> view = runner.View(projection);
  if (!view.ok()) return view.status().ToString();
  absl::StatusOr<std::optional<std::string>> v = (*view)->Get(table, key);
  if (!v.ok()) return v.status().ToString();
  return v->value_or("(none)");
}

std::string Revenue(rill::ProjectionRunner& runner) {
  const std::string today = absl::FormatTime("%Y-%m-%d", absl::Now(), absl::UTCTimeZone());
  return absl::StrCat(today, ": ", Get(runner, "daily_revenue", "revenue", today), " cents");
}

absl::StatusOr<std::unique_ptr<rill::ProjectionRunner>> StartRunner(rill::Store* store,
                                                                    uint32_t revenue_version) {
  return rill::ProjectionRunner::Start(store, {OrderSummaryProjection(), OrdersByStatusProjection(),
                                               DailyRevenueProjection(revenue_version)});
}

// Waits until daily_revenue serves `version` and reflects `position`.
bool WaitForVersion(rill::ProjectionRunner& runner, uint32_t version, uint64_t position) {
  for (int i = 0; i < 1000; ++i) {
    absl::StatusOr<rill::ProjectionStatus> st = runner.Status("daily_revenue");
    if (st.ok() && st->version == version && st->checkpoint >= position) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  std::cerr << "error: daily_revenue did not reach version " << version << "\n";
  return false;
}

}  // namespace

bool RunReadSideTour(rill::Store* store, const std::string& run) {
  OrderService service(store);
  Say("\n8. Read models. Three projections follow the log in the background:");
  Say("   order_summary, orders_by_status and daily_revenue (version 1).");
  absl::StatusOr<std::unique_ptr<rill::ProjectionRunner>> runner = StartRunner(store, 1);
  if (!Check(runner.status(), "starting the projections")) return false;

  const std::string d = "D" + run;
  absl::StatusOr<rill::AppendResult> created = service.Create(d, 2000, "request-" + d);
  if (!Check(created.status(), "creating an order")) return false;
  Say("   Order " + d + " was just created. Reading its summary right away could miss it,");
  Say("   so the service waits for the projection to reach the append's position:");
  if (!Check((*runner)->WaitFor("order_summary", created->last_position, absl::Seconds(10)),
             "waiting for order_summary")) {
    return false;
  }
  Say("   order_summary[" + d + "] = " + Get(**runner, "order_summary", "summary", d));

  absl::StatusOr<Order> order = service.Load(d);
  if (!Check(order.status(), "loading")) return false;
  absl::StatusOr<rill::AppendResult> paid = service.ProcessPayment(*order);
  if (!Check(paid.status(), "paying")) return false;
  order = service.Load(d);
  absl::StatusOr<rill::AppendResult> cancelled = service.Cancel(*order, "changed my mind");
  if (!Check(cancelled.status(), "cancelling")) return false;
  Say("   " + d + " is paid and then cancelled.");
  for (const char* name : {"order_summary", "orders_by_status", "daily_revenue"}) {
    if (!Check((*runner)->WaitFor(name, cancelled->last_position, absl::Seconds(10)), "waiting")) {
      return false;
    }
  }
  absl::StatusOr<std::unique_ptr<rill::ReadModelView>> view = (*runner)->View("orders_by_status");
  if (!Check(view.status(), "viewing")) return false;
  Say("   Orders by status (one consistent view):");
  absl::Status scanned =
      (*view)->Scan("by_status", "", [](absl::string_view key, absl::string_view) {
        Say(absl::StrCat("     ", key));
        return true;
      });
  view->reset();
  if (!Check(scanned, "scanning")) return false;
  Say("   Revenue today (version 1 counts payments only): " + Revenue(**runner));

  Say("\n9. A payment arrives whose amount cannot be read. daily_revenue retries it,");
  Say("   then parks it in its dead-letter table instead of stopping:");
  rill::EventData bad;
  bad.type = "PaymentProcessed";
  bad.payload = R"({"amount_cents":"twelve"})";
  absl::StatusOr<rill::AppendResult> bad_at =
      store->Append(OrderService::StreamOf("E" + run), rill::ExpectedVersion::Any(), {bad});
  if (!Check(bad_at.status(), "appending") ||
      !Check((*runner)->WaitFor("daily_revenue", bad_at->last_position, absl::Seconds(10)),
             "waiting")) {
    return false;
  }
  absl::StatusOr<std::vector<rill::ParkedEvent>> parked = (*runner)->ListParked("daily_revenue");
  if (!Check(parked.status(), "listing parked events")) return false;
  for (const rill::ParkedEvent& p : *parked) {
    Say(absl::StrCat("   parked #", p.position, " ", p.type, " after ", p.attempts,
                     " attempts: ", p.error));
  }
  Say("   An operator looks at it and drops it; the projection never stopped.");
  for (const rill::ParkedEvent& p : *parked) {
    if (!Check((*runner)->DropParked("daily_revenue", p.position), "dropping")) return false;
  }

  Say("\n10. A new version of daily_revenue also subtracts refunds of cancelled orders.");
  Say("   Restarting with version 2 rebuilds it from the log, blue/green: version 1");
  Say("   keeps answering queries until version 2 has caught up, then they swap.");
  runner->reset();
  runner = StartRunner(store, 2);
  if (!Check(runner.status(), "restarting the projections")) return false;
  if (!WaitForVersion(**runner, 2, bad_at->last_position)) return false;
  Say("   Revenue today (version 2): " + Revenue(**runner));
  runner->reset();

  Say("\n11. A long-lived order with 1000 events loads from a snapshot.");
  rill::SnapshotPolicy policy;
  policy.every_n_events = 100;
  absl::StatusOr<std::unique_ptr<rill::SnapshotStore>> snapshots =
      rill::SnapshotStore::Open(store, policy);
  if (!Check(snapshots.status(), "opening snapshots")) return false;
  const std::string big = "F" + run;
  if (!Check(service.Create(big, 100, "request-" + big).status(), "creating")) return false;
  std::vector<rill::EventData> reservations(999);
  for (size_t i = 0; i < reservations.size(); ++i) {
    reservations[i].type = "InventoryReserved";
    reservations[i].payload = absl::StrCat(R"({"sku":"sku-)", i, R"(","quantity":1})");
  }
  if (!Check(
          store->Append(OrderService::StreamOf(big), rill::ExpectedVersion::Exact(0), reservations)
              .status(),
          "reserving")) {
    return false;
  }
  for (int load = 1; load <= 2; ++load) {
    absl::StatusOr<rill::LoadedAggregate<Order>> loaded =
        service.LoadWithSnapshots(snapshots->get(), big);
    if (!Check(loaded.status(), "loading from snapshots")) return false;
    Say(absl::StrCat("   load ", load, ": ",
                     loaded->from_snapshot
                         ? absl::StrCat("from the snapshot at version ", loaded->snapshot_version)
                         : std::string("from the first event"),
                     ", folded ", loaded->events_folded, " events -> ", loaded->state.reservations,
                     " reservations, version ", loaded->version,
                     loaded->snapshot_saved ? " (saved a snapshot)" : ""));
  }
  return true;
}

}  // namespace orders
