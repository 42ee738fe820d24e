// Snapshots (rill/snapshot.h): saving and loading, the schema-version rule,
// LoadAggregate against a plain fold of the whole stream, the every-N policy,
// pruning, reopening, corrupt records, read-only stores, concurrent loads.
//
// The aggregate used throughout is a Tally: count, sum and an order-sensitive
// hash of the events' payload numbers, so a skipped, doubled or reordered
// event gives a different state.
#include "rill/snapshot.h"

#include <lmdb.h>
#include <xxhash.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "keys.h"
#include "process_util.h"
#include "rill/store.h"
#include "store_core.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::ChildProcess;
using ::rill::testing::MakeEvent;
using ::rill::testing::MakeEvents;
using ::rill::testing::TempDir;

struct Tally {
  int64_t count = 0;
  int64_t sum = 0;
  uint64_t hash = 14695981039346656037ull;

  friend bool operator==(const Tally& a, const Tally& b) {
    return a.count == b.count && a.sum == b.sum && a.hash == b.hash;
  }
};

std::ostream& operator<<(std::ostream& os, const Tally& t) {
  return os << "Tally{count=" << t.count << " sum=" << t.sum << " hash=" << t.hash << "}";
}

// The n of a {"n":n} payload (test_util's MakeEvent).
int64_t PayloadN(absl::string_view payload) {
  int64_t n = -1;
  const size_t colon = payload.find(':');
  EXPECT_TRUE(colon != absl::string_view::npos &&
              absl::SimpleAtoi(payload.substr(colon + 1, payload.size() - colon - 2), &n))
      << payload;
  return n;
}

void Fold(Tally& t, int64_t n) {
  ++t.count;
  t.sum += n;
  t.hash = (t.hash ^ static_cast<uint64_t>(n + 1)) * 1099511628211ull;
}
void Apply(Tally& t, const EventView& e) { Fold(t, PayloadN(e.payload())); }

// Schema 1 of the Tally's snapshot encoding.
std::string Encode(const Tally& t) {
  return absl::StrCat("tally1:", t.count, ",", t.sum, ",", t.hash);
}
absl::StatusOr<Tally> Decode(absl::string_view data) {
  std::vector<std::string> parts = absl::StrSplit(data, absl::ByAnyChar(":,"));
  Tally t;
  if (parts.size() != 4 || parts[0] != "tally1" || !absl::SimpleAtoi(parts[1], &t.count) ||
      !absl::SimpleAtoi(parts[2], &t.sum) || !absl::SimpleAtoi(parts[3], &t.hash)) {
    return absl::InvalidArgumentError(absl::StrCat("not a schema-1 tally: ", data));
  }
  return t;
}

absl::StatusOr<LoadedAggregate<Tally>> Load(SnapshotStore& snapshots, const std::string& stream,
                                            uint32_t schema_version = 1) {
  return snapshots.LoadAggregate(stream, schema_version, Tally{}, Decode, Encode, Apply);
}

// The reference: every event of the stream folded from scratch.
Tally FoldAll(Store& store, const std::string& stream, int64_t up_to = kStreamEnd) {
  Tally t;
  absl::StatusOr<std::vector<RecordedEvent>> events = store.ReadStream(stream, 0);
  EXPECT_TRUE(events.ok()) << events.status();
  if (!events.ok()) return t;
  for (const RecordedEvent& e : *events) {
    if (e.version <= up_to) Fold(t, PayloadN(e.payload));
  }
  return t;
}

std::vector<int64_t> Versions(const std::vector<Snapshot>& snapshots) {
  std::vector<int64_t> out;
  for (const Snapshot& s : snapshots) out.push_back(s.version);
  return out;
}

std::string SnapshotKey(const std::string& stream, int64_t version) {
  uint8_t be[8];
  internal::PutBigEndian64(static_cast<uint64_t>(version), be);
  return stream + std::string(1, '\0') + std::string(reinterpret_cast<char*>(be), 8);
}

