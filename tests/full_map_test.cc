// Every write of the derived environment goes through LmdbEnv::Write, which
// grows a full map and runs the work again (issue 13). Each test fills the
// derived map until not even a one-byte put commits, then runs one kind of
// write - a projection reset, dropping a parked event, a snapshot save, a
// snapshot prune, a projection batch - and expects it to succeed with the
// map grown by that write. Each fails when Write does not grow and retry
// (checked by disabling the retry). Which of a write's LMDB calls meets the
// full map first is up to LMDB's page allocation, so these tests show that
// the write as a whole survives, not that each call site maps its code.
#include <lmdb.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lmdb_env.h"
#include "rill/projection.h"
#include "rill/projection_admin.h"
#include "rill/snapshot.h"
#include "rill/store.h"
#include "store_core.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::MakeEvents;
using ::rill::testing::TempDir;

constexpr size_t kSmallMap = size_t{1} << 20;

StoreOptions SmallMaps() {
  StoreOptions options;
  options.initial_map_size = kSmallMap;
  options.map_growth_step = kSmallMap;
  return options;
}

// Puts values of `size` bytes into a database of its own, one commit each,
// straight through LMDB (no growth), until a put or its commit meets
// MDB_MAP_FULL. Returns how many committed.
absl::StatusOr<int> FillWith(MDB_env* env, MDB_dbi dbi, size_t size, int* key) {
  const std::string value(size, 'f');
  for (int committed = 0;; ++committed) {
    MDB_txn* txn = nullptr;
    if (int rc = mdb_txn_begin(env, nullptr, 0, &txn); rc != 0) {
      return internal::LmdbError(rc, "filler begin");
    }
    const std::string k = absl::StrCat("filler-", (*key)++);
    MDB_val kv{k.size(), const_cast<char*>(k.data())};
    MDB_val vv{value.size(), const_cast<char*>(value.data())};
    int rc = mdb_put(txn, dbi, &kv, &vv, 0);
    if (rc == 0) {
      rc = mdb_txn_commit(txn);
    } else {
      mdb_txn_abort(txn);
    }
    if (rc == MDB_MAP_FULL) return committed;
    if (rc != 0) return internal::LmdbError(rc, "filler put");
  }
}

// The derived map of a store, filled: a read transaction taken before the
// fill pins its snapshot, so no page freed since can be reused, and puts
// commit until not even a one-byte put finds a page. The next write
// transaction of the environment meets MDB_MAP_FULL for certain. The reader
// is held (a raw LMDB read transaction: it does not hold LmdbEnv's resize
// lock, so growing the map does not wait for it) until the FullMap goes.
// LMDB documents that no transaction of the process may be open while the
// map is resized; 0.9.24 (Debian 12) refuses only an open write transaction,
// and ending this reader after the remap touches only its slot in lock.mdb,
// not the map, so holding it across the growth is safe there.
class FullMap {
 public:
  static absl::StatusOr<std::unique_ptr<FullMap>> Fill(Store* store) {
    absl::StatusOr<internal::LmdbEnv*> env = store->core()->DerivedEnv();
    if (!env.ok()) return env.status();
    absl::StatusOr<MDB_dbi> dbi = (*env)->OpenDb("test.filler", /*create=*/true);
    if (!dbi.ok()) return dbi.status();
    auto full = std::unique_ptr<FullMap>(new FullMap());
    if (int rc = mdb_txn_begin((*env)->env(), nullptr, MDB_RDONLY, &full->reader_); rc != 0) {
      return internal::LmdbError(rc, "pinning reader");
    }
    int key = 0;
    for (size_t size : {size_t{64} << 10, size_t{4} << 10, size_t{256}, size_t{1}}) {
      if (absl::StatusOr<int> n = FillWith((*env)->env(), *dbi, size, &key); !n.ok()) {
        return n.status();
      }
    }
    full->size = (*env)->map_size();
    return full;
  }
  ~FullMap() { Release(); }
  // Ends the pinning reader.
  void Release() {
    if (reader_ != nullptr) mdb_txn_abort(reader_);
    reader_ = nullptr;
  }

  size_t size = 0;  // the map size when full

 private:
  FullMap() = default;
  MDB_txn* reader_ = nullptr;
};

size_t DerivedMapSize(Store* store) {
  absl::StatusOr<internal::LmdbEnv*> env = store->core()->DerivedEnv();
  return env.ok() ? (*env)->map_size() : 0;
}

// Parks every event of type "Poison"; counts the others per
// stream in table "counts".
ProjectionDef Parking() {
  ProjectionDef def;
  def.name = "parking";
  def.tables = {"counts"};
  def.error_policy = ErrorPolicy::kPark;
  def.max_attempts = 1;
  def.apply = [](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    if (e.type() == "Poison") return absl::InternalError("poison");
    absl::StatusOr<std::optional<std::string>> n = txn.Get("counts", e.stream());
    if (!n.ok()) return n.status();
    const int count = n->has_value() ? std::stoi(**n) : 0;
    return txn.Put("counts", e.stream(), std::to_string(count + 1));
  };
  return def;
}

class FullMapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RILL_ASSERT_OK_AND_ASSIGN(store_, Store::Open(dir_.path(), SmallMaps()));
  }

  // Appends `n` events to `stream`, the last one a poison pill when asked.
  void Append(const std::string& stream, int n, bool poison_last) {
    std::vector<EventData> events = MakeEvents(n);
    if (poison_last) events.back().type = "Poison";
    RILL_ASSERT_OK(store_->Append(stream, ExpectedVersion::Any(), events).status());
  }

  // Runs the projection until it has applied the whole log, then stops it.
  void RunToHead() {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                              ProjectionRunner::Start(store_.get(), {Parking()}));
    RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store_->HeadPosition());
    RILL_ASSERT_OK(runner->WaitFor("parking", head, absl::Seconds(30)));
    runner->Stop();
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(FullMapTest, ResetProjection) {
  Append("a", 20, /*poison_last=*/true);
  RunToHead();
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FullMap> full, FullMap::Fill(store_.get()));
  RILL_ASSERT_OK(ResetProjection(store_.get(), "parking"));
  EXPECT_GT(DerivedMapSize(store_.get()), full->size);
  full->Release();
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<ProjectionStatus> statuses,
                            ReadProjectionStatuses(store_.get()));
  EXPECT_TRUE(statuses.empty());
}

TEST_F(FullMapTest, DropParkedEvent) {
  Append("a", 5, /*poison_last=*/true);
  RunToHead();
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<ParkedEvent> parked,
                            ReadParkedEvents(store_.get(), "parking"));
  ASSERT_EQ(parked.size(), 1u);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FullMap> full, FullMap::Fill(store_.get()));
  RILL_ASSERT_OK(DropParkedEvent(store_.get(), "parking", parked[0].position));
  EXPECT_GT(DerivedMapSize(store_.get()), full->size);
  full->Release();
  RILL_ASSERT_OK_AND_ASSIGN(parked, ReadParkedEvents(store_.get(), "parking"));
  EXPECT_TRUE(parked.empty());
}

TEST_F(FullMapTest, SnapshotSave) {
  Append("acc", 3, /*poison_last=*/false);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnapshotStore> snapshots,
                            SnapshotStore::Open(store_.get()));
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FullMap> full, FullMap::Fill(store_.get()));
  RILL_ASSERT_OK(snapshots->Save("acc", 2, 1, std::string(1000, 's')));
  EXPECT_GT(DerivedMapSize(store_.get()), full->size);
  full->Release();
  RILL_ASSERT_OK_AND_ASSIGN(std::optional<Snapshot> latest, snapshots->LoadLatest("acc", 1));
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->version, 2);
}

TEST_F(FullMapTest, SnapshotPrune) {
  Append("acc", 5, /*poison_last=*/false);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnapshotStore> snapshots,
                            SnapshotStore::Open(store_.get()));
  for (int v = 0; v < 5; ++v) RILL_ASSERT_OK(snapshots->Save("acc", v, 1, "state"));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<Snapshot> kept, snapshots->List("acc"));
  ASSERT_GT(kept.size(), 1u);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FullMap> full, FullMap::Fill(store_.get()));
  RILL_ASSERT_OK_AND_ASSIGN(size_t pruned, snapshots->Prune("acc", 1));
  EXPECT_EQ(pruned, kept.size() - 1);
  EXPECT_GT(DerivedMapSize(store_.get()), full->size);
  full->Release();
}

TEST_F(FullMapTest, ProjectionBatch) {
  Append("a", 10, /*poison_last=*/false);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store_.get(), {Parking()}));
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store_->HeadPosition());
  RILL_ASSERT_OK(runner->WaitFor("parking", head, absl::Seconds(30)));
  // The runner is caught up and idle (it writes nothing until the log
  // moves): fill the map, then give it events. Its next batch writes rows,
  // a dead letter and the checkpoint into the full map.
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FullMap> full, FullMap::Fill(store_.get()));
  Append("a", 10, /*poison_last=*/false);
  Append("b", 3, /*poison_last=*/true);
  RILL_ASSERT_OK_AND_ASSIGN(head, store_->HeadPosition());
  RILL_ASSERT_OK(runner->WaitFor("parking", head, absl::Seconds(30)));
  EXPECT_GT(DerivedMapSize(store_.get()), full->size);
  full->Release();
  RILL_ASSERT_OK_AND_ASSIGN(ProjectionStatus status, runner->Status("parking"));
  EXPECT_EQ(status.errors, 1u);  // only the poison pill; no batch failed
  EXPECT_EQ(status.parked, 1u);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view, runner->View("parking"));
  RILL_ASSERT_OK_AND_ASSIGN(std::optional<std::string> a, view->Get("counts", "a"));
  RILL_ASSERT_OK_AND_ASSIGN(std::optional<std::string> b, view->Get("counts", "b"));
  EXPECT_EQ(a, std::optional<std::string>("20"));
  EXPECT_EQ(b, std::optional<std::string>("2"));
}

}  // namespace
}  // namespace rill
