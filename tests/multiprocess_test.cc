// Several processes on one store: readers in other processes see a
// consistent, gapless prefix and reach the final head; appenders in several
// processes (LMDB's writer lock serializes them) all succeed and keep the log
// gapless and every stream contiguous; a map grown by one process is adopted
// by the others while they read, subscribe and append.
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "child_checks.h"
#include "child_protocol.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::AckRecord;
using ::rill::testing::ChildEventPayload;
using ::rill::testing::ChildEvents;
using ::rill::testing::ChildExpected;
using ::rill::testing::ChildPayloadPrefix;
using ::rill::testing::ChildProcess;
using ::rill::testing::DescribeWaitStatus;
using ::rill::testing::ExitedWithCode;
using ::rill::testing::ExpectCleanExit;
using ::rill::testing::FormatAck;
using ::rill::testing::ParseAckFile;
using ::rill::testing::ReadFileOrEmpty;
using ::rill::testing::StartReady;
using ::rill::testing::TempDir;
using ::rill::testing::VerifyLog;
using ::rill::testing::WaitUntil;

constexpr absl::Duration kHang = absl::Seconds(60);

// Appends from this process: thread t writes streams "<prefix>-t<t>-s<k>"
// with Exact versions and child_protocol payloads, `appends` requests of
// 1..3 events each. Returns the AppendResults in `acks`.
void AppendFromThisProcess(Store* store, const std::string& prefix, int threads, int appends,
                           size_t max_pad, std::vector<AckRecord>* acks) {
  absl::Mutex mu;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const std::string writer = absl::StrCat(prefix, "-t", t);
      std::vector<int64_t> next(3, 0);
      for (int i = 0; i < appends; ++i) {
        const int k = i % 3;
        const int n = 1 + i % 3;
        const std::string stream = absl::StrCat(prefix, "-t", t, "-s", k);
        absl::StatusOr<AppendResult> r =
            store->Append(stream, ChildExpected(next[k]),
                          ChildEvents(stream, next[k], next[k] + n - 1, writer, max_pad));
        ASSERT_TRUE(r.ok()) << r.status();
        next[k] += n;
        AckRecord a;
        a.stream = stream;
        a.writer = writer;
        a.first_version = r->first_version;
        a.last_version = r->last_version;
        a.first_position = r->first_position;
        a.last_position = r->last_position;
        absl::MutexLock lock(&mu);
        acks->push_back(a);
      }
    });
  }
  for (std::thread& th : pool) th.join();
}

TEST(MultiProcessTest, ReadersInOtherProcessesSeeAGaplessPrefixAndTheFinalHead) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  // A 1 MiB map in every process: this one grows it to ~20 MB while the
  // read-only children follow, so they must adopt each growth as they read.
  StoreOptions small;
  small.initial_map_size = size_t{1} << 20;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir, small));
  // 4 threads x 600 appends of 1, 2, 3, 1, 2, 3... events = 4800 events.
  constexpr int kThreads = 4, kAppends = 600;
  constexpr size_t kMaxPad = 8000;
  constexpr uint64_t kFinal = kThreads * (kAppends / 3) * 6;
  const std::string final_arg = absl::StrCat("final=", kFinal);
  std::unique_ptr<ChildProcess> reader = StartReady(
      dir, "reader_child", {"dir=" + store_dir, final_arg, "mode=read", "map=1048576"}, "reader");
  std::unique_ptr<ChildProcess> subscriber =
      StartReady(dir, "reader_child",
                 {"dir=" + store_dir, final_arg, "mode=subscribe", "map=1048576"}, "subscriber");
  ASSERT_TRUE(reader && subscriber);

  std::vector<AckRecord> acks;
  AppendFromThisProcess(store.get(), "mp", kThreads, kAppends, kMaxPad, &acks);
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store->HeadPosition());
  ASSERT_EQ(head, kFinal);
  RILL_ASSERT_OK_AND_ASSIGN(const StoreStats stats, store->Stats());
  EXPECT_GT(stats.map_size, 8 * small.initial_map_size);

  EXPECT_EQ(ExpectCleanExit(reader.get(), "reader"), absl::StrCat("ok ", kFinal));
  EXPECT_EQ(ExpectCleanExit(subscriber.get(), "subscriber"), absl::StrCat("ok ", kFinal));
  VerifyLog(store.get(), acks, kMaxPad);
}