// Raw LMDB access to STORE/derived's `snapshots` database, for damaging it.
// Only while no Store has the directory open.
class RawSnapshots {
 public:
  explicit RawSnapshots(const std::string& store_dir) {
    EXPECT_EQ(mdb_env_create(&env_), 0);
    mdb_env_set_maxdbs(env_, 16);
    EXPECT_EQ(mdb_env_open(env_, (store_dir + "/derived").c_str(), 0, 0644), 0);
    MDB_txn* txn;
    EXPECT_EQ(mdb_txn_begin(env_, nullptr, 0, &txn), 0);
    EXPECT_EQ(mdb_dbi_open(txn, "snapshots", 0, &dbi_), 0);
    EXPECT_EQ(mdb_txn_commit(txn), 0);
  }
  ~RawSnapshots() { mdb_env_close(env_); }

  std::string Get(const std::string& key) {
    MDB_txn* txn;
    EXPECT_EQ(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn), 0);
    MDB_val k{key.size(), const_cast<char*>(key.data())}, v;
    EXPECT_EQ(mdb_get(txn, dbi_, &k, &v), 0);
    std::string value(static_cast<const char*>(v.mv_data), v.mv_size);
    mdb_txn_abort(txn);
    return value;
  }
  void Put(const std::string& key, const std::string& value) {
    MDB_txn* txn;
    ASSERT_EQ(mdb_txn_begin(env_, nullptr, 0, &txn), 0);
    MDB_val k{key.size(), const_cast<char*>(key.data())};
    MDB_val v{value.size(), const_cast<char*>(value.data())};
    ASSERT_EQ(mdb_put(txn, dbi_, &k, &v, 0), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
  }

 private:
  MDB_env* env_ = nullptr;
  MDB_dbi dbi_ = 0;
};

class SnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen(SnapshotPolicy policy = SnapshotPolicy(), StoreOptions options = StoreOptions()) {
    snapshots_.reset();
    store_.reset();
    options.durability = Durability::kNoSyncUnsafe;
    RILL_ASSERT_OK_AND_ASSIGN(store_, Store::Open(dir_.Sub("store"), options));
    RILL_ASSERT_OK_AND_ASSIGN(snapshots_, SnapshotStore::Open(store_.get(), policy));
  }
  void Close() {
    snapshots_.reset();
    store_.reset();
  }
  void AppendN(const std::string& stream, int count, int first_n) {
    RILL_ASSERT_OK(
        store_->Append(stream, ExpectedVersion::Any(), MakeEvents(count, first_n)).status());
  }
  std::string StoreDir() const { return dir_.Sub("store"); }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<SnapshotStore> snapshots_;
};

TEST_F(SnapshotTest, SaveThenLoadLatestReturnsTheNewestSnapshot) {
  AppendN("acc-1", 10, 0);
  const absl::Time before = absl::Now();
  RILL_ASSERT_OK(snapshots_->Save("acc-1", 3, 1, "state at 3"));
  RILL_ASSERT_OK(snapshots_->Save("acc-1", 7, 1, std::string("state\0at 7", 10)));
  const absl::Time after = absl::Now();

  RILL_ASSERT_OK_AND_ASSIGN(std::optional<Snapshot> latest, snapshots_->LoadLatest("acc-1", 1));
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->stream, "acc-1");
  EXPECT_EQ(latest->version, 7);
  EXPECT_EQ(latest->schema_version, 1u);
  EXPECT_EQ(latest->data, std::string("state\0at 7", 10));  // binary-safe
  // Stored with microsecond precision.
  EXPECT_GE(latest->taken_at, absl::FromUnixMicros(absl::ToUnixMicros(before)));
  EXPECT_LE(latest->taken_at, after);

  RILL_ASSERT_OK_AND_ASSIGN(std::optional<Snapshot> none, snapshots_->LoadLatest("acc-2", 1));
  EXPECT_FALSE(none.has_value());
}

// Keys are name + 0x00 + version: streams whose names prefix each other must
// never see each other's snapshots.
TEST_F(SnapshotTest, StreamsWhoseNamesPrefixEachOtherDoNotMix) {
  for (const char* s : {"a", "ab", "a-1", "b"}) AppendN(s, 5, 0);
  RILL_ASSERT_OK(snapshots_->Save("ab", 4, 1, "ab@4"));
  RILL_ASSERT_OK(snapshots_->Save("a-1", 2, 1, "a-1@2"));
  RILL_ASSERT_OK(snapshots_->Save("b", 1, 1, "b@1"));
  RILL_ASSERT_OK_AND_ASSIGN(std::optional<Snapshot> a, snapshots_->LoadLatest("a", 1));
  EXPECT_FALSE(a.has_value());
  RILL_ASSERT_OK(snapshots_->Save("a", 0, 1, "a@0"));
  RILL_ASSERT_OK_AND_ASSIGN(a, snapshots_->LoadLatest("a", 1));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->data, "a@0");
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<Snapshot> listed, snapshots_->List("a"));
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].data, "a@0");
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<Snapshot> all, snapshots_->List(""));
  std::vector<std::string> names;
  for (const Snapshot& s : all) names.push_back(s.stream);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "a-1", "ab", "b"}));
}

