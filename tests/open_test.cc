// Store::Open: creating a store, refusing what is not a store (or is a newer
// format), read-only and permission errors, and opening one store twice in
// one process.
#include <grp.h>
#include <lmdb.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "flatbuffers/flatbuffers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rill/schema/records_generated.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

namespace fs = std::filesystem;

using ::rill::testing::MakeEvents;
using ::rill::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Relative paths of everything under `dir`, sorted.
std::set<std::string> ListTree(const std::string& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    out.insert(fs::relative(it->path(), dir).string());
  }
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

// Rewrites the meta record of the (closed) store in `dir` with raw LMDB so
// that it claims `format_version`, keeping every other field.
absl::Status SetFormatVersion(const std::string& dir, uint32_t format_version) {
  MDB_env* env = nullptr;
  int rc = mdb_env_create(&env);
  if (rc != 0) return absl::InternalError(mdb_strerror(rc));
  std::unique_ptr<MDB_env, void (*)(MDB_env*)> env_closer(env, mdb_env_close);
  mdb_env_set_maxdbs(env, 16);
  const std::string path = dir + "/log";
  if ((rc = mdb_env_open(env, path.c_str(), 0, 0644)) != 0) {
    return absl::InternalError(absl::StrCat("open ", path, ": ", mdb_strerror(rc)));
  }
  MDB_txn* txn = nullptr;
  if ((rc = mdb_txn_begin(env, nullptr, 0, &txn)) != 0) {
    return absl::InternalError(mdb_strerror(rc));
  }
  MDB_dbi dbi;
  if ((rc = mdb_dbi_open(txn, "meta", 0, &dbi)) != 0) {
    mdb_txn_abort(txn);
    return absl::InternalError(absl::StrCat("meta db: ", mdb_strerror(rc)));
  }
  std::string key = "store";
  MDB_val k{key.size(), key.data()};
  MDB_val v;
  if ((rc = mdb_get(txn, dbi, &k, &v)) != 0) {
    mdb_txn_abort(txn);
    return absl::InternalError(absl::StrCat("meta[store]: ", mdb_strerror(rc)));
  }
  // Copy out: LMDB values are only 2-byte aligned.
  std::vector<uint64_t> aligned((v.mv_size + 7) / 8);
  memcpy(aligned.data(), v.mv_data, v.mv_size);
  const auto* bytes = reinterpret_cast<const uint8_t*>(aligned.data());
  flatbuffers::Verifier verifier(bytes, v.mv_size);
  if (!verifier.VerifyBuffer<schema::StoreMeta>(nullptr)) {
    mdb_txn_abort(txn);
    return absl::InternalError("meta[store] is not a StoreMeta");
  }
  const schema::StoreMeta* old = flatbuffers::GetRoot<schema::StoreMeta>(bytes);
  if (old->magic() == nullptr || old->magic()->str() != "rill") {
    mdb_txn_abort(txn);
    return absl::InternalError("meta[store] has no \"rill\" magic");
  }
  flatbuffers::FlatBufferBuilder fbb;
  auto magic = fbb.CreateString("rill");
  auto id = old->store_id() ? fbb.CreateVector(old->store_id()->data(), old->store_id()->size())
                            : fbb.CreateVector(std::vector<uint8_t>(16, 1));
  fbb.Finish(schema::CreateStoreMeta(fbb, magic, format_version, id, old->created_us()));
  MDB_val nv{fbb.GetSize(), fbb.GetBufferPointer()};
  if ((rc = mdb_put(txn, dbi, &k, &nv, 0)) != 0) {
    mdb_txn_abort(txn);
    return absl::InternalError(mdb_strerror(rc));
  }
  if ((rc = mdb_txn_commit(txn)) != 0) {
    return absl::InternalError(mdb_strerror(rc));
  }
  return absl::OkStatus();
}