TEST(MultiProcessTest, SeveralProcessesAppendingStayGaplessAndContiguous) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
  constexpr size_t kMaxPad = 200;
  const std::string pad_arg = absl::StrCat("max_pad=", kMaxPad);

  // Two processes on streams of their own, two contending (with retries on
  // Aborted) for one shared stream, and this process on streams of its own.
  struct Writer {
    std::string tag;
    std::vector<std::string> args;
  };
  std::vector<Writer> writers = {
      {"own-a", {"mode=own", "prefix=pa", "writer=A", "threads=2", "streams=3", "appends=150"}},
      {"own-b", {"mode=own", "prefix=pb", "writer=B", "threads=2", "streams=3", "appends=150"}},
      {"contend-c", {"mode=contend", "prefix=mp", "writer=C", "threads=2", "appends=60"}},
      {"contend-d", {"mode=contend", "prefix=mp", "writer=D", "threads=2", "appends=60"}},
  };
  std::vector<std::unique_ptr<ChildProcess>> children;
  for (Writer& w : writers) {
    w.args.push_back("dir=" + store_dir);
    w.args.push_back("ack=" + dir.Sub(w.tag + ".acks"));
    w.args.push_back(pad_arg);
    w.args.push_back(absl::StrCat("seed=", children.size() + 1));
    children.push_back(StartReady(dir, "append_child", w.args, w.tag));
    ASSERT_TRUE(children.back() != nullptr);
  }
  std::vector<AckRecord> acks;
  AppendFromThisProcess(store.get(), "local", 2, 150, kMaxPad, &acks);
  int64_t conflicts = 0;
  for (size_t i = 0; i < writers.size(); ++i) {
    const Writer& w = writers[i];
    const std::string done = ExpectCleanExit(children[i].get(), w.tag);
    std::vector<std::string> fields = absl::StrSplit(done, ' ');
    ASSERT_EQ(fields.size(), 3u) << w.tag << ": " << done;
    int64_t c = 0;
    ASSERT_TRUE(absl::SimpleAtoi(fields[2], &c));
    conflicts += c;
    std::vector<AckRecord> child_acks;
    ASSERT_TRUE(ParseAckFile(ReadFileOrEmpty(dir.Sub(w.tag + ".acks")), &child_acks));
    EXPECT_EQ(child_acks.size(), w.tag.rfind("own", 0) == 0 ? 300u : 120u) << w.tag;
    acks.insert(acks.end(), child_acks.begin(), child_acks.end());
  }
  std::printf("%lld Aborted conflicts on the shared stream were retried\n",
              static_cast<long long>(conflicts));
  VerifyLog(store.get(), acks, kMaxPad);
  RILL_ASSERT_OK_AND_ASSIGN(const StreamInfo shared, store->GetStreamInfo("mp-shared"));
  uint64_t shared_events = 0;
  for (const AckRecord& a : acks) {
    if (a.stream == "mp-shared") shared_events += a.last_version - a.first_version + 1;
  }
  EXPECT_EQ(shared.event_count, shared_events);

  // Idempotency keys written by another process are honoured here.
  int retried = 0;
  for (const AckRecord& a : acks) {
    if (a.key.empty() || a.stream == "mp-shared" || ++retried > 20) continue;
    AppendOptions options;
    options.idempotency_key = a.key;
    RILL_ASSERT_OK_AND_ASSIGN(
        const AppendResult r,
        store->Append(a.stream, ChildExpected(a.first_version),
                      ChildEvents(a.stream, a.first_version, a.last_version, a.writer, kMaxPad),
                      options));
    EXPECT_TRUE(r.deduplicated) << FormatAck(a);
    EXPECT_EQ(r.first_position, a.first_position) << FormatAck(a);
  }
  EXPECT_GT(retried, 0);
}