TEST_F(SnapshotTest, SaveRejectsBadRequests) {
  AppendN("acc", 3, 0);
  EXPECT_EQ(snapshots_->Save("missing", 0, 1, "x").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(snapshots_->Save("acc", 3, 1, "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(snapshots_->Save("acc", -1, 1, "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(snapshots_->Save("", 0, 1, "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(snapshots_->Save(std::string("a\0c", 3), 0, 1, "x").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(snapshots_->Save("acc", 2, 1, std::string(kMaxSnapshotBytes + 1, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(snapshots_->LoadLatest(std::string("a\0c", 3), 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<Snapshot> all, snapshots_->List(""));
  EXPECT_TRUE(all.empty());
  EXPECT_EQ(SnapshotStore::Open(store_.get(), SnapshotPolicy{-1, 3}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SnapshotTest, SavingTheSameVersionAgainReplacesIt) {
  AppendN("acc", 3, 0);
  RILL_ASSERT_OK(snapshots_->Save("acc", 2, 1, "first"));
  RILL_ASSERT_OK(snapshots_->Save("acc", 2, 2, "second"));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<Snapshot> all, snapshots_->List("acc"));
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].data, "second");
  EXPECT_EQ(all[0].schema_version, 2u);
}

// A snapshot of another schema version is never decoded: Decode only accepts
// "tally1:" data and would fail the load if it were handed schema 2's bytes.
TEST_F(SnapshotTest, SnapshotsOfAnotherSchemaVersionAreIgnored) {
  AppendN("acc", 20, 0);
  RILL_ASSERT_OK(snapshots_->Save("acc", 5, 1, Encode(FoldAll(*store_, "acc", 5))));
  RILL_ASSERT_OK(snapshots_->Save("acc", 15, 2, "tally2:{a different encoding}"));

  RILL_ASSERT_OK_AND_ASSIGN(std::optional<Snapshot> v1, snapshots_->LoadLatest("acc", 1));
  ASSERT_TRUE(v1.has_value());
  EXPECT_EQ(v1->version, 5);
  RILL_ASSERT_OK_AND_ASSIGN(std::optional<Snapshot> v2, snapshots_->LoadLatest("acc", 2));
  ASSERT_TRUE(v2.has_value());
  EXPECT_EQ(v2->version, 15);
  RILL_ASSERT_OK_AND_ASSIGN(std::optional<Snapshot> v3, snapshots_->LoadLatest("acc", 3));
  EXPECT_FALSE(v3.has_value());

  // Schema 1: the newer schema-2 snapshot is skipped, the older one is used.
  RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<Tally> loaded, Load(*snapshots_, "acc", 1));
  EXPECT_TRUE(loaded.from_snapshot);
  EXPECT_EQ(loaded.snapshot_version, 5);
  EXPECT_EQ(loaded.events_folded, 14);
  EXPECT_EQ(loaded.version, 19);
  EXPECT_EQ(loaded.state, FoldAll(*store_, "acc"));

  // Schema 3 has no snapshot at all: fold from `initial`.
  RILL_ASSERT_OK_AND_ASSIGN(loaded, Load(*snapshots_, "acc", 3));
  EXPECT_FALSE(loaded.from_snapshot);
  EXPECT_EQ(loaded.events_folded, 20);
  EXPECT_EQ(loaded.state, FoldAll(*store_, "acc"));
}

TEST_F(SnapshotTest, LoadAggregateEqualsAFoldOfTheWholeStream) {
  // Interleave two streams so that stream versions and positions differ.
  int n = 0;
  for (int batch = 1; batch <= 20; ++batch) {
    AppendN("acc", batch, n);
    n += batch;
    AppendN("other", 3, 1000 + batch);
  }
  const Tally expected = FoldAll(*store_, "acc");
  ASSERT_EQ(expected.count, 210);

  RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<Tally> plain, Load(*snapshots_, "acc"));
  EXPECT_EQ(plain.state, expected);
  EXPECT_EQ(plain.version, 209);
  EXPECT_FALSE(plain.from_snapshot);
  EXPECT_EQ(plain.events_folded, 210);
  EXPECT_FALSE(plain.snapshot_saved);  // the default policy saves only on demand

  for (int64_t at : {0, 1, 99, 208, 209}) {
    SCOPED_TRACE(absl::StrCat("snapshot at version ", at));
    RILL_ASSERT_OK(snapshots_->Drop("acc").status());
    RILL_ASSERT_OK(snapshots_->Save("acc", at, 1, Encode(FoldAll(*store_, "acc", at))));
    RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<Tally> loaded, Load(*snapshots_, "acc"));
    EXPECT_EQ(loaded.state, expected);
    EXPECT_EQ(loaded.version, 209);
    EXPECT_TRUE(loaded.from_snapshot);
    EXPECT_EQ(loaded.snapshot_version, at);
    EXPECT_EQ(loaded.events_folded, 209 - at);
  }
}

TEST_F(SnapshotTest, AMissingStreamLoadsAsInitialAtVersionMinusOne) {
  Reopen(SnapshotPolicy{1, 3});
  Tally initial;
  Fold(initial, 42);
  RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<Tally> loaded,
                            snapshots_->LoadAggregate("nobody", 1, initial, Decode, Encode, Apply));
  EXPECT_EQ(loaded.state, initial);
  EXPECT_EQ(loaded.version, -1);
  EXPECT_FALSE(loaded.from_snapshot);
  EXPECT_EQ(loaded.events_folded, 0);
  EXPECT_FALSE(loaded.snapshot_saved);
}

