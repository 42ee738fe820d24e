// Uses both installed libraries: appends with rill::engine, counts the events
// in a read model with rill::projections, and prints the count.
// Usage: consumer STORE_DIR
#include <iostream>
#include <memory>
#include <string>

#include "rill/projection.h"
#include "rill/store.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: consumer STORE_DIR\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<rill::Store>> store = rill::Store::Open(argv[1]);
  if (!store.ok()) {
    std::cerr << store.status() << "\n";
    return 1;
  }
  rill::EventData e;
  e.type = "Counted";
  e.payload = "{}";
  absl::StatusOr<rill::AppendResult> r =
      (*store)->Append("counter-1", rill::ExpectedVersion::Any(), {e, e, e});
  if (!r.ok()) {
    std::cerr << r.status() << "\n";
    return 1;
  }
  rill::ProjectionDef count;
  count.name = "count";
  count.tables = {"totals"};
  count.apply = [](const rill::EventView&, rill::ReadModelTxn& txn) -> absl::Status {
    absl::StatusOr<std::optional<std::string>> n = txn.Get("totals", "events");
    if (!n.ok()) return n.status();
    const int next = (n->has_value() ? std::stoi(**n) : 0) + 1;
    return txn.Put("totals", "events", std::to_string(next));
  };
  absl::StatusOr<std::unique_ptr<rill::ProjectionRunner>> runner =
      rill::ProjectionRunner::Start(store->get(), {count});
  if (!runner.ok()) {
    std::cerr << runner.status() << "\n";
    return 1;
  }
  if (absl::Status s = (*runner)->WaitFor("count", r->last_position, absl::Seconds(30)); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  absl::StatusOr<std::unique_ptr<rill::ReadModelView>> view = (*runner)->View("count");
  if (!view.ok()) return 1;
  absl::StatusOr<std::optional<std::string>> n = (*view)->Get("totals", "events");
  if (!n.ok() || !n->has_value()) return 1;
  std::cout << "events counted: " << **n << "\n";
  return 0;
}