TEST(OpenTest, CreatesAStoreInAMissingDirectory) {
  TempDir tmp;
  const std::string dir = tmp.Sub("store");
  ASSERT_FALSE(fs::exists(dir));
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir));
    EXPECT_TRUE(fs::is_directory(dir));
    EXPECT_EQ(store->dir(), dir);
    RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store->HeadPosition());
    EXPECT_EQ(head, 0u);
    RILL_ASSERT_OK(store->Append("s", ExpectedVersion::NoStream(), MakeEvents(2)).status());
  }
  // It is a store now: it opens again, also without create_if_missing.
  StoreOptions no_create;
  no_create.create_if_missing = false;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir, no_create));
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store->HeadPosition());
  EXPECT_EQ(head, 2u);
}

TEST(OpenTest, CreatesAStoreInAnEmptyDirectory) {
  TempDir tmp;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(tmp.path()));
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats stats, store->Stats());
  EXPECT_EQ(stats.format_version, kFormatVersion);
  EXPECT_EQ(stats.head_position, 0u);
  EXPECT_FALSE(ListTree(tmp.path()).empty());
}

TEST(OpenTest, MissingDirectoryWithoutCreateIfMissingIsNotFound) {
  TempDir tmp;
  const std::string dir = tmp.Sub("store");
  StoreOptions options;
  options.create_if_missing = false;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir, options);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kNotFound) << store.status();
  EXPECT_FALSE(fs::exists(dir));
}

TEST(OpenTest, EmptyDirectoryWithoutCreateIfMissingFails) {
  TempDir tmp;
  StoreOptions options;
  options.create_if_missing = false;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(tmp.path(), options);
  EXPECT_FALSE(store.ok());
  EXPECT_THAT(ListTree(tmp.path()), IsEmpty());
}

TEST(OpenTest, NonStoreDirectoryIsFailedPreconditionAndUntouched) {
  TempDir tmp;
  WriteFile(tmp.Sub("notes.txt"), "my precious notes\n");
  const std::set<std::string> before = ListTree(tmp.path());
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(tmp.path());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_EQ(ListTree(tmp.path()), before);
  EXPECT_EQ(ReadFile(tmp.Sub("notes.txt")), "my precious notes\n");
}

TEST(OpenTest, DirectoryWithOnlyASubdirectoryIsNotAStore) {
  TempDir tmp;
  fs::create_directory(tmp.Sub("photos"));
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(tmp.path());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_THAT(ListTree(tmp.path()), ElementsAre("photos"));
}

// A process killed inside mdb_env_open while creating the store leaves
// log/lock.mdb and no log/data.mdb (LMDB creates the lock file first): that
// directory must still become a store, not be refused as someone else's.
// (Found by CrashCreationTest, which hit it about once in 200 kills.)
TEST(OpenTest, LockFileLeftByAnInterruptedCreationBecomesAStore) {
  TempDir tmp;
  fs::create_directories(tmp.Sub("log"));
  WriteFile(tmp.Sub("log/lock.mdb"), "");
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(tmp.path());
  ASSERT_TRUE(store.ok()) << store.status();
  RILL_ASSERT_OK_AND_ASSIGN(const AppendResult r,
                            (*store)->Append("s", ExpectedVersion::NoStream(), MakeEvents(1)));
  EXPECT_EQ(r.first_position, 1u);
}

// The same leftover while a live process has the store open is no
// interrupted creation: the store's data file was deleted or moved. Open
// must say so and create nothing (a new store there would hide the loss and
// share the open store's locks); once the holder is gone, it is a leftover.
TEST(OpenTest, DeletedDataFileOfAStoreOpenElsewhereIsRefusedNotRecreated) {
  TempDir tmp;
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(tmp.path()));
    ASSERT_TRUE(store->Append("s", ExpectedVersion::NoStream(), MakeEvents(2)).ok());
  }
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t holder = fork();
  ASSERT_GE(holder, 0);
  if (holder == 0) {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(tmp.path());
    const char c = store.ok() ? '1' : '0';
    if (write(ready[1], &c, 1) != 1) _exit(1);
    pause();
    _exit(0);
  }
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, '1');
  close(ready[0]);
  close(ready[1]);
  fs::remove(tmp.Sub("log/data.mdb"));

  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(tmp.path());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("data.mdb is missing"));
  EXPECT_FALSE(fs::exists(tmp.Sub("log/data.mdb")));

  kill(holder, SIGKILL);
  int status = 0;
  waitpid(holder, &status, 0);
  store = Store::Open(tmp.path());
  ASSERT_TRUE(store.ok()) << store.status();
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, (*store)->HeadPosition());
  EXPECT_EQ(head, 0u);
}

