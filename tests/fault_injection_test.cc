// Fault injection below the log: a full disk while projections, snapshots
// and appends write (RLIMIT_FSIZE in a forked child, as in disk_full_test,
// which covers appends alone), and LMDB's lock file held by another process.
// Corrupt and truncated data files are corruption_test's; an unwritable
// store directory is open_test's (OpenPermissionTest).
//
// Full disk: every writer gets ResourceExhausted and writes nothing; reads
// and read models keep serving what was committed; a projection does not
// stop (it retries the batch until there is room); once there is room again
// everything goes on by itself, and the store reopened afterwards holds
// every acknowledged event, read models equal to a fold of the log, and the
// snapshots saved.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "projector_defs.h"
#include "rill/projection.h"
#include "rill/snapshot.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::DescribeWaitStatus;
using ::rill::testing::DumpView;
using ::rill::testing::ExitedWithCode;
using ::rill::testing::ModelDump;
using ::rill::testing::PosKey;
using ::rill::testing::ReadFileOrEmpty;
using ::rill::testing::RunInForkedChild;
using ::rill::testing::TempDir;
using ::rill::testing::WaitUntil;

constexpr int kEvents = 400;
constexpr absl::Duration kHang = absl::Seconds(60);  // turns a hang into a failure

std::string Payload(uint64_t n) {
  return absl::StrCat("{\"n\":", n, ",\"pad\":\"", std::string(1000, 'a' + n % 26), "\"}");
}

// "copy": every event's payload under its position, so the derived
// environment grows by about a kilobyte per event.
ProjectionDef CopyProjection() {
  ProjectionDef def;
  def.name = "copy";
  def.tables = {"rows"};
  def.apply = [](const EventView& e, ReadModelTxn& txn) {
    return txn.Put("rows", PosKey(e.position()), e.payload());
  };
  return def;
}

ModelDump FoldCopy(const std::vector<RecordedEvent>& log, uint64_t upto) {
  ModelDump m;
  m["rows"];
  for (const RecordedEvent& e : log) {
    if (e.position <= upto) m["rows"][PosKey(e.position)] = e.payload;
  }
  return m;
}

