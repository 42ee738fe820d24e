// reader_child: a process that follows a store another process appends to,
// and checks that everything it ever sees is a consistent prefix of the log.
//
// Usage: reader_child key=value ...
//   dir=D          store directory (required)
//   final=N        run until the head position N has been read (required)
//   mode=read      pages through ReadAll, waiting with WaitForHead;
//   mode=subscribe follows a Subscribe(0, ...) subscription
//   read_only=1|0  open the store read-only (1)
//   map=BYTES      StoreOptions.initial_map_size (the default)
//   timeout_s=S    give up after S seconds (60)
//
// Checks, on every event seen: positions 1, 2, 3, ... with no gap and no
// repeat; each stream's versions 0, 1, 2, ...; payloads written with
// child_protocol.h match their stream and version. In mode=read it also
// checks that HeadPosition never goes back and that ReadStream agrees with
// ReadAll on where each version is. Prints "ready" once the store is open and
// "ok <events>" at the end. Exit code 0 when every check passed, 2 on bad
// usage, 3 on a failed check or error, 4 on timeout.
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "child_args.h"
#include "child_protocol.h"
#include "rill/store.h"

namespace rill::testing {
namespace {

struct Config {
  std::string dir;
  uint64_t final_head = 0;
  std::string mode = "read";
  bool read_only = true;
  size_t map = 0;
  int timeout_s = 60;
};

bool ParseArgs(int argc, char** argv, Config* c) {
  ChildArgs args;
  args.String("dir", &c->dir);
  args.Number("final", &c->final_head);
  args.String("mode", &c->mode);
  args.Flag("read_only", &c->read_only);
  args.Number("map", &c->map);
  args.Number("timeout_s", &c->timeout_s);
  return args.Parse(argc, argv) && !c->dir.empty() && args.Given("final") &&
         (c->mode == "read" || c->mode == "subscribe");
}

// Everything seen so far; Check() returns an error text for an event that
// does not continue it consistently.
class PrefixChecker {
 public:
  std::string Check(uint64_t position, absl::string_view stream, int64_t version,
                    absl::string_view payload) {
    if (position != next_position_) {
      return absl::StrCat("position ", position, " where ", next_position_, " was expected");
    }
    std::vector<uint64_t>& positions = streams_[std::string(stream)];
    if (version != static_cast<int64_t>(positions.size())) {
      return absl::StrCat("stream ", stream, " version ", version, " where ", positions.size(),
                          " was expected");
    }
    if (!absl::StartsWith(payload, ChildPayloadPrefix(stream, version))) {
      return absl::StrCat("payload of ", stream, "@", version, " is ", payload);
    }
    positions.push_back(position);
    ++next_position_;
    return "";
  }

  uint64_t next_position() const { return next_position_; }
  const std::map<std::string, std::vector<uint64_t>>& streams() const { return streams_; }

