// The segment-log prototype (bench/seglog, docs/segment-log.md): rill's
// append checks, recovery of a torn tail, the index rebuild, and its crash
// tests - SIGKILL cycles and simulated power cuts (the LD_PRELOAD journal of
// tests/powercut rolls back every write not yet synced) after which every
// acknowledged event must be there, positions gapless.
#include "seglog.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "pc_env.h"
#include "process_util.h"
#include "rollback.h"
#include "seglog_events.h"
#include "test_util.h"

namespace rill::seglog {
namespace {

namespace fs = std::filesystem;
using ::rill::powercut::CutMode;
using ::rill::powercut::CutModeName;
using ::rill::powercut::PreloadEnv;
using ::rill::powercut::RollBack;
using ::rill::testing::ChildProcess;
using ::rill::testing::ReadFileOrEmpty;
using ::rill::testing::TempDir;

std::unique_ptr<Log> OpenLog(const std::string& dir, const std::string& boot = "boot-test",
                             uint64_t segment_bytes = 64 << 10) {
  Options o;
  o.dir = dir;
  o.boot_id = boot;
  o.segment_bytes = segment_bytes;
  absl::StatusOr<std::unique_ptr<Log>> log = Log::Open(o);
  EXPECT_TRUE(log.ok()) << log.status();
  return log.ok() ? std::move(*log) : nullptr;
}

std::vector<EventData> Two(const std::string& a, const std::string& b) {
  std::vector<EventData> e(2);
  e[0].type = "A";
  e[0].payload = a;
  e[1].type = "B";
  e[1].payload = b;
  return e;
}

struct Seen {
  uint64_t position;
  int64_t version;
  std::string stream, type, payload;
};

std::vector<Seen> All(Log* log, uint64_t from = 1) {
  std::vector<Seen> out;
  absl::StatusOr<uint64_t> n = log->ReadAll(from, [&](const EventRef& e) {
    out.push_back(Seen{e.position, e.version, std::string(e.stream), std::string(e.type),
                       std::string(e.payload)});
    return true;
  });
  EXPECT_TRUE(n.ok()) << n.status();
  return out;
}

std::vector<Seen> StreamOf(Log* log, const std::string& s, int64_t from = 0, int64_t count = -1) {
  std::vector<Seen> out;
  absl::StatusOr<uint64_t> n = log->ReadStream(s, from, count, [&](const EventRef& e) {
    out.push_back(Seen{e.position, e.version, std::string(e.stream), std::string(e.type),
                       std::string(e.payload)});
    return true;
  });
  EXPECT_TRUE(n.ok()) << n.status();
  return out;
}

// Marks the index as left unsynced by a machine that has since rebooted.
void PretendOsCrash(const std::string& dir) {
  std::ofstream(dir + "/index.boot", std::ios::trunc) << "a-boot-before dirty\n";
}

TEST(SeglogTest, ExpectedVersionsAndPositions) {
  TempDir dir;
  std::unique_ptr<Log> log = OpenLog(dir.Sub("log"));
  ASSERT_NE(log, nullptr);
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult a,
                            log->Append("s", ExpectedVersion::NoStream(), Two("a0", "a1")));
  EXPECT_EQ(a.first_position, 1u);
  EXPECT_EQ(a.last_position, 2u);
  EXPECT_EQ(a.first_version, 0);
  EXPECT_EQ(a.last_version, 1);
  EXPECT_FALSE(a.deduplicated);
  // Each wrong expectation is Aborted and writes nothing.
  EXPECT_EQ(log->Append("s", ExpectedVersion::NoStream(), Two("x", "y")).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(log->Append("s", ExpectedVersion::Exact(0), Two("x", "y")).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(log->Append("t", ExpectedVersion::StreamExists(), Two("x", "y")).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(log->last_position(), 2u);
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult b,
                            log->Append("t", ExpectedVersion::Any(), Two("b0", "b1")));
  EXPECT_EQ(b.first_position, 3u);
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult c,
                            log->Append("s", ExpectedVersion::Exact(1), Two("a2", "a3")));
  EXPECT_EQ(c.first_version, 2);
  EXPECT_EQ(c.first_position, 5u);
  RILL_ASSERT_OK(log->Append("s", ExpectedVersion::StreamExists(), Two("a4", "a5")).status());
  EXPECT_EQ(log->Append("u", ExpectedVersion::Exact(-1 + 1), Two("x", "y")).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(log->Append("", ExpectedVersion::Any(), Two("x", "y")).status().code(),
            absl::StatusCode::kInvalidArgument);

  const std::vector<Seen> all = All(log.get());
  ASSERT_EQ(all.size(), 8u);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].position, i + 1);
  EXPECT_EQ(all[2].payload, "b0");
  const std::vector<Seen> s = StreamOf(log.get(), "s");
  ASSERT_EQ(s.size(), 6u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(s[i].version, i);
    EXPECT_EQ(s[i].payload, absl::StrCat("a", i));
  }
  const std::vector<Seen> slice = StreamOf(log.get(), "s", 3, 2);
  ASSERT_EQ(slice.size(), 2u);
  EXPECT_EQ(slice[0].payload, "a3");
  EXPECT_EQ(slice[1].position, 7u);
  EXPECT_TRUE(StreamOf(log.get(), "nope").empty());
  const std::vector<Seen> tail = All(log.get(), 6);
  ASSERT_EQ(tail.size(), 3u);
  EXPECT_EQ(tail[0].position, 6u);
  RILL_ASSERT_OK(log->Close());
  EXPECT_EQ(log->Append("s", ExpectedVersion::Any(), Two("x", "y")).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(SeglogTest, IdempotencyKeys) {
  TempDir dir;
  std::unique_ptr<Log> log = OpenLog(dir.Sub("log"));
  ASSERT_NE(log, nullptr);
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult first,
                            log->Append("s", ExpectedVersion::NoStream(), Two("a", "b"), "k1"));
  RILL_ASSERT_OK(log->Append("s", ExpectedVersion::Exact(1), Two("c", "d")).status());
  // The retry: the first result, deduplicated, nothing written, although the
  // stream has moved on.
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult again,
                            log->Append("s", ExpectedVersion::NoStream(), Two("a", "b"), "k1"));
  EXPECT_TRUE(again.deduplicated);
  EXPECT_EQ(again.first_position, first.first_position);
  EXPECT_EQ(again.last_version, first.last_version);
  EXPECT_EQ(log->last_position(), 4u);
  // The same key with another request.
  EXPECT_EQ(log->Append("s", ExpectedVersion::NoStream(), Two("a", "X"), "k1").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(log->last_position(), 4u);
  // After an index rebuild (the keys come back from the segments).
  RILL_ASSERT_OK(log->Close());
  log.reset();
  PretendOsCrash(dir.Sub("log"));
  log = OpenLog(dir.Sub("log"));
  ASSERT_NE(log, nullptr);
  EXPECT_TRUE(log->recovery().rebuilt);
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult rebuilt,
                            log->Append("s", ExpectedVersion::NoStream(), Two("a", "b"), "k1"));
  EXPECT_TRUE(rebuilt.deduplicated);
  EXPECT_EQ(rebuilt.first_position, 1u);
  EXPECT_EQ(log->Append("s", ExpectedVersion::NoStream(), Two("a", "X"), "k1").status().code(),
            absl::StatusCode::kAlreadyExists);
  RILL_ASSERT_OK(log->Append("s", ExpectedVersion::Exact(3), Two("e", "f")).status());
  EXPECT_EQ(log->last_position(), 6u);
}

TEST(SeglogTest, SegmentsRollAndSurviveReopen) {
  TempDir dir;
  const std::string path = dir.Sub("log");
  std::unique_ptr<Log> log = OpenLog(path, "boot-test", 16384);
  ASSERT_NE(log, nullptr);
  std::vector<int64_t> last(5, -1);
  for (int i = 0; i < 300; ++i) {
    const int s = i % 5;
    const int n = 1 + i % 4;
    const std::string stream = absl::StrCat("s", s);
    RILL_ASSERT_OK(
        log->Append(stream, ExpectedVersion::Any(), seglog_test::Events(stream, last[s] + 1, n))
            .status());
    last[s] += n;
  }
  const uint64_t total = log->last_position();
  EXPECT_TRUE(fs::exists(path + "/seg-000005")) << "segments should have rolled";
  // A request larger than a segment is refused.
  std::vector<EventData> huge(1);
  huge[0].type = "Huge";
  huge[0].payload = std::string(20000, 'h');
  EXPECT_EQ(log->Append("h", ExpectedVersion::Any(), huge).status().code(),
            absl::StatusCode::kInvalidArgument);
  RILL_ASSERT_OK(log->Close());
  log.reset();
  log = OpenLog(path, "boot-test", 16384);
  ASSERT_NE(log, nullptr);
  EXPECT_FALSE(log->recovery().rebuilt);
  EXPECT_EQ(log->last_position(), total);
  const std::vector<Seen> all = All(log.get());
  ASSERT_EQ(all.size(), total);
  std::vector<int64_t> seen(5, -1);
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(all[i].position, i + 1);
    const int s = all[i].stream[1] - '0';
    ASSERT_EQ(all[i].version, ++seen[s]);
    ASSERT_EQ(all[i].payload, seglog_test::Payload(all[i].stream, all[i].version));
  }
  // Reading from every position finds it (the sparse position marks).
  for (uint64_t from : {uint64_t{2}, uint64_t{64}, uint64_t{65}, uint64_t{66}, total}) {
    const std::vector<Seen> tail = All(log.get(), from);
    ASSERT_EQ(tail.size(), total - from + 1);
    EXPECT_EQ(tail.front().position, from);
  }
  EXPECT_EQ(StreamOf(log.get(), "s3").size(), static_cast<size_t>(last[3] + 1));
}