TEST_F(SnapshotTest, PolicyEveryNSavesWhenNEventsWereFoldedPastTheLastSnapshot) {
  Reopen(SnapshotPolicy{10, 0});
  std::vector<int64_t> saved_at;
  for (int v = 0; v < 35; ++v) {
    AppendN("acc", 1, v);
    RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<Tally> loaded, Load(*snapshots_, "acc"));
    RILL_ASSERT_OK(loaded.snapshot_status);
    ASSERT_EQ(loaded.version, v);
    ASSERT_EQ(loaded.state, FoldAll(*store_, "acc"));
    if (loaded.snapshot_saved) saved_at.push_back(loaded.version);
    // Never more than N - 1 events before the save, N on the load that saves.
    EXPECT_LE(loaded.events_folded, 10);
  }
  EXPECT_EQ(saved_at, (std::vector<int64_t>{9, 19, 29}));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<Snapshot> listed, snapshots_->List("acc"));
  EXPECT_EQ(Versions(listed), (std::vector<int64_t>{9, 19, 29}));

  // A big batch: one load folds 25 events and saves at the last one; the
  // next save comes N events later.
  AppendN("big", 25, 0);
  RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<Tally> loaded, Load(*snapshots_, "big"));
  EXPECT_TRUE(loaded.snapshot_saved);
  AppendN("big", 9, 25);
  RILL_ASSERT_OK_AND_ASSIGN(loaded, Load(*snapshots_, "big"));
  EXPECT_FALSE(loaded.snapshot_saved);
  EXPECT_EQ(loaded.events_folded, 9);
  AppendN("big", 1, 34);
  RILL_ASSERT_OK_AND_ASSIGN(loaded, Load(*snapshots_, "big"));
  EXPECT_TRUE(loaded.snapshot_saved);
  RILL_ASSERT_OK_AND_ASSIGN(listed, snapshots_->List("big"));
  EXPECT_EQ(Versions(listed), (std::vector<int64_t>{24, 34}));
}