TEST(OpenTest, LogDirectoryHoldingOtherFilesIsNotAStore) {
  TempDir tmp;
  fs::create_directories(tmp.Sub("log"));
  WriteFile(tmp.Sub("log/lock.mdb"), "");
  WriteFile(tmp.Sub("log/notes.txt"), "mine\n");
  const std::set<std::string> before = ListTree(tmp.path());
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(tmp.path());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_EQ(ListTree(tmp.path()), before);
}

TEST(OpenTest, RegularFileIsNotAStore) {
  TempDir tmp;
  const std::string file = tmp.Sub("file");
  WriteFile(file, "data");
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(file);
  EXPECT_FALSE(store.ok());
  EXPECT_EQ(ReadFile(file), "data");
  EXPECT_TRUE(fs::is_regular_file(file));
}

TEST(OpenTest, ReadOnlyOnAMissingStoreFailsAndCreatesNothing) {
  TempDir tmp;
  StoreOptions options;
  options.read_only = true;

  const std::string missing = tmp.Sub("store");
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(missing, options);
  EXPECT_FALSE(store.ok());
  EXPECT_THAT(store.status().code(),
              ::testing::AnyOf(absl::StatusCode::kFailedPrecondition, absl::StatusCode::kNotFound))
      << store.status();
  EXPECT_FALSE(fs::exists(missing));
}

// store.h: "FailedPrecondition ... read_only on a missing store". The
// directory exists, so this is not NotFound's "dir does not exist".
TEST(OpenTest, ReadOnlyOnAnEmptyDirectoryIsFailedPrecondition) {
  TempDir tmp;
  StoreOptions options;
  options.read_only = true;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(tmp.path(), options);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_THAT(ListTree(tmp.path()), IsEmpty());
}

TEST(OpenTest, ReadOnlyOnAnExistingStore) {
  TempDir tmp;
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(tmp.path()));
    RILL_ASSERT_OK(store->Append("s", ExpectedVersion::Any(), MakeEvents(1)).status());
  }
  StoreOptions options;
  options.read_only = true;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(tmp.path(), options));
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats stats, store->Stats());
  EXPECT_TRUE(stats.read_only);
  EXPECT_EQ(stats.head_position, 1u);
}

TEST(OpenTest, StatsReportTheOpenOptions) {
  TempDir tmp;
  StoreOptions options;
  options.durability = Durability::kNoSyncUnsafe;
  options.max_readers = 100;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(tmp.path(), options));
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats stats, store->Stats());
  EXPECT_EQ(stats.durability, Durability::kNoSyncUnsafe);
  EXPECT_EQ(stats.max_readers, 100u);
  EXPECT_FALSE(stats.read_only);
}

class NewerFormatTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(NewerFormatTest, IsFailedPreconditionNamingTheVersion) {
  const uint32_t newer = GetParam();
  TempDir tmp;
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(tmp.path()));
    RILL_ASSERT_OK(store->Append("s", ExpectedVersion::Any(), MakeEvents(1)).status());
  }
  RILL_ASSERT_OK(SetFormatVersion(tmp.path(), newer));

  for (bool read_only : {false, true}) {
    SCOPED_TRACE(read_only);
    StoreOptions options;
    options.read_only = read_only;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(tmp.path(), options);
    ASSERT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
    EXPECT_THAT(std::string(store.status().message()), HasSubstr(std::to_string(newer)));
  }
  // The refusal did not "upgrade" or rewrite the meta record: still refused
  // after a second attempt, and the original store is intact once the version
  // is put back.
  EXPECT_EQ(Store::Open(tmp.path()).status().code(), absl::StatusCode::kFailedPrecondition);
  RILL_ASSERT_OK(SetFormatVersion(tmp.path(), kFormatVersion));
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(tmp.path()));
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store->HeadPosition());
  EXPECT_EQ(head, 1u);
}

INSTANTIATE_TEST_SUITE_P(Versions, NewerFormatTest, ::testing::Values(kFormatVersion + 1, 4242u));

