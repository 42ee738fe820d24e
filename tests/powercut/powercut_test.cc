// Power cuts, simulated (docs/reliability.md, "Power cuts"). A process runs
// with pc_intercept preloaded, journaling every change it makes under one
// directory; it is killed with SIGKILL (at a random moment, or by itself
// just before its N-th change); then RollBack turns its files into what a
// disk could hold had the power failed then - everything not fsync'd
// dropped, or kept in part and out of order as the rules of fsync allow -
// and the store is opened and checked:
//
//   PowerCutHarnessTest  the harness itself, on a probe with known
//                        durability, and PC_KILL_AT;
//   PowerCutTest.Durable...  the crash torture's child (appends with keys
//                        and expected versions, AppendMulti, projections,
//                        snapshots, map growth) cut again and again: every
//                        acknowledged append present exactly once, the log
//                        gapless, retries deduplicated, read models equal
//                        to a fold of the log and resuming, snapshots right,
//                        VerifyStore clean;
//   PowerCutTest.NoSync...  the same child with Durability::kNoSyncUnsafe:
//                        the harness must see it lose acknowledged appends;
//   PowerCutTest.CutDuring{Backup,Import}  `rill backup` and `rill import`
//                        cut at every kind of point.
//
// Environment:
//   RILL_POWERCUT_CUTS=N  cuts of the durable torture (default 150, 60 under
//                         ASan; CI runs the default; long runs:
//                         docs/reliability.md section 16)
//   RILL_POWERCUT_NOSYNC_CUTS=N  cuts of the no-sync store (default 15)
//   RILL_TEST_SEED=S      reproduce a run (the seed is printed)
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "child_checks.h"
#include "child_protocol.h"
#include "gtest/gtest.h"
#include "nats_cluster.h"
#include "pc_env.h"
#include "process_util.h"
#include "rill/admin.h"
#include "rill/projection.h"
#include "rill/replication.h"
#include "rill/snapshot.h"
#include "rill/store.h"
#include "rollback.h"
#include "test_util.h"
#include "torture_checks.h"
#include "torture_protocol.h"
#ifdef RILL_TOOL_BINARY
#include "tool_util.h"
#endif

namespace rill {
namespace {

namespace fs = std::filesystem;

using ::rill::powercut::CountChanges;
using ::rill::powercut::CutMode;
using ::rill::powercut::CutModeName;
using ::rill::powercut::RollBack;
using ::rill::powercut::RollbackReport;
using ::rill::testing::AckRecord;
using ::rill::testing::Acks;
using ::rill::testing::AddAcks;
using ::rill::testing::AdoptInFlightTails;
using ::rill::testing::ChildEventPayload;
using ::rill::testing::ChildProcess;
using ::rill::testing::DescribeWaitStatus;
using ::rill::testing::EnvInt;
using ::rill::testing::kMaxPad;
using ::rill::testing::kSmallMap;
using ::rill::testing::NatsCluster;
using ::rill::testing::ParseAckFile;
using ::rill::testing::ParseTortureAcks;
using ::rill::testing::ReadFileOrEmpty;
using ::rill::testing::RetryAcknowledged;
using ::rill::testing::TempDir;
using ::rill::testing::TestSeed;
using ::rill::testing::TortureStoreOptions;
using ::rill::testing::Totals;
using ::rill::testing::VerifyLog;
using ::rill::testing::VerifyModels;
using ::rill::testing::VerifySnapshots;

// One experiment's files: the journaled directory (canonical, as
// pc_intercept compares paths), the journal and the stash beside it.
struct Cut {
  std::string root, journal, stash;

  Cut(const TempDir& dir, const std::string& name) {
    fs::create_directories(dir.Sub("root"));
    root = fs::canonical(dir.Sub("root")).string();
    journal = dir.Sub(name + ".journal");
    stash = dir.Sub(name + ".stash");
    fs::remove(journal);
    fs::remove_all(stash);
    fs::create_directories(stash);
  }