TEST_F(SnapshotTest, SavesPruneToKeepLastAndPruneKeepsTheNewestK) {
  Reopen(SnapshotPolicy{0, 3});
  AppendN("acc", 10, 0);
  AppendN("bob", 10, 0);
  for (int v = 0; v < 10; ++v) {
    // Schema versions alternate: keep_last counts snapshots of any schema.
    RILL_ASSERT_OK(snapshots_->Save("acc", v, 1 + v % 2, absl::StrCat("acc@", v)));
    RILL_ASSERT_OK(snapshots_->Save("bob", v, 1, absl::StrCat("bob@", v)));
  }
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<Snapshot> listed, snapshots_->List("acc"));
  EXPECT_EQ(Versions(listed), (std::vector<int64_t>{7, 8, 9}));

  RILL_ASSERT_OK_AND_ASSIGN(size_t deleted, snapshots_->Prune("acc", 1));
  EXPECT_EQ(deleted, 2u);
  RILL_ASSERT_OK_AND_ASSIGN(listed, snapshots_->List("acc"));
  EXPECT_EQ(Versions(listed), (std::vector<int64_t>{9}));
  RILL_ASSERT_OK_AND_ASSIGN(listed, snapshots_->List("bob"));
  EXPECT_EQ(Versions(listed), (std::vector<int64_t>{7, 8, 9}));

  RILL_ASSERT_OK_AND_ASSIGN(deleted, snapshots_->Prune("", 0));  // 0 keeps all
  EXPECT_EQ(deleted, 0u);
  RILL_ASSERT_OK_AND_ASSIGN(deleted, snapshots_->Prune("", 2));  // every stream
  EXPECT_EQ(deleted, 1u);
  RILL_ASSERT_OK_AND_ASSIGN(listed, snapshots_->List(""));
  EXPECT_EQ(Versions(listed), (std::vector<int64_t>{9, 8, 9}));
  EXPECT_EQ(snapshots_->Prune("acc", -1).status().code(), absl::StatusCode::kInvalidArgument);

  RILL_ASSERT_OK_AND_ASSIGN(deleted, snapshots_->Drop("bob"));
  EXPECT_EQ(deleted, 2u);
  RILL_ASSERT_OK_AND_ASSIGN(listed, snapshots_->List(""));
  EXPECT_EQ(Versions(listed), (std::vector<int64_t>{9}));
  RILL_ASSERT_OK_AND_ASSIGN(deleted, snapshots_->Drop(""));
  EXPECT_EQ(deleted, 1u);
  RILL_ASSERT_OK_AND_ASSIGN(listed, snapshots_->List(""));
  EXPECT_TRUE(listed.empty());
}

TEST_F(SnapshotTest, PolicyPrunesAfterEachSave) {
  Reopen(SnapshotPolicy{5, 2});
  for (int v = 0; v < 30; ++v) {
    AppendN("acc", 1, v);
    RILL_ASSERT_OK(Load(*snapshots_, "acc").status());
  }
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<Snapshot> listed, snapshots_->List("acc"));
  EXPECT_EQ(Versions(listed), (std::vector<int64_t>{24, 29}));
}

TEST_F(SnapshotTest, SnapshotsSurviveReopen) {
  Reopen(SnapshotPolicy{50, 3});
  AppendN("acc", 120, 0);
  RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<Tally> first, Load(*snapshots_, "acc"));
  EXPECT_TRUE(first.snapshot_saved);
  Close();

  Reopen(SnapshotPolicy{50, 3});
  RILL_ASSERT_OK_AND_ASSIGN(std::optional<Snapshot> latest, snapshots_->LoadLatest("acc", 1));
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->version, 119);
  AppendN("acc", 5, 120);
  RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<Tally> again, Load(*snapshots_, "acc"));
  EXPECT_TRUE(again.from_snapshot);
  EXPECT_EQ(again.events_folded, 5);
  EXPECT_EQ(again.state, FoldAll(*store_, "acc"));
}

TEST_F(SnapshotTest, ErrorsFromDecodeAndApplyAreReturned) {
  AppendN("acc", 10, 0);
  RILL_ASSERT_OK(snapshots_->Save("acc", 4, 1, "not a tally"));
  EXPECT_EQ(Load(*snapshots_, "acc").status().code(), absl::StatusCode::kInvalidArgument);

  int applied = 0;
  auto failing_apply = [&applied](Tally& t, const EventView& e) -> absl::Status {
    if (e.version() == 7) return absl::InternalError("cannot apply 7");
    ++applied;
    Apply(t, e);
    return absl::OkStatus();
  };
  absl::StatusOr<LoadedAggregate<Tally>> loaded =
      snapshots_->LoadAggregate("acc", 2, Tally{}, Decode, Encode, failing_apply);
  EXPECT_EQ(loaded.status(), absl::InternalError("cannot apply 7"));
  EXPECT_EQ(applied, 7);  // versions 0..6, then the failure stopped the load
}