 private:
  uint64_t next_position_ = 1;
  std::map<std::string, std::vector<uint64_t>> streams_;
};

int Fail(const std::string& what) {
  fprintf(stderr, "reader_child: %s\n", what.c_str());
  return 3;
}

// Checks that ReadStream shows `stream` with versions 0.. at the positions
// the checker recorded from ReadAll (a later version may have been added).
int CheckStream(Store* store, const std::string& stream, const std::vector<uint64_t>& positions) {
  absl::StatusOr<std::vector<RecordedEvent>> events = store->ReadStream(stream, 0);
  if (!events.ok()) return Fail(absl::StrCat("ReadStream: ", events.status().ToString()));
  if (events->size() < positions.size()) {
    return Fail(absl::StrCat("ReadStream ", stream, " returned ", events->size(),
                             " events, ReadAll showed ", positions.size()));
  }
  for (size_t v = 0; v < events->size(); ++v) {
    const RecordedEvent& e = (*events)[v];
    if (e.version != static_cast<int64_t>(v) || e.stream != stream) {
      return Fail(absl::StrCat("ReadStream ", stream, " has version ", e.version, " at index ", v));
    }
    if (v < positions.size() && e.position != positions[v]) {
      return Fail(absl::StrCat("ReadStream ", stream, "@", v, " at position ", e.position,
                               ", ReadAll had it at ", positions[v]));
    }
  }
  return 0;
}

int RunRead(const Config& c, Store* store) {
  PrefixChecker checker;
  std::mt19937_64 rng(42);
  const absl::Time deadline = absl::Now() + absl::Seconds(c.timeout_s);
  uint64_t last_head = 0;
  while (checker.next_position() <= c.final_head) {
    if (absl::Now() > deadline) {
      fprintf(stderr, "reader_child: timeout at position %llu\n",
              static_cast<unsigned long long>(checker.next_position()));
      return 4;
    }
    absl::StatusOr<uint64_t> head =
        store->WaitForHead(checker.next_position() - 1, absl::Seconds(1), absl::Milliseconds(5));
    if (!head.ok()) return Fail(absl::StrCat("WaitForHead: ", head.status().ToString()));
    if (*head < last_head) {
      return Fail(absl::StrCat("head went back from ", last_head, " to ", *head));
    }
    last_head = *head;
    if (*head < checker.next_position()) continue;
    ReadOptions options;
    options.limit = 1 + rng() % 300;
    absl::StatusOr<std::vector<RecordedEvent>> events =
        store->ReadAll(checker.next_position(), options);
    if (!events.ok()) return Fail(absl::StrCat("ReadAll: ", events.status().ToString()));
    if (events->empty()) {
      return Fail(
          absl::StrCat("ReadAll(", checker.next_position(), ") returned nothing, head is ", *head));
    }
    for (const RecordedEvent& e : *events) {
      const std::string error = checker.Check(e.position, e.stream, e.version, e.payload);
      if (!error.empty()) return Fail(error);
    }
    // Now and then, cross-check a stream's index against what ReadAll showed.
    if (rng() % 8 == 0 && !checker.streams().empty()) {
      auto it = checker.streams().begin();
      std::advance(it, rng() % checker.streams().size());
      if (int rc = CheckStream(store, it->first, it->second); rc != 0) return rc;
    }
  }
  if (checker.next_position() != c.final_head + 1) {
    return Fail(absl::StrCat("read up to ", checker.next_position() - 1, ", past the final head ",
                             c.final_head));
  }
  printf("ok %llu\n", static_cast<unsigned long long>(checker.next_position() - 1));
  return 0;
}

int RunSubscribe(const Config& c, Store* store) {
  absl::Mutex mu;
  PrefixChecker checker;
  std::string error;
  SubscriptionOptions options;
  options.poll_interval = absl::Milliseconds(5);
  options.batch_size = 100;
  absl::StatusOr<std::unique_ptr<Subscription>> sub =
      store->Subscribe(0, options, [&](const EventView& e) {
        absl::MutexLock lock(&mu);
        if (error.empty()) {
          error = checker.Check(e.position(), e.stream(), e.version(), e.payload());
        }
        return absl::OkStatus();
      });
  if (!sub.ok()) return Fail(absl::StrCat("Subscribe: ", sub.status().ToString()));
  bool done;
  {
    absl::MutexLock lock(&mu);
    auto finished = [&] {
      mu.AssertHeld();
      return !error.empty() || checker.next_position() > c.final_head;
    };
    done = mu.AwaitWithTimeout(absl::Condition(&finished), absl::Seconds(c.timeout_s));
  }
  const absl::Status status = (*sub)->status();
  (*sub)->Stop();
  absl::MutexLock lock(&mu);
  if (!error.empty()) return Fail(error);
  if (!status.ok()) return Fail(absl::StrCat("subscription ended: ", status.ToString()));
  if (!done) {
    fprintf(stderr, "reader_child: timeout at position %llu\n",
            static_cast<unsigned long long>(checker.next_position()));
    return 4;
  }
  if (checker.next_position() != c.final_head + 1) {
    return Fail(absl::StrCat("saw up to ", checker.next_position() - 1, ", past the final head ",
                             c.final_head));
  }
  printf("ok %llu\n", static_cast<unsigned long long>(checker.next_position() - 1));
  return 0;
}

int Main(int argc, char** argv) {
  Config c;
  if (!ParseArgs(argc, argv, &c)) {
    fprintf(stderr, "reader_child: bad arguments\n");
    return 2;
  }
  StoreOptions options;
  options.read_only = c.read_only;
  options.create_if_missing = false;
  if (c.map != 0) options.initial_map_size = c.map;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(c.dir, options);
  if (!store.ok()) return Fail(absl::StrCat("Open: ", store.status().ToString()));
  printf("ready\n");
  fflush(stdout);
  const int rc = c.mode == "read" ? RunRead(c, store->get()) : RunSubscribe(c, store->get());
  fflush(stdout);
  return rc;
}

}  // namespace
}  // namespace rill::testing

int main(int argc, char** argv) { return rill::testing::Main(argc, argv); }