  // The environment that preloads the journal for a child.
  std::vector<std::string> Env(uint64_t kill_at = 0) const {
    return powercut::PreloadEnv(root, journal, stash, kill_at);
  }
};

// Syncs a directory, so what the test process created counts as on disk.
void SyncDir(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(fsync(fd), 0);
  close(fd);
}

std::string Slurp(const std::string& path) { return ReadFileOrEmpty(path); }

// --- the harness itself ------------------------------------------------------

// Runs pc_probe under the journal until it says "done", kills it, rolls back.
RollbackReport ProbeAndCut(const TempDir& dir, CutMode mode, uint64_t seed, std::string* root) {
  fs::remove_all(dir.Sub("root"));
  Cut cut(dir, "probe");
  SyncDir(cut.root);
  *root = cut.root;
  absl::StatusOr<std::unique_ptr<ChildProcess>> child =
      ChildProcess::Start("pc_probe", {cut.root}, dir.Sub("probe.err"), cut.Env());
  EXPECT_TRUE(child.ok());
  if (!child.ok()) return {};
  absl::StatusOr<std::string> line = (*child)->ReadLine(absl::Seconds(60));
  EXPECT_TRUE(line.ok() && *line == "done") << (*child)->Stderr();
  (*child)->Kill(SIGKILL);
  (*child)->Wait();
  absl::StatusOr<RollbackReport> report = RollBack(cut.journal, cut.root, cut.stash, mode, seed);
  EXPECT_TRUE(report.ok()) << report.status();
  return report.ok() ? *report : RollbackReport{};
}

TEST(PowerCutHarnessTest, DropModeKeepsExactlyWhatWasSynced) {
  TempDir dir;
  std::string root;
  const RollbackReport report = ProbeAndCut(dir, CutMode::kDropUnsynced, 1, &root);
  // a: the synced 'A's, the O_DSYNC "CCCC"; the unsynced "BBBB" and the
  // unsynced growth to 5096 bytes gone.
  std::string want(4096, 'A');
  want.replace(2048, 4, "CCCC");
  EXPECT_EQ(Slurp(root + "/d/a"), want);
  // b's contents were synced but its directory entry was not: b is gone.
  EXPECT_FALSE(fs::exists(root + "/d/b"));
  // e (and c in it, although both c and e were synced) was never entered in
  // root: gone.
  EXPECT_FALSE(fs::exists(root + "/e"));
  EXPECT_EQ(report.lost_changes, 2u);  // "BBBB", the 'E's (b's bytes go with b)
  EXPECT_GE(report.namespace_undone, 2u);
}

TEST(PowerCutHarnessTest, OtherModesKeepOnlyWhatADiskCould) {
  TempDir dir;
  std::set<std::string> heads, sizes, namespaces;
  for (uint64_t seed = 1; seed <= 24; ++seed) {
    const CutMode mode = seed % 2 == 0 ? CutMode::kPrefix : CutMode::kReorder;
    SCOPED_TRACE(absl::StrCat(CutModeName(mode), " seed ", seed));
    std::string root;
    ProbeAndCut(dir, mode, seed, &root);
    const std::string a = Slurp(root + "/d/a");
    ASSERT_TRUE(a.size() == 4096 || a.size() == 5096) << a.size();
    heads.insert(a.substr(0, 4));
    sizes.insert(absl::StrCat(a.size()));
    ASSERT_TRUE(a.substr(0, 4) == "AAAA" || a.substr(0, 4) == "BBBB");
    ASSERT_EQ(a.substr(4, 2044), std::string(2044, 'A'));
    ASSERT_EQ(a.substr(2048, 4), "CCCC");  // synced: always there
    ASSERT_EQ(a.substr(2052, 2044), std::string(2044, 'A'));
    // The unsynced growth: each sector either written or a hole (zeros).
    for (size_t at = 4096; at < a.size(); ++at) ASSERT_TRUE(a[at] == 'E' || a[at] == 0) << at;
    // Namespace changes kept in order: b's entry, then e's.
    const bool b = fs::exists(root + "/d/b"), e = fs::exists(root + "/e");
    ASSERT_TRUE(b || !e) << "e kept without the change before it";
    if (b) {
      ASSERT_EQ(Slurp(root + "/d/b"), "bbbb");
    }
    if (e) {
      ASSERT_EQ(Slurp(root + "/e/c"), "cccc");
    }
    namespaces.insert(absl::StrCat(b, e));
  }
  // Over the seeds, the unsynced changes were both kept and lost.
  EXPECT_EQ(heads.size(), 2u);
  EXPECT_EQ(sizes.size(), 2u);
  EXPECT_EQ(namespaces.size(), 3u);
}

TEST(PowerCutHarnessTest, KillAtStopsJustBeforeTheNthChange) {
  TempDir dir;
  std::string root;
  ProbeAndCut(dir, CutMode::kDropUnsynced, 1, &root);
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t all, CountChanges(dir.Sub("probe.journal")));
  ASSERT_GT(all, 10u);
  for (uint64_t k : {uint64_t{1}, all / 2, all}) {
    fs::remove_all(dir.Sub("root"));
    Cut cut(dir, "kill");
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ChildProcess> child,
        ChildProcess::Start("pc_probe", {cut.root}, dir.Sub("kill.err"), cut.Env(k)));
    const int status = child->Wait();
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << DescribeWaitStatus(status);
    RILL_ASSERT_OK_AND_ASSIGN(const uint64_t made, CountChanges(cut.journal));
    EXPECT_EQ(made, k - 1);
  }
}

// --- the store -----------------------------------------------------------------

struct TortureRun {
  std::unique_ptr<ChildProcess> child;
  std::string ack_path;
};

