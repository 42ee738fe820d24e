// Long readers: what a read transaction held open for a long time (by
// another program: rill's own reads hold one for a chunk at most) does to
// the log, and what StoreStats shows about it. docs/reliability.md ("Long
// readers") states the rule these tests prove:
//
//   - while a reader holds a snapshot, every page freed by later commits is
//     kept for it, so the data file grows by those pages instead of reusing
//     them (used_bytes grows faster than without the reader);
//   - once the reader ends, the kept pages are reused: appends grow the file
//     no faster than before (here: not at all, until the freed pages are
//     used up);
//   - StoreStats shows the reader (slots, the oldest snapshot's lag in
//     transactions, its pid); a reader whose process died is "stale", pins
//     pages the same way, and is freed by ClearStaleReaders() or, while the
//     process appends, at most a second later.
//
// The reader is tests/children/lmdb_txn_child.cc (a plain LMDB read
// transaction on STORE/log) in another process. Sizes are compared with each
// other, never with time.
#include <signal.h>
#include <sys/wait.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::ChildProcess;
using ::rill::testing::DescribeWaitStatus;
using ::rill::testing::MakeEvent;
using ::rill::testing::TempDir;
using ::rill::testing::WaitUntil;

constexpr int kBurst = 300;

StoreOptions Options() {
  StoreOptions options;
  options.durability = Durability::kNoSyncUnsafe;  // page reuse is the same
  return options;
}

// `n` single-event appends (one commit each) over 16 streams: each commit
// copies-on-write the pages it touches and frees the old ones.
void AppendBurst(Store& store, int n, int* counter) {
  for (int i = 0; i < n; ++i, ++*counter) {
    EventData e = MakeEvent("Tick", *counter);
    e.payload.append(100, 'x');
    RILL_ASSERT_OK(
        store.Append(absl::StrCat("s-", *counter % 16), ExpectedVersion::Any(), {e}).status());
  }
}

uint64_t UsedBytes(Store& store) {
  absl::StatusOr<StoreStats> stats = store.Stats();
  EXPECT_TRUE(stats.ok()) << stats.status();
  return stats.ok() ? stats->used_bytes : 0;
}

std::unique_ptr<ChildProcess> StartReader(const TempDir& dir, const std::string& store_dir) {
  absl::StatusOr<std::unique_ptr<ChildProcess>> child =
      ChildProcess::Start("lmdb_txn_child", {"read", store_dir + "/log"}, dir.Sub("reader.err"));
  EXPECT_TRUE(child.ok()) << child.status();
  if (!child.ok()) return nullptr;
  absl::StatusOr<std::string> line = (*child)->ReadLine(absl::Seconds(60));
  EXPECT_TRUE(line.ok() && *line == "locked")
      << line.status() << " " << line.value_or("") << (*child)->Stderr();
  return *std::move(child);
}

TEST(LongReaderTest, AHeldSnapshotMakesTheFileGrowAndItsPagesAreReusedAfterIt) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir, Options()));
  int counter = 0;
  AppendBurst(*store, 2 * kBurst, &counter);  // a tree and a free list in steady state

  // Without a reader.
  const uint64_t before = UsedBytes(*store);
  AppendBurst(*store, kBurst, &counter);
  const uint64_t growth_free = UsedBytes(*store) - before;

  // With a reader holding the snapshot of this moment.
  std::unique_ptr<ChildProcess> reader = StartReader(dir, store_dir);
  ASSERT_NE(reader, nullptr);
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats held, store->Stats());
  EXPECT_GE(held.readers_in_use, 1u);
  const uint64_t pinned_from = held.used_bytes;
  AppendBurst(*store, kBurst, &counter);
  RILL_ASSERT_OK_AND_ASSIGN(held, store->Stats());
  const uint64_t growth_pinned = held.used_bytes - pinned_from;
  EXPECT_GE(held.oldest_reader_lag, static_cast<uint64_t>(kBurst))
      << "every append is a write transaction after the reader's snapshot";
  EXPECT_EQ(held.oldest_reader_pid, reader->pid());
  EXPECT_EQ(held.stale_readers, 0u);

  // The reader ends; its pages are free again.
  reader->CloseStdin();
  ASSERT_TRUE(testing::ExitedWithCode(reader->Wait(), 0)) << reader->Stderr();
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats after, store->Stats());
  EXPECT_EQ(after.oldest_reader_lag, 0u);
  EXPECT_EQ(after.oldest_reader_pid, 0);
  const uint64_t released_at = after.used_bytes;
  AppendBurst(*store, kBurst, &counter);
  const uint64_t growth_after = UsedBytes(*store) - released_at;

  std::printf(
      "used_bytes growth over %d appends: %llu without a reader, %llu while one is held, "
      "%llu after it ended\n",
      kBurst, static_cast<unsigned long long>(growth_free),
      static_cast<unsigned long long>(growth_pinned),
      static_cast<unsigned long long>(growth_after));
  // The pinned pages are the difference: every commit's freed pages.
  EXPECT_GT(growth_pinned, growth_free + kBurst * uint64_t{4096})
      << "a held snapshot should keep at least a page per commit";
  EXPECT_LE(growth_after, growth_free) << "the pages kept for the reader were not reused";
  // And the data is all there.
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store->HeadPosition());
  EXPECT_EQ(head, static_cast<uint64_t>(counter));
}

