// append_child: a process that appends to a store from several threads and
// acknowledges every append that returned OK, for crash and multi-process
// tests.
//
// Usage: append_child key=value ...
//   dir=D          store directory (required)
//   ack=F          acknowledgement file, appended to (required)
//   threads=T      appending threads (4)
//   mode=own       each thread appends to its own `streams` streams
//                  "<prefix>-t<t>-s<k>" with Exact expected versions, read from
//                  the store at start (so a child continues where a killed
//                  one stopped);
//   mode=contend   all threads (and other processes with the same prefix)
//                  append to "<prefix>-shared" with Exact(last version just
//                  read), retrying on Aborted;
//   streams=S      streams per thread in mode=own (8)
//   prefix=P       stream name prefix ("crash")
//   writer=W       writer name; thread t writes as "<W>-t<t>" ("w")
//   appends=N      successful appends per thread, 0 = until killed (0)
//   max_events=E   events per append, 1..E (3)
//   max_pad=B      payload padding, 0..B-1 bytes (200)
//   keys=1|0       use idempotency keys (1)
//   map=BYTES      StoreOptions.initial_map_size (the default)
//   durability=durable|nosync  StoreOptions.durability (durable)
//   seed=X         random seed (1)
//
// Protocol (see child_protocol.h): prints "ready" on stdout once the store is
// open, one ack line per successful append to the ack file (a single write(2)
// after Append returned, so a SIGKILL can only lose the line of an append in
// flight, never announce one that did not return), and "done <acks>
// <conflicts>" on stdout at the end. Exit code 0 on success, 2 on bad usage,
// 3 when an append or read failed unexpectedly.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "child_args.h"
#include "child_protocol.h"
#include "rill/store.h"

namespace rill::testing {
namespace {

struct Config {
  std::string dir;
  std::string ack;
  int threads = 4;
  std::string mode = "own";
  int streams = 8;
  std::string prefix = "crash";
  std::string writer = "w";
  int64_t appends = 0;
  int max_events = 3;
  size_t max_pad = 200;
  bool keys = true;
  size_t map = 0;
  bool nosync = false;
  uint64_t seed = 1;
};

bool ParseArgs(int argc, char** argv, Config* c) {
  ChildArgs args;
  args.String("dir", &c->dir);
  args.String("ack", &c->ack);
  args.Number("threads", &c->threads);
  args.String("mode", &c->mode);
  args.Number("streams", &c->streams);
  args.String("prefix", &c->prefix);
  args.String("writer", &c->writer);
  args.Number("appends", &c->appends);
  args.Number("max_events", &c->max_events);
  args.Number("max_pad", &c->max_pad);
  args.Flag("keys", &c->keys);
  args.Number("map", &c->map);
  args.Custom("durability", [c](const std::string& v) {
    c->nosync = v == "nosync";
    return v == "nosync" || v == "durable";
  });
  args.Number("seed", &c->seed);
  return args.Parse(argc, argv) && !c->dir.empty() && !c->ack.empty() && c->threads > 0 &&
         c->streams > 0 && c->max_events > 0 && (c->mode == "own" || c->mode == "contend");
}

class AckWriter {
 public:
  explicit AckWriter(int fd) : fd_(fd) {}