// Starts torture_child on `store_dir` under the journal of `cut`.
absl::StatusOr<std::unique_ptr<ChildProcess>> StartTorture(const TempDir& dir, const Cut& cut,
                                                           const std::string& store_dir,
                                                           const std::string& ack_path,
                                                           bool small_map, bool nosync,
                                                           uint64_t seed) {
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Start(
      "torture_child",
      {"dir=" + store_dir, "ack=" + ack_path, "violations=" + dir.Sub("violations"), "threads=3",
       "streams=6", "multi=1", absl::StrCat("max_pad=", kMaxPad),
       absl::StrCat("map=", small_map ? kSmallMap : 0), absl::StrCat("seed=", seed), "ack_sync=1",
       "snapshots=1", nosync ? "durability=nosync" : "durability=durable"},
      dir.Sub("torture_child.err"), cut.Env());
  if (!child.ok()) return child.status();
  absl::StatusOr<std::string> ready = (*child)->ReadLine(absl::Seconds(120));
  if (!ready.ok() || *ready != "ready") {
    return absl::InternalError(absl::StrCat(
        "torture_child did not start: ", ready.ok() ? *ready : ready.status().ToString(), "\n",
        (*child)->Stderr()));
  }
  return child;
}

// A store the test process creates and syncs (directory entries included),
// so the journaled runs start from something on disk.
void CreateStoreOnDisk(const std::string& root, const std::string& store_dir) {
  { RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir)); }
  for (const std::string& d : {store_dir + "/log", store_dir, root}) SyncDir(d);
}

// CI's short run: 150 cuts (with the other tests' ~75, a few hundred in
// about a minute); under the sanitizers, whose point is memory errors rather
// than more cuts, 60.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kDefaultCuts = 60;
#else
constexpr int kDefaultCuts = 150;
#endif

TEST(PowerCutTest, DurableStoreLosesNothingAcknowledged) {
  const int cuts = EnvInt("RILL_POWERCUT_CUTS", kDefaultCuts);
  constexpr int kPerStore = 30;
  const uint64_t seed = TestSeed();
  std::printf("RILL_TEST_SEED=%llu, %d cuts, a fresh store every %d\n",
              static_cast<unsigned long long>(seed), cuts, kPerStore);
  std::mt19937_64 rng(seed);
  const absl::Time start = absl::Now();
  TempDir dir;
  Totals totals;
  Acks acks;
  RollbackReport sum;
  uint64_t snapshots_checked = 0;
  uint64_t models_behind = 0;  // read models found behind the head, then resumed
  std::string store_dir;
  for (int i = 0; i < cuts; ++i) {
    const CutMode mode = static_cast<CutMode>(i % 3);
    SCOPED_TRACE(absl::StrCat("cut ", i, " (", CutModeName(mode), "), RILL_TEST_SEED=", seed));
    Cut cut(dir, "torture");
    if (i % kPerStore == 0) {
      fs::remove_all(cut.root);
      fs::create_directories(cut.root);
      SyncDir(cut.root);
      // The first store of the run is created by the child, under the
      // journal (so a cut can land in its creation); the others by the test.
      store_dir = cut.root + absl::StrCat("/store-", i / kPerStore);
      if (i != 0) {
        CreateStoreOnDisk(cut.root, store_dir);
        if (HasFatalFailure()) return;
      }
      acks = Acks();
    }
    const bool small_map = i % 2 == 1;
    const std::string ack_path = dir.Sub(absl::StrCat("acks-", i));
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ChildProcess> child,
        StartTorture(dir, cut, store_dir, ack_path, small_map, false, seed + i));
    const int64_t wait_ms = rng() % 5 == 0 ? rng() % 30 : 30 + rng() % 271;
    absl::SleepFor(absl::Milliseconds(wait_ms));
    child->Kill(SIGKILL);
    const int status = child->Wait();
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "torture_child " << DescribeWaitStatus(status) << ":\n"
        << child->Stderr();
    const std::string broken = ReadFileOrEmpty(dir.Sub("violations"));
    ASSERT_TRUE(broken.empty()) << "the child saw broken promises:\n" << broken;
    Acks cycle;
    ASSERT_TRUE(ParseTortureAcks(ReadFileOrEmpty(ack_path), &cycle.single, &cycle.multi));
    fs::remove(ack_path);
    AddAcks(cycle, &acks, &totals);

    // The power cut.
    RILL_ASSERT_OK_AND_ASSIGN(const RollbackReport report,
                              RollBack(cut.journal, cut.root, cut.stash, mode, seed * 7919 + i));
    sum.changes += report.changes;
    sum.durable_changes += report.durable_changes;
    sum.lost_changes += report.lost_changes;
    sum.torn_changes += report.torn_changes;
    sum.namespace_undone += report.namespace_undone;
    sum.syncs += report.syncs;

    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                              Store::Open(store_dir, TortureStoreOptions(small_map)));
    std::vector<RecordedEvent> log;
    VerifyLog(*store, acks, &log);
    if (HasFatalFailure()) return;
    RILL_ASSERT_OK_AND_ASSIGN(const VerifyReport verified, VerifyStore(store.get()));
    ASSERT_TRUE(verified.ok()) << verified.problems.front();
    RetryAcknowledged(*store, cycle, &rng, &totals);
    if (HasFatalFailure()) return;
    VerifySnapshots(*store, &snapshots_checked);
    if (HasFatalFailure()) return;
    VerifyModels(*store, log, i % 10 == 9, &models_behind);
    if (HasFatalFailure()) return;
    ++totals.cycles;
    std::printf(
        "cut %d (%s) after %lld ms: %zu+%zu acknowledged, %zu events; changes %llu, lost %llu, "
        "torn %llu\n",
        i, CutModeName(mode), static_cast<long long>(wait_ms), cycle.single.size(),
        cycle.multi.size(), log.size(), static_cast<unsigned long long>(report.changes),
        static_cast<unsigned long long>(report.lost_changes),
        static_cast<unsigned long long>(report.torn_changes));
    if ((i + 1) % kPerStore == 0 || i + 1 == cuts) totals.events += log.size();
  }
  std::printf(
      "POWER CUT SUMMARY: %d cuts survived, %llu events, %llu Append + %llu AppendMulti "
      "acknowledged and all present, %llu retries deduplicated, %llu snapshots checked, %llu "
      "read models found behind the head equal to the fold at their checkpoint and resumed; "
      "journaled changes %llu, of them synced %llu, lost at the cut %llu, torn %llu; directory "
      "changes undone %llu; %.1f s\n",
      totals.cycles, static_cast<unsigned long long>(totals.events),
      static_cast<unsigned long long>(totals.acked_single),
      static_cast<unsigned long long>(totals.acked_multi),
      static_cast<unsigned long long>(totals.retries),
      static_cast<unsigned long long>(snapshots_checked),
      static_cast<unsigned long long>(models_behind), static_cast<unsigned long long>(sum.changes),
      static_cast<unsigned long long>(sum.durable_changes),
      static_cast<unsigned long long>(sum.lost_changes),
      static_cast<unsigned long long>(sum.torn_changes),
      static_cast<unsigned long long>(sum.namespace_undone),
      absl::ToDoubleSeconds(absl::Now() - start));
  EXPECT_GT(totals.acked_single, 0u);
  EXPECT_GT(totals.acked_multi, 0u);
  // The cuts really dropped writes: otherwise nothing was tested.
  EXPECT_GT(sum.lost_changes, 0u);
}