TEST(SeglogTest, ConcurrentWritersGetGaplessPositionsAndVersions) {
  TempDir dir;
  std::unique_ptr<Log> log = OpenLog(dir.Sub("log"));
  ASSERT_NE(log, nullptr);
  constexpr int kThreads = 8, kEach = 100;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string s = absl::StrCat("w", t);
      for (int i = 0; i < kEach; ++i) {
        const ExpectedVersion e =
            i == 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(i - 1);
        if (!log->Append(s, e, seglog_test::Events(s, i, 1)).ok()) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(log->last_position(), uint64_t{kThreads * kEach});
  const std::vector<Seen> all = All(log.get());
  ASSERT_EQ(all.size(), size_t{kThreads * kEach});
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i].position, i + 1);
  for (int t = 0; t < kThreads; ++t) {
    const std::vector<Seen> s = StreamOf(log.get(), absl::StrCat("w", t));
    ASSERT_EQ(s.size(), size_t{kEach});
    for (int i = 0; i < kEach; ++i) ASSERT_EQ(s[i].version, i);
  }
}

// Overwrites `n` bytes of `file` at `at` with 0x5a.
void Scribble(const std::string& file, uint64_t at, size_t n) {
  const int fd = open(file.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const std::string junk(n, '\x5a');
  ASSERT_EQ(pwrite(fd, junk.data(), n, static_cast<off_t>(at)), static_cast<ssize_t>(n));
  close(fd);
}

TEST(SeglogTest, RecoveryCutsATornRequestWhole) {
  TempDir dir;
  const std::string path = dir.Sub("log");
  std::unique_ptr<Log> log = OpenLog(path);
  ASSERT_NE(log, nullptr);
  RILL_ASSERT_OK(log->Append("s", ExpectedVersion::NoStream(), Two("a", "b")).status());
  const uint64_t end_before = log->bytes_used();  // includes the index: only a bound
  (void)end_before;
  std::vector<EventData> three = seglog_test::Events("s", 2, 3);
  RILL_ASSERT_OK(log->Append("s", ExpectedVersion::Exact(1), three).status());
  RILL_ASSERT_OK(log->Close());
  log.reset();
  // The second record of the three-event request is torn, and junk lies
  // past the end. The index is not trusted (an OS crash): the rebuild must
  // keep the first request and drop the second whole.
  uint64_t second_record = 0;
  {
    std::unique_ptr<Log> peek = OpenLog(path);
    ASSERT_NE(peek, nullptr);
    // Offsets are not public: find the record by its payload in the file.
    const std::string seg = ReadFileOrEmpty(path + "/seg-000000");
    second_record = seg.find(seglog_test::Payload("s", 3));
    ASSERT_NE(second_record, std::string::npos);
    RILL_ASSERT_OK(peek->Close());
  }
  Scribble(path + "/seg-000000", second_record + 4, 8);
  Scribble(path + "/seg-000000", 30000, 100);
  PretendOsCrash(path);
  log = OpenLog(path);
  ASSERT_NE(log, nullptr);
  EXPECT_TRUE(log->recovery().rebuilt);
  EXPECT_EQ(log->last_position(), 2u);
  EXPECT_GT(log->recovery().cut_bytes, 0u);
  EXPECT_EQ(All(log.get()).size(), 2u);
  // Appends go on from there, and the junk is gone for good.
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult r,
                            log->Append("s", ExpectedVersion::Exact(1), Two("c", "d")));
  EXPECT_EQ(r.first_position, 3u);
  RILL_ASSERT_OK(log->Close());
  log.reset();
  PretendOsCrash(path);
  log = OpenLog(path);
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->last_position(), 4u);
  EXPECT_EQ(log->recovery().cut_bytes, 0u);
  EXPECT_EQ(StreamOf(log.get(), "s").back().payload, "d");
}