TEST(MultiProcessTest, MapGrownByAnotherProcessIsAdoptedByReadersAndWriters) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  StoreOptions small;
  small.initial_map_size = size_t{1} << 20;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir, small));
  RILL_ASSERT_OK_AND_ASSIGN(const StoreStats before, store->Stats());

  // Commits of another process end WaitForHead (by polling).
  absl::StatusOr<uint64_t> waited = absl::UnknownError("not returned");
  absl::Notification wait_returned;
  std::thread waiter([&] {
    waited = store->WaitForHead(0, absl::Seconds(90), absl::Milliseconds(5));
    wait_returned.Notify();
  });

  // This process follows the log with a subscription while the child grows
  // the map from 1 MiB to ~24 MB.
  absl::Mutex mu;
  uint64_t sub_next = 1;
  std::string sub_error;
  SubscriptionOptions options;
  options.poll_interval = absl::Milliseconds(5);
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subscription> sub, store->Subscribe(0, options, [&](const EventView& e) {
        absl::MutexLock lock(&mu);
        if (sub_error.empty() &&
            (e.position() != sub_next ||
             e.payload().substr(0, ChildPayloadPrefix(e.stream(), e.version()).size()) !=
                 ChildPayloadPrefix(e.stream(), e.version()))) {
          sub_error = absl::StrCat("bad event at position ", e.position());
        }
        ++sub_next;
        return absl::OkStatus();
      }));

  constexpr size_t kMaxPad = 24000;
  std::unique_ptr<ChildProcess> child =
      StartReady(dir, "append_child",
                 {"dir=" + store_dir, "ack=" + dir.Sub("grow.acks"), "mode=own", "prefix=g",
                  "writer=G", "threads=2", "streams=2", "appends=500", "max_events=4",
                  absl::StrCat("max_pad=", kMaxPad), "map=1048576", "keys=0"},
                 "grower");
  ASSERT_TRUE(child != nullptr);

  // Meanwhile: read pages of the log and the stats, and append a little.
  std::vector<AckRecord> acks;
  uint64_t next = 1;
  std::string read_error;
  std::thread local_appender(
      [&] { AppendFromThisProcess(store.get(), "local", 1, 60, 100, &acks); });
  while (read_error.empty()) {
    const bool child_done = child->Exited();
    ReadOptions page;
    page.limit = 50;
    absl::StatusOr<std::vector<RecordedEvent>> events = store->ReadAll(next, page);
    if (!events.ok()) {
      read_error = "ReadAll: " + events.status().ToString();
      break;
    }
    for (const RecordedEvent& e : *events) {
      if (e.position != next) read_error = absl::StrCat("gap before ", e.position);
      ++next;
    }
    absl::StatusOr<StoreStats> stats = store->Stats();
    if (!stats.ok()) read_error = "Stats: " + stats.status().ToString();
    if (child_done && events->empty()) break;
  }
  local_appender.join();
  EXPECT_EQ(read_error, "") << "reads failed while another process grew the map";
  EXPECT_EQ(ExpectCleanExit(child.get(), "grower").rfind("done ", 0), 0u);

  std::vector<AckRecord> child_acks;
  ASSERT_TRUE(ParseAckFile(ReadFileOrEmpty(dir.Sub("grow.acks")), &child_acks));
  EXPECT_EQ(child_acks.size(), 1000u) << "the growing child did not finish";
  acks.insert(acks.end(), child_acks.begin(), child_acks.end());

  EXPECT_TRUE(wait_returned.WaitForNotificationWithTimeout(kHang))
      << "WaitForHead never saw another process's commit";
  waiter.join();
  ASSERT_TRUE(waited.ok()) << waited.status();
  EXPECT_GT(*waited, 0u);

  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store->HeadPosition());
  ASSERT_TRUE(WaitUntil(
      [&] {
        absl::MutexLock lock(&mu);
        return sub_next > head || !sub_error.empty();
      },
      kHang))
      << "the subscription did not follow the other process's commits";
  EXPECT_TRUE(sub->status().ok()) << sub->status();
  sub->Stop();
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(sub_error, "");
  }

  // This process appends into the map the other one grew.
  std::vector<AckRecord> more;
  AppendFromThisProcess(store.get(), "after", 1, 30, 100, &more);
  acks.insert(acks.end(), more.begin(), more.end());
  RILL_ASSERT_OK_AND_ASSIGN(const StoreStats after, store->Stats());
  EXPECT_GT(after.map_size, before.map_size) << "this process did not adopt the new map";
  EXPECT_GE(after.map_size, after.used_bytes);

  // Payloads differ per writer's max_pad: check structure here, exact bytes
  // per group below.
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> events, store->ReadAll(1));
  ASSERT_EQ(events.size(), head + 30 * 2);
  for (size_t i = 0; i < events.size(); ++i) ASSERT_EQ(events[i].position, i + 1);
  for (const AckRecord& a : acks) {
    const size_t pad = a.writer == "G-t0" || a.writer == "G-t1" ? kMaxPad : 100;
    for (int64_t v = a.first_version; v <= a.last_version; ++v) {
      const RecordedEvent& e = events[a.first_position + (v - a.first_version) - 1];
      ASSERT_EQ(e.stream, a.stream);
      ASSERT_EQ(e.version, v);
      ASSERT_EQ(e.payload, ChildEventPayload(a.stream, v, a.writer, pad));
    }
  }
}