// What a check of a possibly broken store found, from a forked process (a
// store written without syncs and cut may crash its reader).
struct Damage {
  bool crashed = false;  // the checker died (SIGBUS, SIGSEGV ...)
  bool unopenable = false;
  uint64_t acked = 0;  // acknowledged events
  uint64_t lost = 0;   // of them, missing or wrong
  std::string what;
};

// Forks; the child opens `store_dir` and counts acknowledged events that are
// not where the acknowledgement put them.
Damage CheckInFork(const std::string& store_dir, const Acks& acks) {
  int pipefd[2];
  Damage d;
  if (pipe(pipefd) != 0) return d;
  fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    close(pipefd[0]);
    std::string out;
    StoreOptions options;
    options.create_if_missing = false;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(store_dir, options);
    uint64_t acked = 0, lost = 0;
    if (!store.ok()) {
      out = "unopenable " + store.status().ToString();
    } else {
      absl::StatusOr<std::vector<RecordedEvent>> log = (*store)->ReadAll(1);
      const std::vector<RecordedEvent> none;
      const std::vector<RecordedEvent>& events = log.ok() ? *log : none;
      auto check = [&](const std::string& stream, int64_t v0, uint64_t p0, uint64_t p1,
                       const std::string& writer) {
        for (uint64_t p = p0; p <= p1; ++p) {
          ++acked;
          const int64_t v = v0 + static_cast<int64_t>(p - p0);
          const bool ok = p <= events.size() && events[p - 1].stream == stream &&
                          events[p - 1].version == v &&
                          events[p - 1].payload == ChildEventPayload(stream, v, writer, kMaxPad);
          if (!ok) ++lost;
        }
      };
      for (const auto& a : acks.single) {
        check(a.stream, a.first_version, a.first_position, a.last_position, a.writer);
      }
      for (const auto& m : acks.multi) {
        for (const auto& part : m.parts) {
          check(part.stream, part.first_version, part.first_position, part.last_position, m.writer);
        }
      }
      out = absl::StrCat("checked ", acked, " ", lost, " ", log.ok() ? "" : "unreadable");
    }
    (void)!write(pipefd[1], out.data(), out.size());
    _exit(0);
  }
  close(pipefd[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof(buf))) > 0) out.append(buf, n);
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  d.what = out;
  if (!WIFEXITED(status)) {
    d.crashed = true;
    d.what = DescribeWaitStatus(status);
  } else if (absl::StartsWith(out, "unopenable")) {
    d.unopenable = true;
  } else {
    unsigned long long acked = 0, lost = 0;
    std::sscanf(out.c_str(), "checked %llu %llu", &acked, &lost);
    d.acked = acked;
    d.lost = lost;
  }
  return d;
}