TEST(SeglogTest, ACorruptRecordIsDataLossNotGarbage) {
  TempDir dir;
  const std::string path = dir.Sub("log");
  std::unique_ptr<Log> log = OpenLog(path);
  ASSERT_NE(log, nullptr);
  RILL_ASSERT_OK(
      log->Append("s", ExpectedVersion::NoStream(), seglog_test::Events("s", 0, 3)).status());
  RILL_ASSERT_OK(log->Close());
  log.reset();
  const std::string seg = ReadFileOrEmpty(path + "/seg-000000");
  const size_t at = seg.find(seglog_test::Payload("s", 1));
  ASSERT_NE(at, std::string::npos);
  Scribble(path + "/seg-000000", at + 3, 1);
  log = OpenLog(path);  // clean index: trusted, not rescanned
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->ReadAll(1, [](const EventRef&) { return true; }).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(log->ReadStream("s", 0, -1, [](const EventRef&) { return true; }).status().code(),
            absl::StatusCode::kDataLoss);
}

// ------------------------------------------------------------ crashes ---

struct Ack {
  std::string stream;
  int64_t first, last;
  uint64_t position;
};

std::vector<Ack> ReadAcks(const std::string& file) {
  std::vector<Ack> acks;
  for (absl::string_view line : absl::StrSplit(ReadFileOrEmpty(file), '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    Ack a;
    if (f.size() != 4 || !absl::SimpleAtoi(f[1], &a.first) || !absl::SimpleAtoi(f[2], &a.last) ||
        !absl::SimpleAtoi(f[3], &a.position)) {
      continue;  // a torn last line of a killed child cannot happen (one write), but be safe
    }
    a.stream = std::string(f[0]);
    acks.push_back(a);
  }
  return acks;
}

// Opens the log after a crash and checks it: positions 1..N gapless, every
// stream's versions gapless from 0, every event the one the child writes
// for its (stream, version), and every acknowledged event there at its
// position. Returns the number of acknowledged events missing (0 expected
// unless the child ran without syncs).
uint64_t VerifyAfterCrash(const std::string& path, const std::string& boot, uint64_t segment,
                          const std::string& ack_file, RecoveryInfo* info) {
  std::unique_ptr<Log> log = OpenLog(path, boot, segment);
  EXPECT_NE(log, nullptr);
  if (log == nullptr) return ~uint64_t{0};
  *info = log->recovery();
  std::map<std::string, std::vector<uint64_t>> positions;  // per stream, by version
  uint64_t expect = 1;
  for (const Seen& e : All(log.get())) {
    EXPECT_EQ(e.position, expect++) << "positions not gapless";
    std::vector<uint64_t>& p = positions[e.stream];
    EXPECT_EQ(e.version, static_cast<int64_t>(p.size())) << e.stream;
    EXPECT_EQ(e.payload, seglog_test::Payload(e.stream, e.version)) << e.stream;
    EXPECT_EQ(e.type, absl::StrCat("E", e.version % 3));
    p.push_back(e.position);
  }
  EXPECT_EQ(expect - 1, log->last_position());
  // The index agrees with the segments: every stream read through it.
  for (const auto& [stream, want] : positions) {
    std::vector<uint64_t> got;
    for (const Seen& e : StreamOf(log.get(), stream)) got.push_back(e.position);
    EXPECT_EQ(got, want) << stream;
  }
  uint64_t missing = 0;
  for (const Ack& a : ReadAcks(ack_file)) {
    const std::vector<uint64_t>& p = positions[a.stream];
    for (int64_t v = a.first; v <= a.last; ++v) {
      if (v >= static_cast<int64_t>(p.size())) {
        ++missing;
      } else {
        EXPECT_EQ(p[v], a.position + (v - a.first)) << a.stream << " " << v;
      }
    }
  }
  EXPECT_TRUE(log->Close().ok());
  return missing;
}

std::unique_ptr<ChildProcess> StartChild(const TempDir& dir, const std::string& path,
                                         const std::string& boot, uint64_t segment, bool sync,
                                         const std::vector<std::string>& env = {}) {
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Start(
      "seglog_child", {path, dir.Sub("acks"), boot, absl::StrCat(segment), "3", sync ? "1" : "0"},
      dir.Sub("child.err"), env);
  EXPECT_TRUE(child.ok()) << child.status();
  if (!child.ok()) return nullptr;
  absl::StatusOr<std::string> line = (*child)->ReadLine(absl::Seconds(60));
  EXPECT_TRUE(line.ok() && *line == "ready") << ReadFileOrEmpty(dir.Sub("child.err"));
  return line.ok() && *line == "ready" ? std::move(*child) : nullptr;
}

int EnvInt(const char* name, int fallback) {
  const char* v = getenv(name);
  return v != nullptr ? std::atoi(v) : fallback;
}

TEST(SeglogCrashTest, SigkillCyclesLoseNothingAcknowledged) {
  TempDir dir;
  const std::string path = dir.Sub("log");
  constexpr uint64_t kSegment = 256 << 10;
  std::mt19937_64 rng(42);
  const int cycles = EnvInt("RILL_SEGLOG_KILL_CYCLES", 15);
  for (int cycle = 0; cycle < cycles; ++cycle) {
    SCOPED_TRACE(absl::StrCat("cycle ", cycle));
    std::unique_ptr<ChildProcess> child = StartChild(dir, path, "boot-1", kSegment, true);
    ASSERT_NE(child, nullptr);
    absl::SleepFor(absl::Milliseconds(30 + rng() % 250));
    child->Kill(SIGKILL);
    child->Wait();
    ASSERT_EQ(ReadFileOrEmpty(dir.Sub("child.err")).find("VIOLATION"), std::string::npos)
        << ReadFileOrEmpty(dir.Sub("child.err"));
    RecoveryInfo info;
    ASSERT_EQ(VerifyAfterCrash(path, "boot-1", kSegment, dir.Sub("acks"), &info), 0u);
    EXPECT_FALSE(info.rebuilt) << "a process crash keeps the index";
    ASSERT_FALSE(HasFailure());
  }
  EXPECT_GT(ReadAcks(dir.Sub("acks")).size(), 100u);
}

// The power cut. Each cycle runs two children one after the other in the
// same "boot", each under its own journal (tests/powercut): the first is
// killed (a process crash); the second recovers from that - trusting the
// index, re-indexing and syncing the tail the first left, perhaps only in
// the page cache - appends, and is killed too. Then the files are rolled
// back over both journals to what a disk could hold (every write not yet
// synced dropped, or torn, or reordered), and the machine comes back with
// another boot id, so the index is rebuilt from the segments. Every event
// either child acknowledged must be there. With `sync` off the harness
// must see acknowledged events lost.
struct CutTotals {
  uint64_t lost = 0, acked = 0, cut_bytes = 0, reindexed_by_second = 0, max_segment = 0;
};

CutTotals PowerCutCycles(bool sync, int cycles, uint64_t seed) {
  TempDir dir;
  fs::create_directories(dir.Sub("root"));
  const std::string root = fs::canonical(dir.Sub("root")).string();
  const std::string path = root + "/log";
  // Small segments: they roll every few requests, so the second child's
  // first append often goes to a new segment while the first child's tail
  // is still unsynced in the old one (the sequence Open's sync is for).
  constexpr uint64_t kSegment = 8 << 10;
  std::mt19937_64 rng(seed);
  CutTotals t;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    const CutMode mode = static_cast<CutMode>(cycle % 3);
    SCOPED_TRACE(absl::StrCat("cycle ", cycle, " ", CutModeName(mode)));
    const std::string stash = dir.Sub(absl::StrCat("stash", cycle));
    fs::create_directories(stash);
    const std::string boot = absl::StrCat("boot-", cycle);
    std::vector<std::string> journals;
    for (int run = 0; run < 2; ++run) {
      journals.push_back(dir.Sub(absl::StrCat("j", cycle, ".", run)));
      std::unique_ptr<ChildProcess> child =
          StartChild(dir, path, boot, kSegment, sync, PreloadEnv(root, journals.back(), stash));
      EXPECT_NE(child, nullptr);
      if (child == nullptr) return t;
      absl::SleepFor(absl::Milliseconds(30 + rng() % 200));
      child->Kill(SIGKILL);
      child->Wait();
      EXPECT_EQ(ReadFileOrEmpty(dir.Sub("child.err")).find("VIOLATION"), std::string::npos)
          << ReadFileOrEmpty(dir.Sub("child.err"));
    }
    absl::StatusOr<powercut::RollbackReport> report = RollBack(journals, root, stash, mode, rng());
    EXPECT_TRUE(report.ok()) << report.status();
    if (!report.ok()) return t;
    for (uint64_t n = 0; fs::exists(absl::StrFormat("%s/seg-%06d", path, n)); ++n) {
      t.max_segment = std::max(t.max_segment, n);
    }
    t.acked += ReadAcks(dir.Sub("acks")).size();
    RecoveryInfo info;
    const uint64_t missing =
        VerifyAfterCrash(path, absl::StrCat("after-", boot), kSegment, dir.Sub("acks"), &info);
    EXPECT_TRUE(info.rebuilt) << "a reboot must rebuild the unsynced index";
    t.cut_bytes += info.cut_bytes;
    t.lost += missing;
    if (sync) {
      EXPECT_EQ(missing, 0u) << "acknowledged events lost";
    }
    // The acks of this cycle are checked; the next child starts afresh
    // with what survived.
    fs::remove(dir.Sub("acks"));
    for (const std::string& j : journals) fs::remove(j);
    fs::remove_all(stash);
    if (::testing::Test::HasFailure()) return t;
  }
  std::fprintf(stderr,
               "%d cuts: %llu acknowledged requests, %llu torn bytes cut at recovery, "
               "segments up to %llu, %llu acknowledged events lost\n",
               cycles, static_cast<unsigned long long>(t.acked),
               static_cast<unsigned long long>(t.cut_bytes),
               static_cast<unsigned long long>(t.max_segment),
               static_cast<unsigned long long>(t.lost));
  return t;
}

