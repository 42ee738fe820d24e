// torture_child: the process the crash torture (torture_test.cc) kills. It
// appends durably from several threads while a ProjectionRunner follows the
// log, and acknowledges every append that returned OK, until it is killed.
//
// Usage: torture_child key=value ...
//   dir=D         store directory (required)
//   ack=F         acknowledgement file, appended to (required)
//   violations=F  where broken in-process promises are written (required)
//   threads=T     single-stream appenders (3): thread t appends to its own
//                 streams "tort-t<t>-s<k>" with NoStream/Exact expected
//                 versions and the idempotency key "<stream>@<first version>"
//   streams=S     streams per appender (6)
//   multi=1|0     one more thread doing AppendMulti over 2..3 of the streams
//                 "tort-m-s<k>" (k < 6), key "mult@<first stream>@<version>";
//                 one request in eight carries a wrong expected version on
//                 purpose and must be Aborted and write nothing (1)
//   max_pad=B     payload padding, 0..B-1 bytes (200)
//   map=BYTES     StoreOptions.initial_map_size and map_growth_step (0: the
//                 defaults); small values make kills land during map growth
//   seed=X        random seed (1)
//   durability=durable|nosync
//                 StoreOptions.durability (durable); nosync is
//                 Durability::kNoSyncUnsafe, for the power-cut harness to
//                 show that it catches what that mode loses
//   ack_sync=1|0  fdatasync the acknowledgement file after each line (0)
//   snapshots=1|0 one more thread saving snapshots (SnapshotDigest) of the
//                 first appender's streams (0)
//
// Every appender now and then retries its last acknowledged request with the
// same key, which must come back deduplicated with the same result. A broken
// promise seen in-process is written to `violations` (the driver fails on
// it). Prints "ready" on stdout once the store is open and the projections
// run; acknowledgements are single write(2)s after the call returned (see
// child_protocol.h). Exit code 2 on bad usage, 3 when the store cannot be
// opened; otherwise it runs until killed.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "child_protocol.h"
#include "children/child_args.h"
#include "rill/projection.h"
#include "rill/snapshot.h"
#include "rill/store.h"
#include "torture_protocol.h"