TEST(PowerCutTest, NoSyncStoreLosesAcknowledgedAppendsAndTheHarnessSeesIt) {
  const int cuts = EnvInt("RILL_POWERCUT_NOSYNC_CUTS", 15);
  const uint64_t seed = TestSeed();
  std::printf("RILL_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  TempDir dir;
  int cuts_with_acks = 0, cuts_with_loss = 0, crashed = 0, unopenable = 0;
  uint64_t acked = 0, lost = 0;
  for (int i = 0; i < cuts; ++i) {
    const CutMode mode = static_cast<CutMode>(i % 3);
    SCOPED_TRACE(absl::StrCat("cut ", i, " (", CutModeName(mode), "), RILL_TEST_SEED=", seed));
    Cut cut(dir, "nosync");
    fs::remove_all(cut.root);
    fs::create_directories(cut.root);
    SyncDir(cut.root);
    const std::string store_dir = cut.root + "/store";
    CreateStoreOnDisk(cut.root, store_dir);
    if (HasFatalFailure()) return;
    const std::string ack_path = dir.Sub(absl::StrCat("acks-", i));
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ChildProcess> child,
        StartTorture(dir, cut, store_dir, ack_path, i % 2 == 1, true, seed + i));
    absl::SleepFor(absl::Milliseconds(50 + rng() % 150));
    child->Kill(SIGKILL);
    child->Wait();
    Acks cycle;
    ASSERT_TRUE(ParseTortureAcks(ReadFileOrEmpty(ack_path), &cycle.single, &cycle.multi));
    RILL_ASSERT_OK(RollBack(cut.journal, cut.root, cut.stash, mode, seed * 31 + i).status());
    const Damage d = CheckInFork(store_dir, cycle);
    const bool any_ack = !cycle.single.empty() || !cycle.multi.empty();
    const bool loss = d.crashed || d.unopenable || d.lost > 0;
    cuts_with_acks += any_ack;
    cuts_with_loss += any_ack && loss;
    crashed += d.crashed;
    unopenable += d.unopenable;
    acked += d.acked;
    lost += d.lost;
    std::printf("cut %d (%s): %zu+%zu acknowledged; %s\n", i, CutModeName(mode),
                cycle.single.size(), cycle.multi.size(), d.what.c_str());
    // Nothing of a no-sync store was ever synced: dropping what was not
    // leaves none of the acknowledged appends.
    if (mode == CutMode::kDropUnsynced && any_ack) {
      EXPECT_TRUE(loss) << "the harness missed a loss: " << d.what;
    }
  }
  std::printf(
      "NO-SYNC SUMMARY: %d cuts after acknowledgements, %d of them lost acknowledged appends; "
      "%llu of %llu acknowledged events checked were lost; %d stores could not be opened, %d "
      "readers crashed\n",
      cuts_with_acks, cuts_with_loss, static_cast<unsigned long long>(lost),
      static_cast<unsigned long long>(acked), unopenable, crashed);
  EXPECT_GT(cuts_with_acks, 0);
  EXPECT_GT(cuts_with_loss, 0);
}

// A fresh root for `cut` holding a new node of `stream` (one replica on
// `cluster`), opened and closed once by this process (its replica.boot says
// "clean") and synced: sets *node and *replica_id (its replica's store id).
void NewCutNode(const Cut& cut, NatsCluster* cluster, const std::string& stream, std::string* node,
                std::string* replica_id) {
  fs::remove_all(cut.root);
  fs::create_directories(cut.root);
  SyncDir(cut.root);
  *node = cut.root + "/node";
  ReplicationOptions repl;
  repl.servers = cluster->urls();
  repl.stream = stream;
  repl.replicas = 1;
  RILL_ASSERT_OK(InitReplicatedNode(*node, repl));
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(*node));
    *replica_id = store->store_id();
  }
  ASSERT_EQ(ReadFileOrEmpty(*node + "/replica.boot"), "clean\n");
  SyncDir(cut.root);
}

// An append_child (mode=own, 2 threads of 2 streams "r-t<t>-s<k>", up to 2
// events per append, `more` arguments) on `node` under `cut`'s journal,
// started and ready; null after a failed assertion.
std::unique_ptr<ChildProcess> StartCutAppender(const TempDir& dir, const Cut& cut,
                                               const std::string& node, const std::string& ack_path,
                                               const std::string& tag,
                                               std::vector<std::string> more) {
  std::vector<std::string> args = {"dir=" + node, "ack=" + ack_path, "mode=own", "threads=2",
                                   "streams=2",   "max_events=2",    "prefix=r", "writer=r"};
  args.insert(args.end(), more.begin(), more.end());
  absl::StatusOr<std::unique_ptr<ChildProcess>> child =
      ChildProcess::Start("append_child", args, dir.Sub(tag + ".err"), cut.Env());
  EXPECT_TRUE(child.ok()) << child.status();
  if (!child.ok()) return nullptr;
  absl::StatusOr<std::string> ready = (*child)->ReadLine(absl::Seconds(60));
  EXPECT_TRUE(ready.ok() && *ready == "ready") << (*child)->Stderr();
  if (!ready.ok() || *ready != "ready") return nullptr;
  return *std::move(child);
}