// A snapshot newer than the stream's last event cannot belong to this log
// (Save refuses such versions): here derived/ is copied from another store.
TEST_F(SnapshotTest, ASnapshotAheadOfTheLogIsFailedPrecondition) {
  AppendN("acc", 10, 0);
  RILL_ASSERT_OK(snapshots_->Save("acc", 9, 1, Encode(FoldAll(*store_, "acc"))));
  Close();
  const std::string other = dir_.Sub("other");
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(other));
    RILL_ASSERT_OK(store->Append("acc", ExpectedVersion::Any(), MakeEvents(3)).status());
  }
  std::filesystem::copy(StoreDir() + "/derived", other + "/derived");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(other));
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnapshotStore> snapshots,
                            SnapshotStore::Open(store.get()));
  EXPECT_EQ(Load(*snapshots, "acc").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Load(*snapshots, "never").status().code(), absl::StatusCode::kOk);
}

TEST_F(SnapshotTest, TheDerivedMapGrowsForBigSnapshots) {
  StoreOptions options;
  options.initial_map_size = size_t{1} << 20;  // 1 MiB, for both environments
  Reopen(SnapshotPolicy{0, 2}, options);
  AppendN("acc", 4, 0);
  std::vector<std::string> datas;
  for (int v = 0; v < 4; ++v) {
    std::string data(size_t{3} << 20, '\0');
    for (size_t i = 0; i < data.size(); ++i) {
      data[i] = static_cast<char>((i * 31 + v) >> 3);
    }
    RILL_ASSERT_OK(snapshots_->Save("acc", v, 1, data));
    datas.push_back(std::move(data));
  }
  RILL_ASSERT_OK_AND_ASSIGN(std::optional<Snapshot> latest, snapshots_->LoadLatest("acc", 1));
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->version, 3);
  EXPECT_TRUE(latest->data == datas[3]);
  RILL_ASSERT_OK_AND_ASSIGN(internal::LmdbEnv * env, store_->core()->DerivedEnv());
  EXPECT_GT(env->map_size(), size_t{6} << 20);
}

// Snapshots live in derived/: saving, pruning and policy saves complete
// while another process holds the log's writer lock (appends would wait).
TEST_F(SnapshotTest, SnapshotsDoNotTakeTheLogsWriterLock) {
  Reopen(SnapshotPolicy{10, 2});
  AppendN("acc", 50, 0);
  const std::string at20 = Encode(FoldAll(*store_, "acc", 20));
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ChildProcess> holder,
                            ChildProcess::Start("lmdb_txn_child", {"write", StoreDir() + "/log"},
                                                dir_.Sub("lmdb_txn_child.err")));
  absl::StatusOr<std::string> line = holder->ReadLine(absl::Seconds(30));
  ASSERT_TRUE(line.ok() && *line == "locked") << holder->Stderr();

  std::future<absl::Status> work = std::async(std::launch::async, [&] {
    if (absl::Status s = snapshots_->Save("acc", 20, 1, at20); !s.ok()) {
      return s;
    }
    absl::StatusOr<LoadedAggregate<Tally>> loaded = Load(*snapshots_, "acc");
    if (!loaded.ok()) return loaded.status();
    if (!loaded->snapshot_saved) return absl::InternalError("no policy save");
    if (absl::Status s = snapshots_->Prune("", 1).status(); !s.ok()) return s;
    return snapshots_->Drop("acc").status();
  });
  const bool finished = work.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  holder->CloseStdin();  // lets a blocked `work` finish before it is joined
  EXPECT_TRUE(::rill::testing::ExitedWithCode(holder->Wait(), 0));
  ASSERT_TRUE(finished) << "snapshot writes waited for the log's writer lock";
  RILL_EXPECT_OK(work.get());
}

// --- Corruption: damaged snapshot records are DataLoss, never misread. ---

enum class Damage {
  kFlipDataByte,
  kFlipChecksum,
  kTruncate,
  kGarbageWithValidChecksum,
  kUnderAnotherKey
};

std::string DamageName(const ::testing::TestParamInfo<Damage>& info) {
  switch (info.param) {
    case Damage::kFlipDataByte:
      return "FlipDataByte";
    case Damage::kFlipChecksum:
      return "FlipChecksum";
    case Damage::kTruncate:
      return "Truncate";
    case Damage::kGarbageWithValidChecksum:
      return "GarbageWithValidChecksum";
    case Damage::kUnderAnotherKey:
      return "UnderAnotherKey";
  }
  return "?";
}