// Starts lmdb_txn_child holding a `mode` ("read" or "write") transaction.
std::unique_ptr<ChildProcess> HoldTxn(const TempDir& dir, const std::string& store_dir,
                                      const std::string& mode, const std::string& tag) {
  absl::StatusOr<std::unique_ptr<ChildProcess>> child =
      ChildProcess::Start("lmdb_txn_child", {mode, store_dir + "/log"}, dir.Sub(tag + ".err"));
  if (!child.ok()) {
    ADD_FAILURE() << child.status();
    return nullptr;
  }
  absl::StatusOr<std::string> line = (*child)->ReadLine(kHang);
  if (!line.ok() || *line != "locked") {
    ADD_FAILURE() << tag
                  << " holds no transaction: " << (line.ok() ? *line : line.status().ToString())
                  << "\n"
                  << (*child)->Stderr();
    return nullptr;
  }
  return std::move(child).value();
}

TEST(MultiProcessTest, ReaderProcessesKilledMidReadDoNotUseUpReaderSlots) {
  // Every process killed inside a read transaction leaves its LMDB reader
  // slot behind. A store that runs for months meets many of those (an admin
  // tool killed while tailing...); it must reclaim the slots of dead
  // processes rather than fail once max_readers of them have piled up.
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  StoreOptions options;
  options.max_readers = 8;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir, options));
  for (int i = 0; i < 10; ++i) {
    RILL_ASSERT_OK(
        store->Append("s", ExpectedVersion::Any(), {testing::MakeEvent("E", i)}).status());
  }
  for (unsigned i = 0; i < options.max_readers; ++i) {
    std::unique_ptr<ChildProcess> reader =
        HoldTxn(dir, store_dir, "read", absl::StrCat("reader-", i));
    ASSERT_TRUE(reader != nullptr);
    reader->Kill(SIGKILL);
    reader->Wait();
  }
  absl::StatusOr<std::vector<RecordedEvent>> events = store->ReadAll(1);
  ASSERT_TRUE(events.ok()) << "after " << options.max_readers
                           << " reader processes were killed mid-read: " << events.status();
  EXPECT_EQ(events->size(), 10u);
  RILL_ASSERT_OK(
      store->Append("s", ExpectedVersion::Exact(9), {testing::MakeEvent("E", 10)}).status());
  RILL_ASSERT_OK_AND_ASSIGN(const StoreStats stats, store->Stats());
  EXPECT_LT(stats.readers_in_use, options.max_readers);
}

TEST(MultiProcessTest, WriterKilledHoldingTheWriteLockDoesNotBlockAppends) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
  RILL_ASSERT_OK(
      store->Append("s", ExpectedVersion::NoStream(), {testing::MakeEvent("E", 0)}).status());
  for (int round = 0; round < 3; ++round) {
    std::unique_ptr<ChildProcess> writer =
        HoldTxn(dir, store_dir, "write", absl::StrCat("writer-", round));
    ASSERT_TRUE(writer != nullptr);
    // An append queues behind the other process's lock...
    absl::StatusOr<AppendResult> queued = absl::UnknownError("not returned");
    absl::Notification returned;
    std::thread appender([&] {
      queued =
          store->Append("s", ExpectedVersion::Exact(round), {testing::MakeEvent("E", round + 1)});
      returned.Notify();
    });
    // ...and goes through once that process dies holding it.
    writer->Kill(SIGKILL);
    writer->Wait();
    const bool done = returned.WaitForNotificationWithTimeout(kHang);
    if (!done) {
      // Do not leave the appender blocked forever: a detached thread would
      // outlive the store. Report and abort the test binary instead.
      ADD_FAILURE() << "append still blocked after the lock holder died";
      std::abort();
    }
    appender.join();
    ASSERT_TRUE(queued.ok()) << queued.status();
    EXPECT_EQ(queued->first_position, static_cast<uint64_t>(round + 2));
  }
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> events, store->ReadAll(1));
  ASSERT_EQ(events.size(), 4u);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].position, i + 1);
    EXPECT_EQ(events[i].version, static_cast<int64_t>(i));
  }
}

}  // namespace
}  // namespace rill