// A replicated node's replica commits without fsync (the default,
// docs/replication.md), so a power cut may leave it damaged; the node's
// replica.boot marker, fsync'd before the first unsynced commit, must make
// the next boot's open delete it and rebuild it from JetStream, which the
// cut did not touch (its servers stand for other machines). An append_child
// on the node is cut; after the rollback and a new boot id the node must be
// a new replica (another store id: if the marker's sync were missing, a
// dropped write would leave "clean" and the damaged replica in use) holding
// every acknowledged append once.
TEST(PowerCutTest, AnUnsyncedReplicaIsRebuiltFromJetStreamAfterACut) {
  const int cuts = EnvInt("RILL_POWERCUT_REPLICA_CUTS", 6);
  constexpr size_t kChildMaxPad = 200;  // append_child's default
  const uint64_t seed = TestSeed();
  std::printf("RILL_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<NatsCluster> cluster, NatsCluster::Start(1));
  TempDir dir;
  size_t checked = 0;
  for (int i = 0; i < cuts; ++i) {
    const CutMode mode = static_cast<CutMode>(i % 3);
    SCOPED_TRACE(absl::StrCat("cut ", i, " (", CutModeName(mode), "), RILL_TEST_SEED=", seed));
    Cut cut(dir, "replica");
    std::string node, replica_id;
    NewCutNode(cut, cluster.get(), absl::StrCat("pc", i), &node, &replica_id);
    if (HasFatalFailure()) return;
    const std::string ack_path = dir.Sub(absl::StrCat("replica-acks-", i));
    std::unique_ptr<ChildProcess> child =
        StartCutAppender(dir, cut, node, ack_path, "replica-child",
                         {"appends=0", "keys=1", absl::StrCat("seed=", seed + i)});
    ASSERT_NE(child, nullptr);
    ASSERT_TRUE(::rill::testing::WaitUntil(
        [&] {
          std::vector<AckRecord> so_far;
          return ParseAckFile(ReadFileOrEmpty(ack_path), &so_far) && so_far.size() >= 20;
        },
        absl::Seconds(60)))
        << child->Stderr();
    absl::SleepFor(absl::Milliseconds(rng() % 100));
    child->Kill(SIGKILL);
    child->Wait();
    RILL_ASSERT_OK(RollBack(cut.journal, cut.root, cut.stash, mode, seed * 13 + i).status());

    {
      ::rill::testing::ScopedFakeBoot after(absl::StrCat("after-cut-", i));
      RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(node));
      EXPECT_NE(store->store_id(), replica_id) << "the replica was not rebuilt";
      RILL_ASSERT_OK(WaitForReplica(store.get(), absl::Seconds(60)));
      std::vector<AckRecord> acks;
      ASSERT_TRUE(ParseAckFile(ReadFileOrEmpty(ack_path), &acks));
      ASSERT_FALSE(acks.empty());
      checked += acks.size();
      for (const auto& [tag, n] : AdoptInFlightTails(store.get(), {"r"}, &acks)) {
        EXPECT_LE(n, 4) << tag;
      }
      ::rill::testing::VerifyLog(store.get(), acks, kChildMaxPad);
    }
    std::printf("cut %d (%s): replica rebuilt, every acknowledged append present\n", i,
                CutModeName(mode));
  }
  std::printf("REPLICA SUMMARY: %d cuts, %zu acknowledged appends checked, none lost\n", cuts,
              checked);

  // A node closed by its last process before the cut was synced by it and
  // marked clean: it is kept, as it was (same store id, everything applied;
  // a read-only open applies nothing). Without the sync at close the
  // dropped writes would leave an older replica behind the "clean" marker.
  Cut cut(dir, "replica-closed");
  std::string node, replica_id;
  NewCutNode(cut, cluster.get(), "pc-closed", &node, &replica_id);
  if (HasFatalFailure()) return;
  const std::string ack_path = dir.Sub("replica-closed-acks");
  std::unique_ptr<ChildProcess> child =
      StartCutAppender(dir, cut, node, ack_path, "replica-closed-child", {"appends=20"});
  ASSERT_NE(child, nullptr);
  absl::StatusOr<std::string> done = child->ReadLine(absl::Seconds(120));
  ASSERT_TRUE(done.ok() && absl::StartsWith(*done, "done")) << child->Stderr();
  ASSERT_EQ(child->Wait(), 0) << child->Stderr();
  ASSERT_EQ(ReadFileOrEmpty(node + "/replica.boot"), "clean\n");
  RILL_ASSERT_OK(
      RollBack(cut.journal, cut.root, cut.stash, CutMode::kDropUnsynced, seed * 17).status());
  ::rill::testing::ScopedFakeBoot after("after-closed-cut");
  StoreOptions read_only;
  read_only.read_only = true;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(node, read_only));
  EXPECT_EQ(store->store_id(), replica_id);
  std::vector<AckRecord> acks;
  ASSERT_TRUE(ParseAckFile(ReadFileOrEmpty(ack_path), &acks));
  ASSERT_EQ(acks.size(), 40u);
  ::rill::testing::VerifyLog(store.get(), acks, kChildMaxPad);
}

