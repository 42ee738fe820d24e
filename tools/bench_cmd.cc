// rill bench: a workload on the user's own disk, with throughput and latency
// percentiles. (The side-by-side comparison with SQLite, Message DB and raw
// LMDB is bench/compare; this answers "how fast on this machine's disk?".)
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common.h"
#include "nlohmann/json.hpp"
#include "rill/projection.h"

namespace rill::tool {
namespace {

using Json = nlohmann::ordered_json;
namespace fs = std::filesystem;

struct BenchArgs {
  std::string dir;
  std::string workload = "append";
  uint64_t events = 10000;
  size_t batch = 100;
  int threads = 16;
  int64_t group_commit_wait_us = -1;  // -1: the store's default
  size_t streams = 100;
  size_t size = 256;
  bool keep = false;
  bool json = false;
};

struct Result {
  uint64_t events = 0;
  absl::Duration elapsed;
  std::vector<double> latencies_us;  // per operation
  std::string op = "append";         // what one latency sample measures
};

std::string Payload(size_t size) {
  std::string p = "{\"data\":\"";
  while (p.size() + 2 < size) p.push_back('x');
  p += "\"}";
  return p;
}

EventData BenchEvent(const std::string& payload) {
  EventData e;
  e.type = "BenchEvent";
  e.payload = payload;
  return e;
}

std::string StreamName(size_t i) { return absl::StrCat("bench-", i); }

// Batch size for filling a store to read: every stream gets events.
size_t FillBatch(const BenchArgs& args) {
  return std::max<size_t>(1, std::min<uint64_t>(1000, args.events / args.streams));
}

double Micros(absl::Duration d) { return absl::ToDoubleMicroseconds(d); }

// Appends `n` events in batches of `batch`, round robin over `streams`, with
// expected versions; one latency sample per append.
absl::Status Fill(Store* store, const BenchArgs& args, uint64_t n, size_t batch, Result* result,
                  Progress* progress) {
  const std::string payload = Payload(args.size);
  std::vector<int64_t> versions(args.streams, -1);
  std::vector<EventData> events;
  uint64_t done = 0;
  for (size_t i = 0; done < n; ++i) {
    const size_t s = i % args.streams;
    const size_t count = std::min<uint64_t>(batch, n - done);
    events.assign(count, BenchEvent(payload));
    const ExpectedVersion expected =
        versions[s] < 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(versions[s]);
    const absl::Time start = absl::Now();
    absl::StatusOr<AppendResult> r = store->Append(StreamName(s), expected, events);
    if (!r.ok()) return r.status();
    if (result != nullptr) result->latencies_us.push_back(Micros(absl::Now() - start));
    versions[s] = r->last_version;
    done += count;
    if (progress != nullptr) progress->Update(done);
  }
  return absl::OkStatus();
}

absl::StatusOr<Result> RunConcurrent(Store* store, const BenchArgs& args, Progress* progress) {
  const int threads = std::max(args.threads, 1);
  const uint64_t per_thread = std::max<uint64_t>(args.events / threads, 1);
  std::vector<std::vector<double>> lat(threads);
  std::vector<absl::Status> status(threads);
  std::atomic<uint64_t> done{0};
  const std::string payload = Payload(args.size);
  const absl::Time start = absl::Now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const std::string stream = absl::StrCat("bench-thread-", t);
      int64_t version = -1;
      for (uint64_t i = 0; i < per_thread; ++i) {
        const absl::Time s = absl::Now();
        absl::StatusOr<AppendResult> r = store->Append(
            stream, version < 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(version),
            {BenchEvent(payload)});
        if (!r.ok()) {
          status[t] = r.status();
          return;
        }
        lat[t].push_back(Micros(absl::Now() - s));
        version = r->last_version;
        progress->Update(++done);
      }
    });
  }
  for (std::thread& th : pool) th.join();
  Result result;
  result.elapsed = absl::Now() - start;
  for (int t = 0; t < threads; ++t) {
    if (!status[t].ok()) return status[t];
    result.latencies_us.insert(result.latencies_us.end(), lat[t].begin(), lat[t].end());
  }
  result.events = per_thread * threads;
  return result;
}

