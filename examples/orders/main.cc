// The orders demo: a tour of rill in the words of a small orders service.
//
//   orders [STORE_DIR]
//
// Without STORE_DIR it uses a fresh temporary directory. Each step prints
// what it does and what the store answered.
#include <stdlib.h>

#include <filesystem>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "order.h"
#include "read_side.h"
#include "rill/store.h"

namespace {

void Say(const std::string& text) { std::cout << text << "\n"; }

std::string Describe(const rill::AppendResult& r) {
  return absl::StrCat("stream ", r.stream, " versions ", r.first_version, "..", r.last_version,
                      ", log positions ", r.first_position, "..", r.last_position,
                      r.deduplicated ? " (deduplicated: nothing was written)" : "");
}

// Exits with a message when a step that should work does not.
template <typename T>
T Must(absl::StatusOr<T> v, const std::string& what) {
  if (!v.ok()) {
    std::cerr << "error: " << what << ": " << v.status() << "\n";
    exit(1);
  }
  return *std::move(v);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  if (argc > 1) {
    dir = argv[1];
  } else {
    std::string tmpl = (std::filesystem::temp_directory_path() / "rill-orders-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      std::cerr << "error: cannot create a temporary directory\n";
      return 1;
    }
    dir = tmpl;
  }

  Say("== rill orders demo ==");
  std::unique_ptr<rill::Store> store = Must(rill::Store::Open(dir), "opening the store");
  Say(absl::StrCat("Opened the event store in ", dir, " (durable: every append is fsync'd)."));
  orders::OrderService service(store.get());
  const uint64_t start = Must(store->HeadPosition(), "reading the head");
  const std::string run = absl::StrCat(start);  // keeps ids unique when the dir is reused
  const std::string a = "A" + run, b = "B" + run;

  Say("\n1. A customer places order " + a + ". The request carries an idempotency key.");
  Say("   " + Describe(Must(service.Create(a, 4999, "request-" + a), "creating the order")));

  Say("\n2. The client timed out and sends the very same request again.");
  Say("   " + Describe(Must(service.Create(a, 4999, "request-" + a), "retrying")));
  Say("   The order exists once: the retry got the first answer back.");

  Say("\n3. The same key with a different request is refused, not silently merged:");
  absl::StatusOr<rill::AppendResult> misuse = service.Create(a, 1, "request-" + a);
  Say("   " + misuse.status().ToString());

  Say("\n4. The order goes through its life. Each step loads the order and appends");
  Say("   with the version it saw (an optimistic-concurrency check).");
  orders::Order order = Must(service.Load(a), "loading");
  Say("   " + Describe(Must(service.ReserveInventory(order, "sku-42", 2), "reserving")));
  order = Must(service.Load(a), "loading");
  Say("   " + Describe(Must(service.ProcessPayment(order), "paying")));
  order = Must(service.Load(a), "loading");
  Say("   " + Describe(Must(service.Fulfil(order), "fulfilling")));

  Say("\n5. Two clerks open order " + b + " at the same moment.");
  Must(service.Create(b, 1250, "request-" + b), "creating the second order");
  orders::Order clerk1 = Must(service.Load(b), "loading");
  orders::Order clerk2 = Must(service.Load(b), "loading");
  Say(absl::StrCat("   Both see it at version ", clerk1.version, ", status ",
                   orders::StatusName(clerk1.status), "."));
  Say("   Clerk 1 cancels it: " +
      Describe(Must(service.Cancel(clerk1, "customer called"), "cancelling")));
  absl::StatusOr<rill::AppendResult> stale = service.ReserveInventory(clerk2, "sku-7", 1);
  Say("   Clerk 2, still looking at the old version, tries to reserve inventory:");
  Say("   " + stale.status().ToString());
  Say(absl::StrCat("   Clerk 2 reloads: the order is ",
                   orders::StatusName(Must(service.Load(b), "reloading").status),
                   ", so nothing is reserved for a cancelled order."));

  Say("\n6. Reading order " + a + " back, event by event:");
  for (const rill::RecordedEvent& e :
       Must(store->ReadStream(orders::OrderService::StreamOf(a), 0), "reading")) {
    Say(absl::StrCat("   v", e.version, " @", e.position, "  ", e.type, "  ", e.payload));
  }
  orders::Order final_a = Must(service.Load(a), "loading");
  Say(absl::StrCat("   Folded state: ", orders::StatusName(final_a.status), ", total ",
                   final_a.total_cents / 100, ".", final_a.total_cents % 100 / 10,
                   final_a.total_cents % 10));

  Say("\n7. A subscription catches up on the whole log, then follows it live.");
  absl::Mutex mu;
  uint64_t seen = 0;
  bool live = false;
  rill::SubscriptionOptions sub_options;
  sub_options.on_live = [&] {
    absl::MutexLock lock(&mu);
    live = true;
  };
  std::unique_ptr<rill::Subscription> sub =
      Must(store->Subscribe(start, sub_options,
                            [&](const rill::EventView& e) {
                              std::cout << "   [subscriber] #" << e.position() << " " << e.type()
                                        << " on " << e.stream() << "\n";
                              absl::MutexLock lock(&mu);
                              seen = e.position();
                              return absl::OkStatus();
                            }),
           "subscribing");
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(&live));
  }
  Say("   [subscriber] caught up; now live. A new order arrives:");
  rill::AppendResult c =
      Must(service.Create("C" + run, 800, "request-C" + run), "creating a third order");
  {
    absl::MutexLock lock(&mu);
    auto arrived = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return seen >= c.last_position; };
    if (!mu.AwaitWithTimeout(absl::Condition(&arrived), absl::Seconds(10))) {
      std::cerr << "error: the subscriber did not see the new event\n";
      return 1;
    }
  }
  sub->Stop();
  Say("   The subscriber saw it the moment it was committed, then stopped cleanly.");

  if (!orders::RunReadSideTour(store.get(), run)) return 1;

  rill::StoreStats stats = Must(store->Stats(), "reading stats");
  Say(absl::StrCat("\nThe store now holds ", stats.event_count, " events in ", stats.stream_count,
                   " streams (head position ", stats.head_position, "), ", stats.file_bytes,
                   " bytes on disk, in ", dir, "."));
  return 0;
}
