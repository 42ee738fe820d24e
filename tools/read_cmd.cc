// rill read, rill read-all, rill tail.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common.h"
#include "event_json.h"

namespace rill::tool {
namespace {

// Prints one event in the chosen form; false when stdout is gone.
bool PrintEvent(const EventView& e, bool json) {
  return PrintLine(json ? EventJsonLine(e) : EventText(e));
}

struct ReadArgs {
  std::string store;
  std::string stream;
  int64_t from = -1;  // -1: the start (or the end, backwards)
  bool backward = false;
  size_t limit = 0;
  bool json = false;
};

int RunRead(const ReadArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kRead);
  if (!store.ok()) return Fail(store.status());
  ReadOptions options;
  options.direction = args.backward ? Direction::kBackward : Direction::kForward;
  if (args.limit > 0) options.limit = args.limit;
  const int64_t from = args.from >= 0 ? args.from : (args.backward ? kStreamEnd : 0);
  absl::Status s = (*store)->ScanStream(
      args.stream, from, options, [&](const EventView& e) { return PrintEvent(e, args.json); });
  if (s.code() == absl::StatusCode::kNotFound) {
    return Fail(
        absl::NotFoundError(absl::StrCat("no stream \"", args.stream, "\" in ", args.store)),
        "`rill streams STORE` lists the streams");
  }
  if (!s.ok()) return Fail(s);
  return kExitOk;
}

struct ReadAllArgs {
  std::string store;
  uint64_t from = 0;  // 0: the start (or the head, backwards)
  std::vector<std::string> types;
  std::string prefix;
  bool backward = false;
  size_t limit = 0;
  bool json = false;
};

int RunReadAll(const ReadAllArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kRead);
  if (!store.ok()) return Fail(store.status());
  ReadOptions options;
  options.direction = args.backward ? Direction::kBackward : Direction::kForward;
  if (args.limit > 0) options.limit = args.limit;
  options.filter.types = args.types;
  options.filter.stream_prefix = args.prefix;
  const uint64_t from = args.from > 0 ? args.from : (args.backward ? kLogEnd : 1);
  absl::Status s = (*store)->ScanAll(from, options,
                                     [&](const EventView& e) { return PrintEvent(e, args.json); });
  if (!s.ok()) return Fail(s);
  return kExitOk;
}

struct TailArgs {
  std::string store;
  uint64_t from = 0;  // 0: only events committed from now on
  std::vector<std::string> types;
  std::string prefix;
  bool json = false;
};

int RunTail(const TailArgs& args) {
  // Block the stop signals in every thread (the subscription's inherits the
  // mask); this thread takes them with sigtimedwait.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kRead);
  if (!store.ok()) return Fail(store.status());
  uint64_t after;
  if (args.from > 0) {
    after = args.from - 1;
  } else {
    absl::StatusOr<uint64_t> head = (*store)->HeadPosition();
    if (!head.ok()) return Fail(head.status());
    after = *head;
  }
  SubscriptionOptions options;
  options.filter.types = args.types;
  options.filter.stream_prefix = args.prefix;
  options.poll_interval = absl::Milliseconds(20);
  const bool json = args.json;
  absl::StatusOr<std::unique_ptr<Subscription>> sub =
      (*store)->Subscribe(after, options, [json](const EventView& e) {
        if (!PrintEvent(e, json)) return absl::CancelledError("stdout is closed");
        return absl::OkStatus();
      });
  if (!sub.ok()) return Fail(sub.status());
  const timespec tick{0, 200 * 1000 * 1000};
  while ((*sub)->running()) {
    if (sigtimedwait(&stop, nullptr, &tick) > 0) break;
  }
  (*sub)->Stop();
  absl::Status s = (*sub)->status();
  if (s.code() == absl::StatusCode::kCancelled) return kExitOk;
  if (!s.ok()) return Fail(s);
  return kExitOk;
}

}  // namespace

void AddReadCommands(CLI::App& app, Action* action) {
  auto r = std::make_shared<ReadArgs>();
  CLI::App* read = app.add_subcommand(
      "read", "Events of one stream with version, position, type, time, metadata and payload");
  read->add_option("STORE", r->store, "store directory")->required();
  read->add_option("STREAM", r->stream, "stream name")->required();
  read->add_option("--from", r->from,
                   "first stream version to read (default: the first, or "
                   "the last with --backward)")
      ->check(CLI::NonNegativeNumber);
  read->add_flag("--backward", r->backward, "newest first");
  read->add_option("--limit", r->limit, "at most N events (0: all)");
  read->add_flag("--json", r->json, "JSON lines, one event per line");
  read->footer("Example:\n  rill read /var/lib/orders order-o-1 --backward --limit 5");
  read->callback([r, action] { *action = [r] { return RunRead(*r); }; });

  auto a = std::make_shared<ReadAllArgs>();
  CLI::App* read_all = app.add_subcommand("read-all", "Events of the whole log in position order");
  read_all->add_option("STORE", a->store, "store directory")->required();
  read_all->add_option("--from", a->from,
                       "first position to read (default: 1, or the head "
                       "with --backward)");
  read_all->add_option("--type", a->types, "only events of this type (repeatable)");
  read_all->add_option("--prefix", a->prefix, "only streams whose names start with P");
  read_all->add_flag("--backward", a->backward, "newest first");
  read_all->add_option("--limit", a->limit, "at most N events (0: all)");
  read_all->add_flag("--json", a->json, "JSON lines, one event per line");
  read_all->footer(
      "Example:\n  rill read-all /var/lib/orders --type OrderPaid --prefix order- --json");
  read_all->callback([a, action] { *action = [a] { return RunReadAll(*a); }; });

  auto t = std::make_shared<TailArgs>();
  CLI::App* tail =
      app.add_subcommand("tail", "Follow new events live until interrupted (Ctrl-C exits cleanly)");
  tail->add_option("STORE", t->store, "store directory")->required();
  tail->add_option("--from", t->from, "start at this position (default: only new events)");
  tail->add_option("--type", t->types, "only events of this type (repeatable)");
  tail->add_option("--prefix", t->prefix, "only streams whose names start with P");
  tail->add_flag("--json", t->json, "JSON lines, one event per line");
  tail->footer("Example:\n  rill tail /var/lib/orders --prefix order- --json");
  tail->callback([t, action] { *action = [t] { return RunTail(*t); }; });
}

}  // namespace rill::tool