namespace rill::testing {
namespace {

struct Config {
  std::string dir;
  std::string ack;
  std::string violations;
  int threads = 3;
  int streams = 6;
  bool multi = true;
  size_t max_pad = 200;
  size_t map = 0;
  uint64_t seed = 1;
  std::string durability = "durable";
  bool ack_sync = false;
  bool snapshots = false;
};

bool ParseArgs(int argc, char** argv, Config* c) {
  ChildArgs args;
  args.String("dir", &c->dir);
  args.String("ack", &c->ack);
  args.String("violations", &c->violations);
  args.Number("threads", &c->threads);
  args.Number("streams", &c->streams);
  args.Flag("multi", &c->multi);
  args.Number("max_pad", &c->max_pad);
  args.Number("map", &c->map);
  args.Number("seed", &c->seed);
  args.String("durability", &c->durability);
  args.Flag("ack_sync", &c->ack_sync);
  args.Flag("snapshots", &c->snapshots);
  return args.Parse(argc, argv) && !c->dir.empty() && !c->ack.empty() && !c->violations.empty() &&
         c->threads >= 0 && c->streams > 0 &&
         (c->durability == "durable" || c->durability == "nosync");
}

// Appends whole lines to a file with one write(2) each (and an fdatasync
// after it when `sync`).
class LineFile {
 public:
  explicit LineFile(const std::string& path, bool sync = false)
      : sync_(sync), fd_(open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) {}
  ~LineFile() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  bool Write(const std::string& line) {
    absl::MutexLock lock(&mu_);
    size_t done = 0;
    while (done < line.size()) {
      const ssize_t n = write(fd_, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return !sync_ || fdatasync(fd_) == 0;
  }

 private:
  absl::Mutex mu_;
  const bool sync_;
  const int fd_;
};

LineFile* violations = nullptr;

void Violation(const std::string& what) {
  violations->Write(absl::StrCat(what, "\n"));
  fprintf(stderr, "torture_child: %s\n", what.c_str());
}

bool SameResult(const AppendResult& a, const AppendResult& b) {
  return a.stream == b.stream && a.first_version == b.first_version &&
         a.last_version == b.last_version && a.first_position == b.first_position &&
         a.last_position == b.last_position;
}

void RunSingle(const Config& c, Store* store, LineFile* acks, int t) {
  const std::string writer = absl::StrCat("w-t", t);
  std::vector<std::string> streams;
  std::vector<int64_t> next;
  for (int k = 0; k < c.streams; ++k) {
    streams.push_back(absl::StrCat("tort-t", t, "-s", k));
    absl::StatusOr<StreamInfo> info = store->GetStreamInfo(streams.back());
    if (!info.ok()) return Violation("GetStreamInfo: " + info.status().ToString());
    next.push_back(info->exists ? info->last_version + 1 : 0);
  }
  std::mt19937_64 rng(c.seed * 1000003 + t);
  std::optional<std::pair<AckRecord, std::vector<EventData>>> last;
  for (;;) {
    if (last.has_value() && rng() % 16 == 0) {
      AppendOptions options;
      options.idempotency_key = last->first.key;
      absl::StatusOr<AppendResult> r = store->Append(
          last->first.stream, ChildExpected(last->first.first_version), last->second, options);
      if (!r.ok() || !r->deduplicated || r->first_position != last->first.first_position ||
          r->last_position != last->first.last_position ||
          r->first_version != last->first.first_version) {
        return Violation(absl::StrCat("live retry of ", last->first.key, ": ",
                                      r.ok() ? "wrong result" : r.status().ToString()));
      }
    }
    const int k = static_cast<int>(rng() % streams.size());
    const int n = 1 + static_cast<int>(rng() % 3);
    const int64_t first = next[k];
    std::vector<EventData> events =
        ChildEvents(streams[k], first, first + n - 1, writer, c.max_pad);
    AppendOptions options;
    options.idempotency_key = absl::StrCat(streams[k], "@", first);
    absl::StatusOr<AppendResult> r =
        store->Append(streams[k], ChildExpected(first), events, options);
    if (!r.ok())
      return Violation(
          absl::StrCat("Append ", options.idempotency_key, ": ", r.status().ToString()));
    if (r->deduplicated || r->first_version != first || r->last_version != first + n - 1 ||
        r->last_position != r->first_position + n - 1) {
      return Violation(absl::StrCat("Append ", options.idempotency_key, ": wrong result"));
    }
    AckRecord a{options.idempotency_key, streams[k],        writer,           r->first_version,
                r->last_version,         r->first_position, r->last_position, false};
    if (!acks->Write(FormatAck(a))) return Violation("writing the ack file failed");
    next[k] = first + n;
    last.emplace(std::move(a), std::move(events));
  }
}

void RunMulti(const Config& c, Store* store, LineFile* acks) {
  const std::string writer = "w-m";
  constexpr int kStreams = 6;
  std::vector<std::string> streams;
  std::vector<int64_t> next;
  for (int k = 0; k < kStreams; ++k) {
    streams.push_back(absl::StrCat(kMultiPrefix, "s", k));
    absl::StatusOr<StreamInfo> info = store->GetStreamInfo(streams.back());
    if (!info.ok()) return Violation("GetStreamInfo: " + info.status().ToString());
    next.push_back(info->exists ? info->last_version + 1 : 0);
  }
  std::mt19937_64 rng(c.seed * 1000003 + 999);
  std::optional<std::pair<MultiAck, std::vector<StreamAppend>>> last;
  for (;;) {
    if (last.has_value() && rng() % 16 == 0) {
      AppendOptions options;
      options.idempotency_key = last->first.key;
      absl::StatusOr<std::vector<AppendResult>> r = store->AppendMulti(last->second, options);
      bool same = r.ok() && r->size() == last->first.parts.size();
      for (size_t i = 0; same && i < r->size(); ++i) {
        same = (*r)[i].deduplicated && SameResult((*r)[i], last->first.parts[i]);
      }
      if (!same) {
        return Violation(absl::StrCat("live retry of ", last->first.key, ": ",
                                      r.ok() ? "wrong result" : r.status().ToString()));
      }
    }
    // 2..3 distinct streams in random order, 1..3 events each.
    std::vector<int> picks = {0, 1, 2, 3, 4, 5};
    std::shuffle(picks.begin(), picks.end(), rng);
    picks.resize(2 + rng() % 2);
    const bool wrong = rng() % 8 == 0;
    std::vector<StreamAppend> request;
    for (int k : picks) {
      const int n = 1 + static_cast<int>(rng() % 3);
      request.push_back(
          StreamAppend{streams[k], ChildExpected(next[k]),
                       ChildEvents(streams[k], next[k], next[k] + n - 1, writer, c.max_pad)});
    }
    if (wrong) request.back().expected = ExpectedVersion::Exact(next[picks.back()] + 5);
    AppendOptions options;
    options.idempotency_key = absl::StrCat("mult@", streams[picks[0]], "@", next[picks[0]]);
    absl::StatusOr<std::vector<AppendResult>> r = store->AppendMulti(request, options);
    if (wrong) {
      if (r.status().code() != absl::StatusCode::kAborted) {
        return Violation(absl::StrCat("AppendMulti with a wrong expected version: ",
                                      r.ok() ? "succeeded" : r.status().ToString()));
      }
      for (int k : picks) {
        absl::StatusOr<StreamInfo> info = store->GetStreamInfo(streams[k]);
        if (!info.ok() || info->last_version != next[k] - 1) {
          return Violation(absl::StrCat("a rejected AppendMulti wrote to ", streams[k]));
        }
      }
      continue;  // the key was not used up: the next request may take it
    }
    if (!r.ok())
      return Violation(
          absl::StrCat("AppendMulti ", options.idempotency_key, ": ", r.status().ToString()));
    MultiAck m{options.idempotency_key, writer, {}};
    uint64_t expect_pos = (*r)[0].first_position;
    for (size_t i = 0; i < r->size(); ++i) {
      const AppendResult& part = (*r)[i];
      const int64_t n = static_cast<int64_t>(request[i].events.size());
      if (part.deduplicated || part.stream != request[i].stream ||
          part.first_version != next[picks[i]] || part.last_version != next[picks[i]] + n - 1 ||
          part.first_position != expect_pos || part.last_position != part.first_position + n - 1) {
        return Violation(absl::StrCat("AppendMulti ", options.idempotency_key,
                                      ": wrong result for ", part.stream));
      }
      expect_pos = part.last_position + 1;
      next[picks[i]] = part.last_version + 1;
      m.parts.push_back(part);
    }
    if (!acks->Write(FormatMultiAck(m))) return Violation("writing the ack file failed");
    last.emplace(std::move(m), std::move(request));
  }
}

// Saves snapshots of the first appender's streams: each the digest of the
// stream's events up to its last version, read just before.
void RunSnapshots(const Config& c, Store* store) {
  absl::StatusOr<std::unique_ptr<SnapshotStore>> snapshots = SnapshotStore::Open(store);
  if (!snapshots.ok()) return Violation("SnapshotStore::Open: " + snapshots.status().ToString());
  std::mt19937_64 rng(c.seed * 1000003 + 777);
  for (;;) {
    absl::SleepFor(absl::Milliseconds(5));
    const std::string stream = absl::StrCat("tort-t0-s", rng() % c.streams);
    absl::StatusOr<std::vector<RecordedEvent>> events = store->ReadStream(stream, 0);
    if (events.status().code() == absl::StatusCode::kNotFound) continue;
    if (!events.ok()) return Violation("ReadStream: " + events.status().ToString());
    const int64_t version = events->back().version;
    if (absl::Status s =
            (*snapshots)->Save(stream, version, kSnapshotSchema, SnapshotDigest(*events));
        !s.ok()) {
      return Violation("Save: " + s.ToString());
    }
  }
}

int Main(int argc, char** argv) {
  Config c;
  if (!ParseArgs(argc, argv, &c)) {
    fprintf(stderr, "torture_child: bad arguments\n");
    return 2;
  }
  LineFile acks(c.ack, c.ack_sync);
  LineFile broken(c.violations);
  if (!acks.ok() || !broken.ok()) {
    perror("torture_child: open");
    return 3;
  }
  violations = &broken;
  StoreOptions options;
  if (c.map != 0) {
    options.initial_map_size = c.map;
    options.map_growth_step = c.map;
  }
  if (c.durability == "nosync") options.durability = Durability::kNoSyncUnsafe;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(c.dir, options);
  if (!store.ok()) {
    fprintf(stderr, "torture_child: Open: %s\n", store.status().ToString().c_str());
    return 3;
  }
  RunnerOptions runner_options;
  runner_options.batch_size = 64;
  runner_options.poll_interval = absl::Milliseconds(10);
  absl::StatusOr<std::unique_ptr<ProjectionRunner>> runner =
      ProjectionRunner::Start(store->get(), TortureProjections(), runner_options);
  if (!runner.ok()) {
    fprintf(stderr, "torture_child: ProjectionRunner::Start: %s\n",
            runner.status().ToString().c_str());
    return 3;
  }
  // The appenders and the checker run until the process is killed.
  std::vector<std::thread> threads;
  for (int t = 0; t < c.threads; ++t) {
    threads.emplace_back([&, t] { RunSingle(c, store->get(), &acks, t); });
  }
  if (c.multi) threads.emplace_back([&] { RunMulti(c, store->get(), &acks); });
  if (c.snapshots && c.threads > 0) threads.emplace_back([&] { RunSnapshots(c, store->get()); });
  threads.emplace_back([&] {
    // The ledger holds its invariants in every snapshot a reader can see.
    for (;;) {
      absl::StatusOr<std::unique_ptr<ReadModelView>> view = (*runner)->View(kLedger);
      if (!view.ok()) return Violation("View: " + view.status().ToString());
      const std::string what = CheckLedgerView(**view);
      if (!what.empty()) return Violation(what);
      view->reset();
      absl::SleepFor(absl::Milliseconds(5));
    }
  });
  printf("ready\n");
  fflush(stdout);
  for (std::thread& th : threads) th.join();
  // Only reached when every thread stopped on a violation.
  for (;;) pause();
}

}  // namespace
}  // namespace rill::testing

int main(int argc, char** argv) { return rill::testing::Main(argc, argv); }
