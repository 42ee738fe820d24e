// seglog_child: the process tests/seglog/seglog_test.cc kills. It appends
// to the segment-log prototype (bench/seglog) from several threads and
// acknowledges every append that returned OK, until it is killed.
//
// Usage: seglog_child DIR ACK BOOT_ID SEGMENT_BYTES THREADS SYNC
//   Thread t appends 1..3 events per request to its own streams "t<t>-<k>"
//   (k < 4) with exact expected versions (NoStream for a new stream), every
//   other request with the idempotency key "<stream>@<first version>"; now
//   and then it retries its last acknowledged keyed request, which must come
//   back deduplicated with the same result. Each acknowledgement is one
//   write(2) of "<stream> <first version> <last version> <first position>\n"
//   to ACK after Append returned. SYNC 0 opens the log without its fdatasync
//   (to show that the power-cut test notices what that loses). Prints
//   "ready" once the log is open. A broken promise seen in-process is
//   printed to stderr and exits 4.
//   SYNC "load": instead, one thread appends 2000 events without syncs
//   (as a bulk loader), closes the log, prints "closed" and waits to be
//   killed: Close must have made all of it durable.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "seglog.h"
#include "seglog_events.h"

namespace {

void Violation(const std::string& what) {
  std::fprintf(stderr, "VIOLATION %s\n", what.c_str());
  std::fflush(stderr);
  _exit(4);
}

}  // namespace

int main(int argc, char** argv) {
  using rill::ExpectedVersion;
  if (argc != 7) {
    std::fprintf(stderr, "usage: seglog_child DIR ACK BOOT_ID SEGMENT_BYTES THREADS SYNC\n");
    return 2;
  }
  rill::seglog::Options o;
  o.dir = argv[1];
  o.boot_id = argv[3];
  o.segment_bytes = std::strtoull(argv[4], nullptr, 10);
  const int threads = std::atoi(argv[5]);
  const bool load = std::string(argv[6]) == "load";
  o.sync = !load && std::atoi(argv[6]) != 0;
  auto opened = rill::seglog::Log::Open(o);
  if (!opened.ok()) {
    std::fprintf(stderr, "open: %s\n", opened.status().ToString().c_str());
    return 3;
  }
  rill::seglog::Log* log = opened->get();
  const int ack = open(argv[2], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (ack < 0) return 3;
  std::printf("ready\n");
  std::fflush(stdout);
  if (load) {
    for (int i = 0; i < 1000; ++i) {
      const std::string stream = absl::StrCat("load-", i % 10);
      const int64_t first = (i / 10) * 2;
      auto r = log->Append(
          stream, first == 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(first - 1),
          rill::seglog_test::Events(stream, first, 2));
      if (!r.ok()) Violation(r.status().ToString());
    }
    if (absl::Status s = log->Close(); !s.ok()) Violation(s.ToString());
    if (log->Append("late", ExpectedVersion::Any(), rill::seglog_test::Events("late", 0, 1))
            .status()
            .code() != absl::StatusCode::kFailedPrecondition) {
      Violation("an append after Close was not refused");
    }
    std::printf("closed\n");
    std::fflush(stdout);
    while (true) pause();
  }

  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(getpid()) * 131 + t);
      std::vector<std::string> streams;
      std::vector<int64_t> last;
      for (int k = 0; k < 4; ++k) {
        streams.push_back(absl::StrCat("t", t, "-", k));
        int64_t v = -1;
        auto n = log->ReadStream(streams.back(), 0, -1, [&](const rill::seglog::EventRef& e) {
          v = e.version;
          return true;
        });
        if (!n.ok()) Violation(n.status().ToString());
        last.push_back(v);
      }
      std::string last_key;
      int64_t last_key_stream = -1;
      rill::AppendResult last_keyed;
      for (uint64_t i = 0;; ++i) {
        const int k = static_cast<int>(rng() % 4);
        const int n = 1 + static_cast<int>(rng() % 3);
        const std::vector<rill::EventData> events =
            rill::seglog_test::Events(streams[k], last[k] + 1, n);
        const ExpectedVersion expected =
            last[k] < 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(last[k]);
        const std::string key =
            i % 2 == 0 ? absl::StrCat(streams[k], "@", last[k] + 1) : std::string();
        auto r = log->Append(streams[k], expected, events, key);
        if (!r.ok()) Violation(absl::StrCat(streams[k], ": ", r.status().ToString()));
        if (r->deduplicated || r->first_version != last[k] + 1 || r->last_version != last[k] + n) {
          Violation(absl::StrCat(streams[k], ": unexpected result"));
        }
        const std::string line = absl::StrCat(streams[k], " ", r->first_version, " ",
                                              r->last_version, " ", r->first_position, "\n");
        if (write(ack, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
          Violation("ack write");
        }
        if (!key.empty()) {
          last_key = key;
          last_key_stream = k;
          last_keyed = *r;
        }
        last[k] += n;
        if (i % 7 == 6 && !last_key.empty()) {
          // The retry of the last keyed request: same result, nothing written.
          const int64_t first = last_keyed.first_version;
          const int64_t count = last_keyed.last_version - first + 1;
          auto again = log->Append(
              streams[last_key_stream],
              first == 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(first - 1),
              rill::seglog_test::Events(streams[last_key_stream], first, static_cast<int>(count)),
              last_key);
          if (!again.ok() || !again->deduplicated ||
              again->first_position != last_keyed.first_position ||
              again->last_version != last_keyed.last_version) {
            Violation(absl::StrCat("retry of ", last_key, " not deduplicated"));
          }
        }
      }
    });
  }
  for (std::thread& w : workers) w.join();
  return 0;
}