absl::StatusOr<Result> RunReadAll(Store* store, const BenchArgs& args, Progress* progress) {
  if (absl::Status s = Fill(store, args, args.events, FillBatch(args), nullptr, nullptr); !s.ok())
    return s;
  Result result;
  result.op = absl::StrCat("read of ", args.batch, " events");
  ReadOptions page;
  page.limit = std::max<size_t>(args.batch, 1);
  const absl::Time start = absl::Now();
  for (uint64_t from = 1; from <= args.events;) {
    const absl::Time s = absl::Now();
    uint64_t last = 0;
    absl::Status st = store->ScanAll(from, page, [&](const EventView& e) {
      last = e.position();
      ++result.events;
      return true;
    });
    if (!st.ok()) return st;
    result.latencies_us.push_back(Micros(absl::Now() - s));
    if (last == 0) break;
    from = last + 1;
    progress->Update(result.events);
  }
  result.elapsed = absl::Now() - start;
  return result;
}

absl::StatusOr<Result> RunReadStream(Store* store, const BenchArgs& args, Progress* progress) {
  if (absl::Status s = Fill(store, args, args.events, FillBatch(args), nullptr, nullptr); !s.ok())
    return s;
  Result result;
  result.op = "read of one whole stream";
  uint64_t state = 88172645463325252ull;  // xorshift: a fixed, cheap sequence
  const size_t reads = std::max<size_t>(args.streams * 4, 100);
  const absl::Time start = absl::Now();
  for (size_t i = 0; i < reads; ++i) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    const absl::Time s = absl::Now();
    absl::Status st = store->ScanStream(StreamName(state % args.streams), 0, ReadOptions(),
                                        [&](const EventView&) {
                                          ++result.events;
                                          return true;
                                        });
    if (!st.ok()) return st;
    result.latencies_us.push_back(Micros(absl::Now() - s));
    progress->Update(i + 1);
  }
  result.elapsed = absl::Now() - start;
  return result;
}

absl::StatusOr<Result> RunProjection(Store* store, const BenchArgs& args, Progress* progress) {
  if (absl::Status s = Fill(store, args, args.events, FillBatch(args), nullptr, nullptr); !s.ok())
    return s;
  ProjectionDef def;
  def.name = "bench_counts";
  def.tables = {"counts"};
  def.apply = [](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    absl::StatusOr<std::optional<std::string>> v = txn.Get("counts", e.stream());
    if (!v.ok()) return v.status();
    const uint64_t n = v->has_value() ? std::stoull(**v) + 1 : 1;
    return txn.Put("counts", e.stream(), absl::StrCat(n));
  };
  Result result;
  result.op = "append + WaitFor (read-your-writes)";
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<ProjectionRunner>> runner = ProjectionRunner::Start(store, {def});
  if (!runner.ok()) return runner.status();
  absl::StatusOr<uint64_t> head = store->HeadPosition();
  if (!head.ok()) return head.status();
  if (absl::Status s = (*runner)->WaitFor(def.name, *head, absl::Hours(1)); !s.ok()) return s;
  result.elapsed = absl::Now() - start;
  result.events = *head;
  progress->Update(args.events);
  const std::string payload = Payload(args.size);
  for (int i = 0; i < 200; ++i) {
    const absl::Time s = absl::Now();
    absl::StatusOr<AppendResult> r =
        store->Append("bench-ryw", ExpectedVersion::Any(), {BenchEvent(payload)});
    if (!r.ok()) return r.status();
    if (absl::Status w = (*runner)->WaitFor(def.name, r->last_position, absl::Minutes(1));
        !w.ok()) {
      return w;
    }
    result.latencies_us.push_back(Micros(absl::Now() - s));
  }
  (*runner)->Stop();
  return result;
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * v.size()));
  std::nth_element(v.begin(), v.begin() + i, v.end());
  return v[i];
}

