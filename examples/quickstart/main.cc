// The README's API example, compiled with the project so it stays true.
#include <iostream>

#include "rill/store.h"

int main(int argc, char** argv) {
  absl::StatusOr<std::unique_ptr<rill::Store>> store =
      rill::Store::Open(argc > 1 ? argv[1] : "/tmp/rill-quickstart");
  if (!store.ok()) {
    std::cerr << store.status() << "\n";
    return 1;
  }

  rill::EventData created;
  created.type = "OrderCreated";
  created.payload = R"({"order_id":"o-1","total_cents":4999})";
  rill::AppendOptions once;
  once.idempotency_key = "request-o-1";  // a retry of this request writes nothing
  absl::StatusOr<rill::AppendResult> appended =
      (*store)->Append("order-o-1", rill::ExpectedVersion::NoStream(), {created}, once);
  if (!appended.ok()) {
    std::cerr << appended.status() << "\n";  // e.g. ABORTED: wrong expected version
    return 1;
  }
  std::cout << "version " << appended->last_version << " at position " << appended->last_position
            << (appended->deduplicated ? " (already there)" : "") << "\n";

  absl::StatusOr<std::vector<rill::RecordedEvent>> events =
      (*store)->ReadStream("order-o-1", /*from_version=*/0);
  if (!events.ok()) return 1;
  for (const rill::RecordedEvent& e : *events) {
    std::cout << e.version << " " << e.type << " " << e.payload << "\n";
  }
  return 0;
}