// Runs Store::Open(dir, options) in a child process as user and group 65534
// (nobody) and returns the child's exit code: the absl::StatusCode of the
// result, kOpenedFine when it succeeded, kSetuidFailed when it could not drop
// root. Root ignores permission bits, so only an unprivileged child can see
// the failure.
constexpr int kOpenedFine = 100;
constexpr int kSetuidFailed = 101;
int OpenAsNobody(const std::string& dir, const StoreOptions& options) {
  pid_t pid = fork();
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) {
      _exit(kSetuidFailed);
    }
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir, options);
    if (store.ok()) {
      store->reset();
      _exit(kOpenedFine);
    }
    _exit(static_cast<int>(store.status().code()));
  }
  EXPECT_GT(pid, 0) << "fork failed";
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status)) << "child crashed, wait status " << status;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(OpenPermissionTest, UnwritableEmptyDirectoryIsPermissionDenied) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to user nobody";
  TempDir tmp;
  // nobody may traverse the temp dir but not write into `store`.
  ASSERT_EQ(chmod(tmp.path().c_str(), 0755), 0);
  const std::string dir = tmp.Sub("store");
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  const int code = OpenAsNobody(dir, StoreOptions());
  ASSERT_NE(code, kSetuidFailed);
  ASSERT_NE(code, kOpenedFine);
  EXPECT_EQ(code, static_cast<int>(absl::StatusCode::kPermissionDenied))
      << "child got " << absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  EXPECT_THAT(ListTree(dir), IsEmpty());
}

TEST(OpenPermissionTest, UnwritableExistingStoreIsPermissionDenied) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to user nobody";
  TempDir tmp;
  ASSERT_EQ(chmod(tmp.path().c_str(), 0755), 0);
  const std::string dir = tmp.Sub("store");
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir));
    RILL_ASSERT_OK(store->Append("s", ExpectedVersion::Any(), MakeEvents(1)).status());
  }
  // Root owns the directory and files; make them readable by all, writable
  // by root only.
  for (const fs::directory_entry& e : fs::recursive_directory_iterator(dir)) {
    chmod(e.path().c_str(), e.is_directory() ? 0755 : 0644);
  }
  ASSERT_EQ(chmod(dir.c_str(), 0755), 0);
  const int code = OpenAsNobody(dir, StoreOptions());
  ASSERT_NE(code, kSetuidFailed);
  ASSERT_NE(code, kOpenedFine);
  EXPECT_EQ(code, static_cast<int>(absl::StatusCode::kPermissionDenied))
      << "child got " << absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  // The store still works for its owner.
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir));
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store->HeadPosition());
  EXPECT_EQ(head, 1u);
}

// LMDB forbids opening one environment twice in a process (its locks are
// per process), so a second Store on the same directory must be refused
// cleanly while the first stays usable.
TEST(OpenTwiceTest, SecondOpenInTheSameProcessIsFailedPrecondition) {
  TempDir tmp;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> first, Store::Open(tmp.path()));
  RILL_ASSERT_OK(first->Append("s", ExpectedVersion::Any(), MakeEvents(1)).status());

  absl::StatusOr<std::unique_ptr<Store>> second = Store::Open(tmp.path());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  StoreOptions read_only;
  read_only.read_only = true;
  absl::StatusOr<std::unique_ptr<Store>> third = Store::Open(tmp.path(), read_only);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kFailedPrecondition) << third.status();
  // The same directory spelled differently is still the same store.
  absl::StatusOr<std::unique_ptr<Store>> fourth = Store::Open(tmp.path() + "/./");
  EXPECT_EQ(fourth.status().code(), absl::StatusCode::kFailedPrecondition) << fourth.status();

  // The first store is unaffected.
  RILL_ASSERT_OK(first->Append("s", ExpectedVersion::Exact(0), MakeEvents(1)).status());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> events, first->ReadStream("s", 0));
  EXPECT_EQ(events.size(), 2u);

  // Once it is closed the directory can be opened again.
  first.reset();
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> again, Store::Open(tmp.path()));
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, again->HeadPosition());
  EXPECT_EQ(head, 2u);
}

}  // namespace
}  // namespace rill