class SnapshotCorruptionTest : public SnapshotTest, public ::testing::WithParamInterface<Damage> {
 protected:
  // Snapshots at 3 (good) and 7 (damaged, unless the damage puts version 3's
  // record under key 7); then the store is reopened.
  void Damage7() {
    AppendN("acc", 10, 0);
    RILL_ASSERT_OK(snapshots_->Save("acc", 3, 1, Encode(FoldAll(*store_, "acc", 3))));
    RILL_ASSERT_OK(snapshots_->Save("acc", 7, 1, Encode(FoldAll(*store_, "acc", 7))));
    Close();
    {
      RawSnapshots raw(StoreDir());
      std::string value = raw.Get(SnapshotKey("acc", 7));
      switch (GetParam()) {
        case Damage::kFlipDataByte: {
          const size_t at = value.find("tally1:");
          ASSERT_NE(at, std::string::npos);
          value[at + 2] ^= 0x01;  // "tally1:" becomes "taMly1:"-like
          break;
        }
        case Damage::kFlipChecksum:
          value[0] ^= 0x80;
          break;
        case Damage::kTruncate:
          value.resize(value.size() / 2);
          break;
        case Damage::kGarbageWithValidChecksum: {
          std::string garbage(48, '\xab');
          const uint64_t sum = XXH3_64bits(garbage.data(), garbage.size());
          value.assign(8, '\0');
          for (int i = 0; i < 8; ++i) {
            value[i] = static_cast<char>(sum >> (8 * i));
          }
          value += garbage;
          break;
        }
        case Damage::kUnderAnotherKey:
          value = raw.Get(SnapshotKey("acc", 3));
          break;
      }
      raw.Put(SnapshotKey("acc", 7), value);
    }
    Reopen();
  }
};

TEST_P(SnapshotCorruptionTest, LoadsAreDataLossUntilTheSnapshotsAreDropped) {
  Damage7();
  EXPECT_EQ(snapshots_->LoadLatest("acc", 1).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(snapshots_->LoadLatest("acc", 2).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Load(*snapshots_, "acc").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(snapshots_->List("acc").status().code(), absl::StatusCode::kDataLoss);

  // Pruning reads keys only; keep_last 1 keeps the damaged newest one.
  RILL_ASSERT_OK_AND_ASSIGN(size_t deleted, snapshots_->Prune("acc", 1));
  EXPECT_EQ(deleted, 1u);
  EXPECT_EQ(Load(*snapshots_, "acc").status().code(), absl::StatusCode::kDataLoss);

  RILL_ASSERT_OK_AND_ASSIGN(deleted, snapshots_->Drop("acc"));
  EXPECT_EQ(deleted, 1u);
  RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<Tally> loaded, Load(*snapshots_, "acc"));
  EXPECT_FALSE(loaded.from_snapshot);
  EXPECT_EQ(loaded.state, FoldAll(*store_, "acc"));
}

// Only the snapshots newer than the one returned are looked at.
TEST_P(SnapshotCorruptionTest, ANewerGoodSnapshotHidesAnOlderDamagedOne) {
  Damage7();
  RILL_ASSERT_OK(snapshots_->Save("acc", 9, 1, Encode(FoldAll(*store_, "acc"))));
  RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<Tally> loaded, Load(*snapshots_, "acc"));
  EXPECT_TRUE(loaded.from_snapshot);
  EXPECT_EQ(loaded.snapshot_version, 9);
  EXPECT_EQ(loaded.state, FoldAll(*store_, "acc"));
}

INSTANTIATE_TEST_SUITE_P(AllDamage, SnapshotCorruptionTest,
                         ::testing::Values(Damage::kFlipDataByte, Damage::kFlipChecksum,
                                           Damage::kTruncate, Damage::kGarbageWithValidChecksum,
                                           Damage::kUnderAnotherKey),
                         DamageName);

// --- Read-only stores ---