int Fail(const std::string& what) {
  fprintf(stderr, "full disk child: %s\n", what.c_str());
  return 3;
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// The scenario, in a forked child (RLIMIT_FSIZE is process-wide). Returns 0
// when every check passed.
int FullDiskScenario(const std::string& store_dir) {
  absl::StatusOr<std::unique_ptr<Store>> opened = Store::Open(store_dir);
  if (!opened.ok()) return Fail("Open: " + opened.status().ToString());
  Store* store = opened->get();
  absl::StatusOr<std::unique_ptr<SnapshotStore>> snapshots = SnapshotStore::Open(store);
  if (!snapshots.ok()) return Fail("SnapshotStore::Open: " + snapshots.status().ToString());
  if (absl::Status s = (*snapshots)->Save("snap", 0, 1, "small"); !s.ok()) {
    return Fail("first snapshot: " + s.ToString());
  }

  // From here on no file may grow past a little more than the derived
  // environment's size now (the log is larger already).
  const uint64_t derived = FileSize(store_dir + "/derived/data.mdb");
  signal(SIGXFSZ, SIG_IGN);
  rlimit old_limit;
  getrlimit(RLIMIT_FSIZE, &old_limit);
  rlimit limit = old_limit;
  limit.rlim_cur = static_cast<rlim_t>(derived + (64 << 10));
  if (setrlimit(RLIMIT_FSIZE, &limit) != 0) return Fail("setrlimit");

  RunnerOptions runner_options;
  runner_options.batch_size = 16;
  runner_options.poll_interval = absl::Milliseconds(20);
  absl::StatusOr<std::unique_ptr<ProjectionRunner>> runner =
      ProjectionRunner::Start(store, {CopyProjection()}, runner_options);
  if (!runner.ok()) return Fail("runner: " + runner.status().ToString());
  absl::StatusOr<uint64_t> head = store->HeadPosition();
  if (!head.ok()) return Fail("head");

  // The projection hits the full disk, says so, and keeps going (not failed).
  ProjectionStatus st;
  const bool hit = WaitUntil(
      [&] {
        absl::StatusOr<ProjectionStatus> s = (*runner)->Status("copy");
        if (s.ok()) st = *s;
        return s.ok() && absl::StrContains(s->last_error, "RESOURCE_EXHAUSTED");
      },
      kHang);
  if (!hit) return Fail(absl::StrCat("the projection never met the full disk: ", st.last_error));
  if (st.state == ProjectionState::kFailed) return Fail("the projection failed for good");
  if (st.checkpoint >= *head) return Fail("the projection got through a full disk");
  fprintf(stderr, "full disk child: projection stopped at %llu of %llu: %s\n",
          static_cast<unsigned long long>(st.checkpoint), static_cast<unsigned long long>(*head),
          st.last_error.c_str());
  // What it committed serves, consistently.
  {
    absl::StatusOr<std::unique_ptr<ReadModelView>> view = (*runner)->View("copy");
    if (!view.ok()) return Fail("View: " + view.status().ToString());
    absl::StatusOr<ModelDump> got = DumpView(**view, {"rows"});
    absl::StatusOr<std::vector<RecordedEvent>> log = store->ReadAll(1);
    if (!got.ok() || !log.ok()) return Fail("reading the model or the log");
    if (!(*got == FoldCopy(*log, (*view)->checkpoint()))) {
      return Fail("the model on a full disk differs from the fold at its checkpoint");
    }
  }

  // Snapshots and appends meet the full disk too, and write nothing.
  const std::string big(200 << 10, 'S');
  absl::Status saved = (*snapshots)->Save("snap", 0, 1, big);
  if (saved.code() != absl::StatusCode::kResourceExhausted) {
    return Fail("snapshot save on a full disk: " + saved.ToString());
  }
  absl::StatusOr<std::optional<Snapshot>> latest = (*snapshots)->LoadLatest("snap", 1);
  if (!latest.ok() || !latest->has_value() || (*latest)->data != "small") {
    return Fail("the snapshot saved before the disk filled up is gone");
  }
  EventData e;
  e.type = "Late";
  e.payload = Payload(0);
  absl::StatusOr<AppendResult> appended = store->Append("late", ExpectedVersion::Any(), {e});
  if (appended.status().code() != absl::StatusCode::kResourceExhausted) {
    return Fail("append on a full disk: " + appended.status().ToString());
  }
  absl::StatusOr<uint64_t> head_after = store->HeadPosition();
  if (!head_after.ok() || *head_after != *head) return Fail("the failed append wrote events");

  // Room again: everything goes on without being told.
  if (setrlimit(RLIMIT_FSIZE, &old_limit) != 0) return Fail("setrlimit back");
  if (absl::Status s = (*runner)->WaitFor("copy", *head, kHang); !s.ok()) {
    return Fail("the projection did not go on after the disk had room: " + s.ToString());
  }
  if (absl::Status s = (*snapshots)->Save("snap", 0, 1, big); !s.ok()) {
    return Fail("snapshot save after the disk had room: " + s.ToString());
  }
  appended = store->Append("late", ExpectedVersion::Any(), {e});
  if (!appended.ok() || appended->first_position != *head + 1) {
    return Fail("append after the disk had room: " + appended.status().ToString());
  }
  runner->reset();
  snapshots->reset();
  return 0;
}

TEST(FaultInjectionTest, FullDiskUnderProjectionsSnapshotsAndAppendsPassesWhenThereIsRoom) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
    std::vector<EventData> events;
    for (int i = 0; i < kEvents; ++i) {
      EventData e;
      e.type = "Fill";
      e.payload = Payload(i);
      events.push_back(std::move(e));
    }
    RILL_ASSERT_OK(store->Append("fill", ExpectedVersion::NoStream(), events).status());
    RILL_ASSERT_OK(
        store->Append("snap", ExpectedVersion::NoStream(), {testing::MakeEvent("S", 0)}).status());
  }
  const int status = RunInForkedChild([&] { return FullDiskScenario(store_dir); });
  ASSERT_TRUE(ExitedWithCode(status, 0))
      << "the child " << DescribeWaitStatus(status) << " (its stderr is above)";

  // Reopened: every acknowledged event, a model equal to the fold, the
  // snapshot saved once there was room.
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log, store->ReadAll(1));
  ASSERT_EQ(log.size(), static_cast<size_t>(kEvents + 2));
  for (size_t i = 0; i < log.size(); ++i) ASSERT_EQ(log[i].position, i + 1);
  EXPECT_EQ(log.back().stream, "late");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {CopyProjection()}));
  RILL_ASSERT_OK(runner->WaitFor("copy", log.size(), kHang));
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view, runner->View("copy"));
    RILL_ASSERT_OK_AND_ASSIGN(const ModelDump got, DumpView(*view, {"rows"}));
    EXPECT_TRUE(got == FoldCopy(log, log.size()));
  }
  runner.reset();
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnapshotStore> snapshots,
                            SnapshotStore::Open(store.get()));
  RILL_ASSERT_OK_AND_ASSIGN(const std::optional<Snapshot> latest, snapshots->LoadLatest("snap", 1));
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->data.size(), size_t{200} << 10);
}