TEST(LongReaderTest, AReaderKilledInItsTransactionIsStaleUntilCleared) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir, Options()));
  int counter = 0;
  AppendBurst(*store, 10, &counter);

  std::unique_ptr<ChildProcess> reader = StartReader(dir, store_dir);
  ASSERT_NE(reader, nullptr);
  const pid_t pid = reader->pid();
  reader->Kill(SIGKILL);
  const int status = reader->Wait();  // reaped: the pid is gone
  ASSERT_TRUE(WIFSIGNALED(status)) << DescribeWaitStatus(status);
  AppendBurst(*store, 5, &counter);  // the dead reader's snapshot falls behind

  RILL_ASSERT_OK_AND_ASSIGN(StoreStats stale, store->Stats());
  EXPECT_EQ(stale.stale_readers, 1u);
  EXPECT_GE(stale.oldest_reader_lag, 5u);
  EXPECT_EQ(stale.oldest_reader_pid, pid);
  EXPECT_GE(stale.readers_in_use, 1u);

  RILL_ASSERT_OK_AND_ASSIGN(const unsigned cleared, store->ClearStaleReaders());
  EXPECT_EQ(cleared, 1u);
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats clean, store->Stats());
  EXPECT_EQ(clean.stale_readers, 0u);
  EXPECT_EQ(clean.oldest_reader_lag, 0u);
  EXPECT_EQ(clean.oldest_reader_pid, 0);
  RILL_ASSERT_OK_AND_ASSIGN(const unsigned again, store->ClearStaleReaders());
  EXPECT_EQ(again, 0u);

  // The same through a read-only store (e.g. the admin tool's).
  store.reset();
  StoreOptions read_only = Options();
  read_only.read_only = true;
  RILL_ASSERT_OK_AND_ASSIGN(store, Store::Open(store_dir, read_only));
  reader = StartReader(dir, store_dir);
  ASSERT_NE(reader, nullptr);
  reader->Kill(SIGKILL);
  reader->Wait();
  RILL_ASSERT_OK_AND_ASSIGN(stale, store->Stats());
  EXPECT_EQ(stale.stale_readers, 1u);
  RILL_ASSERT_OK_AND_ASSIGN(const unsigned cleared_read_only, store->ClearStaleReaders());
  EXPECT_EQ(cleared_read_only, 1u);
  RILL_ASSERT_OK_AND_ASSIGN(clean, store->Stats());
  EXPECT_EQ(clean.stale_readers, 0u);
}

TEST(LongReaderTest, AppendsFreeAStaleReaderSlotByThemselves) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir, Options()));
  int counter = 0;
  AppendBurst(*store, 10, &counter);
  std::unique_ptr<ChildProcess> reader = StartReader(dir, store_dir);
  ASSERT_NE(reader, nullptr);
  reader->Kill(SIGKILL);
  reader->Wait();
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats stale, store->Stats());
  ASSERT_EQ(stale.stale_readers, 1u);
  // Appends check the reader table at most once a second; keep appending
  // until one has (the bound only turns a hang into a failure).
  EXPECT_TRUE(WaitUntil(
      [&] {
        AppendBurst(*store, 1, &counter);
        absl::StatusOr<StoreStats> st = store->Stats();
        return st.ok() && st->stale_readers == 0 && st->oldest_reader_lag == 0;
      },
      absl::Seconds(60)))
      << "the stale reader slot was never freed";
}

}  // namespace
}  // namespace rill