TEST_F(SnapshotTest, ReadOnlyStoreWithoutDerivedDataLoadsFromTheLogAndWritesNothing) {
  // A store of its own: the fixture's has derived data already.
  const std::string dir = dir_.Sub("plain");
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir));
    RILL_ASSERT_OK(store->Append("acc", ExpectedVersion::Any(), MakeEvents(30)).status());
  }
  ASSERT_FALSE(std::filesystem::exists(dir + "/derived"));
  StoreOptions ro;
  ro.read_only = true;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir, ro));
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnapshotStore> snapshots,
                            SnapshotStore::Open(store.get(), SnapshotPolicy{1, 3}));
  RILL_ASSERT_OK_AND_ASSIGN(std::optional<Snapshot> latest, snapshots->LoadLatest("acc", 1));
  EXPECT_FALSE(latest.has_value());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<Snapshot> listed, snapshots->List(""));
  EXPECT_TRUE(listed.empty());
  RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<Tally> loaded, Load(*snapshots, "acc"));
  EXPECT_EQ(loaded.state, FoldAll(*store, "acc"));
  EXPECT_FALSE(loaded.snapshot_saved);  // the policy does not apply read-only
  RILL_EXPECT_OK(loaded.snapshot_status);

  EXPECT_EQ(snapshots->Save("acc", 3, 1, "x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(snapshots->Prune("acc", 1).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(snapshots->Drop("").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(std::filesystem::exists(dir + "/derived"));
}

TEST_F(SnapshotTest, ReadOnlyStoreReadsExistingSnapshots) {
  AppendN("acc", 30, 0);
  RILL_ASSERT_OK(snapshots_->Save("acc", 19, 1, Encode(FoldAll(*store_, "acc", 19))));
  Close();
  StoreOptions ro;
  ro.read_only = true;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(StoreDir(), ro));
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnapshotStore> snapshots,
                            SnapshotStore::Open(store.get(), SnapshotPolicy{1, 3}));
  RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<Tally> loaded, Load(*snapshots, "acc"));
  EXPECT_TRUE(loaded.from_snapshot);
  EXPECT_EQ(loaded.snapshot_version, 19);
  EXPECT_EQ(loaded.events_folded, 10);
  EXPECT_EQ(loaded.state, FoldAll(*store, "acc"));
  EXPECT_FALSE(loaded.snapshot_saved);
  EXPECT_EQ(snapshots->Save("acc", 29, 1, "x").code(), absl::StatusCode::kFailedPrecondition);
}

// --- Concurrency ---

// Several threads load the same aggregate (saving and pruning snapshots by
// policy) while another appends to it. Every load must return exactly the
// fold of events 0..version, whatever it raced with.
TEST_F(SnapshotTest, ConcurrentLoadsWhileAppending) {
  Reopen(SnapshotPolicy{5, 2});
  constexpr int kEvents = 200;
  std::vector<Tally> expected(kEvents);
  Tally t;
  for (int v = 0; v < kEvents; ++v) {
    Fold(t, v);
    expected[v] = t;
  }
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::atomic<int> loads{0};
  std::thread appender([&] {
    for (int v = 0; v < kEvents; ++v) {
      absl::Status s = store_->Append("acc", ExpectedVersion::Any(), {MakeEvent("E", v)}).status();
      if (!s.ok()) {
        ADD_FAILURE() << s;
        ++failures;
      }
    }
    done = true;
  });
  std::vector<std::thread> loaders;
  for (int t = 0; t < 4; ++t) {
    loaders.emplace_back([&] {
      // At least 30 loads each, and a last one that starts after the last
      // append.
      for (int i = 0;; ++i) {
        const bool last = done.load() && i >= 30;
        absl::StatusOr<LoadedAggregate<Tally>> loaded = Load(*snapshots_, "acc");
        ++loads;
        if (!loaded.ok() || !loaded->snapshot_status.ok()) {
          ADD_FAILURE() << (loaded.ok() ? loaded->snapshot_status : loaded.status());
          ++failures;
        } else if (const Tally want = loaded->version < 0 ? Tally{} : expected[loaded->version];
                   !(loaded->state == want)) {
          ADD_FAILURE() << "at version " << loaded->version << ": " << loaded->state
                        << " != " << want;
          ++failures;
        }
        if (last) break;
      }
    });
  }
  appender.join();
  for (std::thread& th : loaders) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(loads.load(), 4 * 31);
  RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<Tally> final_load, Load(*snapshots_, "acc"));
  EXPECT_EQ(final_load.state, expected.back());
  EXPECT_LT(final_load.events_folded,
            5);  // the last loads left a recent snapshot
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<Snapshot> listed, snapshots_->List("acc"));
  EXPECT_LE(listed.size(), 2u);
}

}  // namespace
}  // namespace rill