#ifdef RILL_TOOL_BINARY
using ::rill::testing::RunTool;
using ::rill::testing::ToolOptions;
using ::rill::testing::ToolRun;

// Runs `rill args...` under the journal of `cut`, SIGKILLed just before its
// `kill_at`-th change (0: not).
ToolRun RunToolCut(const Cut& cut, const std::vector<std::string>& args, uint64_t kill_at) {
  ToolOptions options;
  options.env = cut.Env(kill_at);
  return RunTool(args, options);
}

// A store of `n` events over a few streams, with snapshots (so it has
// derived data too), created and synced by the test process.
std::vector<RecordedEvent> MakeSource(const std::string& root, const std::string& dir, int n) {
  std::vector<RecordedEvent> log;
  {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir);
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return log;
    std::mt19937_64 rng(n);
    for (int i = 0; i < n;) {
      const int batch = 1 + static_cast<int>(rng() % 8);
      const std::string stream = absl::StrCat("src-", rng() % 5);
      EXPECT_TRUE(
          (*store)->Append(stream, ExpectedVersion::Any(), testing::MakeEvents(batch, i)).ok());
      i += batch;
    }
    absl::StatusOr<std::unique_ptr<SnapshotStore>> snapshots = SnapshotStore::Open(store->get());
    EXPECT_TRUE(snapshots.ok());
    for (int s = 0; s < 5 && snapshots.ok(); ++s) {
      const std::string stream = absl::StrCat("src-", s);
      absl::StatusOr<StreamInfo> info = (*store)->GetStreamInfo(stream);
      if (info.ok() && info->exists) {
        EXPECT_TRUE((*snapshots)->Save(stream, info->last_version, 1, "state-" + stream).ok());
      }
    }
    absl::StatusOr<std::vector<RecordedEvent>> all = (*store)->ReadAll(1);
    EXPECT_TRUE(all.ok());
    if (all.ok()) log = *all;
  }
  for (const std::string& d : {dir + "/log", dir + "/derived", dir, root}) SyncDir(d);
  return log;
}

// `dir` opens read-only and holds the first `head` events of `want` (its
// whole log when `whole`), and passes VerifyStore.
void ExpectPrefixOf(const std::string& dir, const std::vector<RecordedEvent>& want, bool whole,
                    uint64_t* head) {
  StoreOptions options;
  options.read_only = true;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir, options));
  RILL_ASSERT_OK_AND_ASSIGN(const VerifyReport report, VerifyStore(store.get()));
  ASSERT_TRUE(report.ok()) << report.problems.front();
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> got, store->ReadAll(1));
  ASSERT_LE(got.size(), want.size());
  if (whole) {
    ASSERT_EQ(got.size(), want.size());
  }
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].position, want[i].position);
    ASSERT_EQ(got[i].stream, want[i].stream);
    ASSERT_EQ(got[i].version, want[i].version);
    ASSERT_EQ(got[i].type, want[i].type);
    ASSERT_EQ(got[i].payload, want[i].payload);
    ASSERT_EQ(got[i].id, want[i].id);
  }
  *head = got.size();
}

// A read-only open of a copy that is not whole fails with a message (it
// must not open as something else, nor crash).
void ExpectNotAStoreOrWhole(const std::string& dir, const std::vector<RecordedEvent>& want,
                            std::map<std::string, int>* outcomes) {
  StoreOptions options;
  options.read_only = true;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir, options);
  if (!store.ok()) {
    EXPECT_FALSE(store.status().message().empty());
    ++(*outcomes)[absl::StrReplaceAll(store.status().ToString(), {{dir, "DEST"}})];
    return;
  }
  store->reset();
  uint64_t head = 0;
  ExpectPrefixOf(dir, want, true, &head);
  ++(*outcomes)["whole"];
}

constexpr int kToolCuts = 15;