  bool Write(const AckRecord& ack) {
    const std::string line = FormatAck(ack);
    absl::MutexLock lock(&mu_);
    size_t done = 0;
    while (done < line.size()) {
      const ssize_t n = write(fd_, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    // No fsync: the test kills this process, it does not crash the machine,
    // and a written line survives SIGKILL in the page cache.
    return true;
  }

 private:
  absl::Mutex mu_;
  const int fd_;
};

std::atomic<bool> failed{false};

void Fail(const std::string& what) {
  fprintf(stderr, "append_child: %s\n", what.c_str());
  failed = true;
}

AckRecord MakeAck(const std::string& key, const std::string& writer, const AppendResult& r) {
  AckRecord a;
  a.key = key;
  a.stream = r.stream;
  a.writer = writer;
  a.first_version = r.first_version;
  a.last_version = r.last_version;
  a.first_position = r.first_position;
  a.last_position = r.last_position;
  a.deduplicated = r.deduplicated;
  return a;
}

// Checks what Append returned against what was asked.
bool ResultMatches(const AppendResult& r, absl::string_view stream, int64_t first_version, int n) {
  return r.stream == stream && r.first_version == first_version &&
         r.last_version == first_version + n - 1 &&
         r.last_position == r.first_position + static_cast<uint64_t>(n) - 1 &&
         r.first_position >= 1 && !r.deduplicated;
}

void RunOwn(const Config& c, Store* store, AckWriter* acks, int t,
            std::atomic<int64_t>* total_acks) {
  const std::string writer = absl::StrCat(c.writer, "-t", t);
  std::vector<std::string> streams;
  std::vector<int64_t> next_version;
  for (int k = 0; k < c.streams; ++k) {
    streams.push_back(absl::StrCat(c.prefix, "-t", t, "-s", k));
    absl::StatusOr<StreamInfo> info = store->GetStreamInfo(streams.back());
    if (!info.ok()) return Fail(absl::StrCat("GetStreamInfo: ", info.status().ToString()));
    next_version.push_back(info->exists ? info->last_version + 1 : 0);
  }
  std::mt19937_64 rng(c.seed * 1000003 + t);
  for (int64_t done = 0; (c.appends == 0 || done < c.appends) && !failed; ++done) {
    const int k = static_cast<int>(rng() % streams.size());
    const int n = 1 + static_cast<int>(rng() % c.max_events);
    const std::string& stream = streams[k];
    const int64_t first = next_version[k];
    const std::vector<EventData> events =
        ChildEvents(stream, first, first + n - 1, writer, c.max_pad);
    AppendOptions options;
    if (c.keys) options.idempotency_key = absl::StrCat(stream, "@", first);
    absl::StatusOr<AppendResult> r = store->Append(stream, ChildExpected(first), events, options);
    if (!r.ok())
      return Fail(absl::StrCat("Append ", stream, "@", first, ": ", r.status().ToString()));
    if (!ResultMatches(*r, stream, first, n)) {
      return Fail(absl::StrCat("Append ", stream, "@", first, " returned ",
                               FormatAck(MakeAck(options.idempotency_key, writer, *r))));
    }
    if (!acks->Write(MakeAck(options.idempotency_key, writer, *r))) {
      return Fail("writing the ack file failed");
    }
    ++*total_acks;
    next_version[k] = first + n;
  }
}

void RunContend(const Config& c, Store* store, AckWriter* acks, int t,
                std::atomic<int64_t>* total_acks, std::atomic<int64_t>* conflicts) {
  const std::string writer = absl::StrCat(c.writer, "-t", t);
  const std::string stream = absl::StrCat(c.prefix, "-shared");
  std::mt19937_64 rng(c.seed * 1000003 + t);
  int64_t attempt = 0;
  for (int64_t done = 0; (c.appends == 0 || done < c.appends) && !failed;) {
    absl::StatusOr<StreamInfo> info = store->GetStreamInfo(stream);
    if (!info.ok()) return Fail(absl::StrCat("GetStreamInfo: ", info.status().ToString()));
    const int64_t first = info->exists ? info->last_version + 1 : 0;
    const int n = 1 + static_cast<int>(rng() % c.max_events);
    const std::vector<EventData> events =
        ChildEvents(stream, first, first + n - 1, writer, c.max_pad);
    AppendOptions options;
    if (c.keys) options.idempotency_key = absl::StrCat(writer, "#", attempt++);
    absl::StatusOr<AppendResult> r = store->Append(stream, ChildExpected(first), events, options);
    if (r.status().code() == absl::StatusCode::kAborted) {
      ++*conflicts;
      continue;
    }
    if (!r.ok())
      return Fail(absl::StrCat("Append ", stream, "@", first, ": ", r.status().ToString()));
    if (!ResultMatches(*r, stream, first, n)) {
      return Fail(absl::StrCat("Append ", stream, "@", first, " returned ",
                               FormatAck(MakeAck(options.idempotency_key, writer, *r))));
    }
    if (!acks->Write(MakeAck(options.idempotency_key, writer, *r))) {
      return Fail("writing the ack file failed");
    }
    ++*total_acks;
    ++done;
  }
}

int Main(int argc, char** argv) {
  Config c;
  if (!ParseArgs(argc, argv, &c)) {
    fprintf(stderr, "append_child: bad arguments\n");
    return 2;
  }
  const int fd = open(c.ack.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    perror("append_child: open ack file");
    return 3;
  }
  StoreOptions options;
  if (c.map != 0) options.initial_map_size = c.map;
  if (c.nosync) options.durability = Durability::kNoSyncUnsafe;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(c.dir, options);
  if (!store.ok()) {
    fprintf(stderr, "append_child: Open: %s\n", store.status().ToString().c_str());
    return 3;
  }
  printf("ready\n");
  fflush(stdout);

  AckWriter acks(fd);
  std::atomic<int64_t> total_acks{0};
  std::atomic<int64_t> conflicts{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < c.threads; ++t) {
    threads.emplace_back([&, t] {
      if (c.mode == "own") {
        RunOwn(c, store->get(), &acks, t, &total_acks);
      } else {
        RunContend(c, store->get(), &acks, t, &total_acks, &conflicts);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  store->reset();
  close(fd);
  if (failed) return 3;
  printf("done %lld %lld\n", static_cast<long long>(total_acks.load()),
         static_cast<long long>(conflicts.load()));
  fflush(stdout);
  return 0;
}

}  // namespace
}  // namespace rill::testing

int main(int argc, char** argv) { return rill::testing::Main(argc, argv); }