int RunBench(const BenchArgs& args) {
  std::error_code ec;
  if (!fs::is_directory(args.dir, ec)) {
    return Fail(absl::NotFoundError(absl::StrCat("no directory ", args.dir)),
                "give an existing directory on the disk to measure");
  }
  const std::string store_dir = absl::StrCat(args.dir, "/rill-bench-", getpid());
  if (args.streams == 0 || args.events == 0) {
    return Fail(absl::InvalidArgumentError("--events and --streams must be at least 1"));
  }
  StoreOptions options;
  if (args.group_commit_wait_us >= 0) {
    options.group_commit_wait = absl::Microseconds(args.group_commit_wait_us);
  }
  absl::StatusOr<Result> result;
  {
    absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(store_dir, OpenMode::kCreate, options);
    if (!store.ok()) return Fail(store.status());
    Progress progress(absl::StrCat("bench ", args.workload), args.events);
    Store* s = store->get();
    if (args.workload == "append" || args.workload == "append-batch") {
      Result r;
      const size_t batch = args.workload == "append" ? 1 : std::max<size_t>(args.batch, 1);
      r.op = batch == 1 ? "append of 1 event" : absl::StrCat("append of ", batch, " events");
      const absl::Time start = absl::Now();
      absl::Status st = Fill(s, args, args.events, batch, &r, &progress);
      r.elapsed = absl::Now() - start;
      r.events = args.events;
      result = st.ok() ? absl::StatusOr<Result>(std::move(r)) : st;
    } else if (args.workload == "concurrent") {
      result = RunConcurrent(s, args, &progress);
    } else if (args.workload == "read-all") {
      result = RunReadAll(s, args, &progress);
    } else if (args.workload == "read-stream") {
      result = RunReadStream(s, args, &progress);
    } else if (args.workload == "projection") {
      result = RunProjection(s, args, &progress);
    } else {
      result = absl::InvalidArgumentError(absl::StrCat("unknown workload \"", args.workload, "\""));
    }
  }
  if (!args.keep) {
    fs::remove_all(store_dir, ec);
  } else {
    std::fprintf(stderr, "kept the store at %s\n", store_dir.c_str());
  }
  if (!result.ok()) return Fail(result.status());
  const double seconds = absl::ToDoubleSeconds(result->elapsed);
  const double rate = seconds > 0 ? result->events / seconds : 0;
  const double p50 = Percentile(result->latencies_us, 0.50);
  const double p99 = Percentile(result->latencies_us, 0.99);
  const double p999 = Percentile(result->latencies_us, 0.999);
  if (args.json) {
    PrintLine(Json{{"workload", args.workload},
                   {"events", result->events},
                   {"seconds", seconds},
                   {"events_per_s", rate},
                   {"latency_of", result->op},
                   {"p50_us", p50},
                   {"p99_us", p99},
                   {"p999_us", p999},
                   {"batch", args.batch},
                   {"threads", args.threads},
                   {"group_commit_wait_us", absl::ToInt64Microseconds(options.group_commit_wait)},
                   {"streams", args.streams},
                   {"size", args.size}}
                  .dump());
    return kExitOk;
  }
  PrintLine(absl::StrFormat("%s: %d events in %.2f s = %.0f events/s", args.workload,
                            result->events, seconds, rate));
  if (args.workload == "projection") {
    PrintLine("  (catch-up from position 1; the latencies below are of append + WaitFor)");
  }
  PrintLine(
      absl::StrFormat("latency of one %s: p50 %.0f us, p99 %.0f us, p99.9 %.0f us "
                      "(%d samples)",
                      result->op, p50, p99, p999, result->latencies_us.size()));
  return kExitOk;
}

}  // namespace

void AddBenchCommands(CLI::App& app, Action* action) {
  auto b = std::make_shared<BenchArgs>();
  CLI::App* bench = app.add_subcommand(
      "bench",
      "Run a workload in a fresh store under DIR (on the disk to measure) and print "
      "throughput and latency percentiles; the store is removed afterwards");
  bench->add_option("DIR", b->dir, "an existing directory on the disk to measure")->required();
  bench
      ->add_option("--workload", b->workload,
                   "append (single events), append-batch, concurrent, read-all, read-stream "
                   "or projection")
      ->check(CLI::IsMember(
          {"append", "append-batch", "concurrent", "read-all", "read-stream", "projection"}));
  bench->add_option("--events", b->events, "events to write (default 10000)");
  bench->add_option("--batch", b->batch,
                    "events per append (append-batch) or per read (read-all); default 100");
  bench->add_option("--threads", b->threads, "appending threads (concurrent; default 16)");
  bench
      ->add_option("--group-commit-wait-us", b->group_commit_wait_us,
                   "StoreOptions::group_commit_wait in microseconds (default: the store's "
                   "default, 100; 0 turns the wait off)")
      ->check(CLI::NonNegativeNumber);
  bench->add_option("--streams", b->streams, "streams written round robin (default 100)");
  bench->add_option("--size", b->size, "payload bytes per event (default 256)");
  bench->add_flag("--keep", b->keep, "keep the store afterwards");
  bench->add_flag("--json", b->json, "one JSON document");
  bench->footer(
      "Appends are durable (fsync on commit), as in production.\nExamples:\n"
      "  rill bench /var/lib --workload append --events 2000\n"
      "  rill bench /var/lib --workload append-batch --batch 100 --events 200000\n"
      "  rill bench /var/lib --workload concurrent --threads 16 --events 20000");
  bench->callback([b, action] { *action = [b] { return RunBench(*b); }; });
}

}  // namespace rill::tool