TEST(PowerCutTest, CutDuringBackupLeavesTheSourceWholeAndNoHalfBackup) {
  const uint64_t seed = TestSeed();
  std::printf("RILL_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  TempDir dir;
  Cut first(dir, "backup");
  const std::string src = first.root + "/src";
  const std::vector<RecordedEvent> want = MakeSource(first.root, src, 3000);
  if (HasFatalFailure()) return;
  uint64_t head = 0;
  // A whole backup, then the cut: all of it must be there.
  const ToolRun whole = RunToolCut(first, {"backup", src, first.root + "/b0"}, 0);
  ASSERT_EQ(whole.exit_code, 0) << whole.Describe();
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t changes, CountChanges(first.journal));
  RILL_ASSERT_OK(
      RollBack(first.journal, first.root, first.stash, CutMode::kDropUnsynced, seed).status());
  ExpectPrefixOf(first.root + "/b0", want, true, &head);
  if (HasFatalFailure()) return;
  std::map<std::string, int> outcomes;
  for (int i = 1; i <= kToolCuts; ++i) {
    const CutMode mode = static_cast<CutMode>(i % 3);
    const uint64_t kill_at = 1 + rng() % changes;
    SCOPED_TRACE(absl::StrCat("cut ", i, " (", CutModeName(mode), ") before change ", kill_at,
                              " of ", changes, ", RILL_TEST_SEED=", seed));
    Cut cut(dir, "backup");
    const std::string dest = cut.root + absl::StrCat("/b", i);
    const ToolRun run = RunToolCut(cut, {"backup", src, dest}, kill_at);
    RILL_ASSERT_OK(RollBack(cut.journal, cut.root, cut.stash, mode, seed + i).status());
    ExpectPrefixOf(src, want, true, &head);  // the source is untouched
    if (HasFatalFailure()) return;
    if (run.exit_code == 0) {
      ExpectPrefixOf(dest, want, true, &head);  // acknowledged: whole
      ++outcomes["finished"];
    } else {
      ExpectNotAStoreOrWhole(dest, want, &outcomes);
    }
    if (HasFatalFailure()) return;
  }
  std::printf("BACKUP CUTS: %d, a whole backup makes %llu changes; outcomes:\n", kToolCuts,
              static_cast<unsigned long long>(changes));
  for (const auto& [what, n] : outcomes) std::printf("  %d x %s\n", n, what.c_str());
}

TEST(PowerCutTest, CutDuringImportLeavesAWholePrefix) {
  const uint64_t seed = TestSeed();
  std::printf("RILL_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  TempDir dir;
  // The file to import: an export of a store outside the journaled root.
  fs::create_directories(dir.Sub("outside"));
  const std::vector<RecordedEvent> want =
      MakeSource(dir.Sub("outside"), dir.Sub("outside/src"), 600);
  if (HasFatalFailure()) return;
  const std::string file = dir.Sub("events.jsonl");
  const ToolRun exported = RunTool({"export", dir.Sub("outside/src"), "--output", file});
  ASSERT_EQ(exported.exit_code, 0) << exported.Describe();
  Cut first(dir, "import");
  uint64_t head = 0;
  const ToolRun whole = RunToolCut(first, {"import", first.root + "/i0", file}, 0);
  ASSERT_EQ(whole.exit_code, 0) << whole.Describe();
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t changes, CountChanges(first.journal));
  RILL_ASSERT_OK(
      RollBack(first.journal, first.root, first.stash, CutMode::kDropUnsynced, seed).status());
  ExpectPrefixOf(first.root + "/i0", want, true, &head);
  if (HasFatalFailure()) return;
  std::map<std::string, int> outcomes;
  for (int i = 1; i <= kToolCuts; ++i) {
    const CutMode mode = static_cast<CutMode>(i % 3);
    const uint64_t kill_at = 1 + rng() % changes;
    SCOPED_TRACE(absl::StrCat("cut ", i, " (", CutModeName(mode), ") before change ", kill_at,
                              " of ", changes, ", RILL_TEST_SEED=", seed));
    Cut cut(dir, "import");
    const std::string dest = cut.root + absl::StrCat("/i", i);
    const ToolRun run = RunToolCut(cut, {"import", dest, file}, kill_at);
    RILL_ASSERT_OK(RollBack(cut.journal, cut.root, cut.stash, mode, seed + i).status());
    StoreOptions options;
    options.read_only = true;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dest, options);
    if (!store.ok()) {
      // Cut before the new store was on disk: nothing was imported.
      ASSERT_NE(run.exit_code, 0) << run.Describe();
      ++outcomes[absl::StatusCodeToString(store.status().code())];
      continue;
    }
    store->reset();
    // A prefix of the file, whole transactions, all of it once the import
    // said so.
    ExpectPrefixOf(dest, want, run.exit_code == 0, &head);
    if (HasFatalFailure()) return;
    ++outcomes[run.exit_code == 0 ? "finished" : head == 0 ? "empty store" : "a prefix"];
  }
  std::printf("IMPORT CUTS: %d, a whole import makes %llu changes; outcomes:\n", kToolCuts,
              static_cast<unsigned long long>(changes));
  for (const auto& [what, n] : outcomes) std::printf("  %d x %s\n", n, what.c_str());
}
#endif  // RILL_TOOL_BINARY

}  // namespace
}  // namespace rill