// A process that holds LMDB's lock file with an exclusive POSIX lock (what
// LMDB's first opener does for a moment while it sets the file up) and does
// not let go. Waits until its parent dies or kills it.
pid_t HoldLockFile(const std::string& path) {
  int ready[2];
  if (pipe(ready) != 0) return -1;
  const pid_t pid = fork();
  if (pid != 0) {
    close(ready[1]);
    char c = 0;
    const bool ok = read(ready[0], &c, 1) == 1 && c == 'L';
    close(ready[0]);
    return ok ? pid : -1;
  }
  close(ready[0]);
  const int fd = open(path.c_str(), O_RDWR);
  struct flock lock = {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  lock.l_start = 0;
  lock.l_len = 1;
  const char c = fd >= 0 && fcntl(fd, F_SETLK, &lock) == 0 ? 'L' : 'X';
  if (write(ready[1], &c, 1) != 1) _exit(3);
  for (;;) pause();
}

TEST(FaultInjectionTest, LockFileHeldByAnotherProcessIsUnavailableNotAHang) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
    RILL_ASSERT_OK(
        store->Append("s", ExpectedVersion::Any(), {testing::MakeEvent("E", 1)}).status());
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnapshotStore> snapshots,
                              SnapshotStore::Open(store.get()));  // creates derived/
  }
  for (const char* env : {"log", "derived"}) {
    SCOPED_TRACE(env);
    const pid_t holder = HoldLockFile(absl::StrCat(store_dir, "/", env, "/lock.mdb"));
    ASSERT_GT(holder, 0);
    // Open in a forked child with an alarm: before the fix it hung in
    // mdb_env_open for as long as the lock was held.
    const int status = RunInForkedChild([&] {
      alarm(60);
      absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(store_dir);
      absl::Status s = store.status();
      if (store.ok()) s = SnapshotStore::Open(store->get()).status();
      if (s.code() != absl::StatusCode::kUnavailable ||
          !absl::StrContains(s.message(), absl::StrCat("process ", holder))) {
        fprintf(stderr, "open with %s/lock.mdb held: %s\n", env, s.ToString().c_str());
        return 1;
      }
      return 0;
    });
    kill(holder, SIGKILL);
    waitpid(holder, nullptr, 0);
    EXPECT_TRUE(ExitedWithCode(status, 0)) << "the opener " << DescribeWaitStatus(status);
    // Let go: it opens.
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
    RILL_ASSERT_OK(SnapshotStore::Open(store.get()).status());
  }
}

}  // namespace
}  // namespace rill