TEST(SeglogCrashTest, PowerCutsLoseNothingAcknowledged) {
  const int cycles = EnvInt("RILL_SEGLOG_POWERCUT_CUTS", 24);
  const CutTotals t = PowerCutCycles(true, cycles, 7);
  // The cuts landed where it matters: acknowledged appends to check, torn
  // tails for recovery to cut, and segments that rolled.
  EXPECT_GT(t.acked, uint64_t(cycles) * 5);
  EXPECT_GT(t.cut_bytes, 0u);
  EXPECT_GE(t.max_segment, 2u);
}

TEST(SeglogCrashTest, PowerCutsCatchALogThatDoesNotSync) {
  EXPECT_GT(PowerCutCycles(false, 6, 11).lost, 0u)
      << "without fdatasync a power cut must lose acknowledged events";
}

// A bulk load without syncs, then Close: Close must make it all durable
// (the index says "clean", which any later boot trusts).
TEST(SeglogCrashTest, CloseMakesAnUnsyncedLoadDurable) {
  TempDir dir;
  fs::create_directories(dir.Sub("root"));
  const std::string root = fs::canonical(dir.Sub("root")).string();
  const std::string path = root + "/log";
  const std::string journal = dir.Sub("j");
  fs::create_directories(dir.Sub("stash"));
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Start(
      "seglog_child", {path, dir.Sub("acks"), "boot-load", "65536", "1", "load"},
      dir.Sub("child.err"), PreloadEnv(root, journal, dir.Sub("stash")));
  ASSERT_TRUE(child.ok()) << child.status();
  ASSERT_EQ(*(*child)->ReadLine(absl::Seconds(60)), "ready");
  absl::StatusOr<std::string> line = (*child)->ReadLine(absl::Seconds(120));
  ASSERT_TRUE(line.ok() && *line == "closed") << ReadFileOrEmpty(dir.Sub("child.err"));
  (*child)->Kill(SIGKILL);
  (*child)->Wait();
  RILL_ASSERT_OK(RollBack(journal, root, dir.Sub("stash"), CutMode::kDropUnsynced, 1).status());
  std::unique_ptr<Log> log = OpenLog(path, "after-the-load", 65536);
  ASSERT_NE(log, nullptr);
  EXPECT_FALSE(log->recovery().rebuilt);
  EXPECT_EQ(log->last_position(), 2000u);
  const std::vector<Seen> all = All(log.get());
  ASSERT_EQ(all.size(), 2000u);
  for (const Seen& e : all) {
    ASSERT_EQ(e.payload, seglog_test::Payload(e.stream, e.version));
  }
  EXPECT_EQ(StreamOf(log.get(), "load-3").size(), 200u);
}

}  // namespace
}  // namespace rill::seglog
