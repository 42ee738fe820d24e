#include "projection_test_util.h"

#include "absl/strings/str_cat.h"
#include "keys.h"
#include "lmdb_env.h"
#include "process_util.h"
#include "store_core.h"
#include "test_util.h"

namespace rill {

void PrintTo(ProjectionState state, std::ostream* os) { *os << ProjectionStateName(state); }

}  // namespace rill

namespace rill::testing {

StoreOptions TestStoreOptions() {
  StoreOptions options;
  options.durability = Durability::kNoSyncUnsafe;  // killing a test never loses a commit
  return options;
}

std::string MixedStream(int i) { return absl::StrCat(i % 2 == 0 ? "acct-" : "misc-", i % 5); }
std::string MixedType(int i) {
  static const char* const kTypes[] = {"Opened", "Updated", "Closed"};
  return kTypes[(i / 2) % 3];
}

absl::StatusOr<uint64_t> AppendMixed(Store& store, int count, int first) {
  uint64_t last = 0;
  for (int i = first; i < first + count; ++i) {
    absl::StatusOr<AppendResult> r =
        store.Append(MixedStream(i), ExpectedVersion::Any(), {MakeEvent(MixedType(i), i)});
    if (!r.ok()) return r.status();
    last = r->last_position;
  }
  return last;
}

ProjectionDef BlockAt(ProjectionDef def, std::shared_ptr<std::atomic<uint64_t>> at, Gate* gate) {
  auto inner = def.apply;
  def.apply = [inner, at, gate](const EventView& e, ReadModelTxn& txn) {
    uint64_t want = e.position();
    if (at->compare_exchange_strong(want, 0)) gate->Pass();
    return inner(e, txn);
  };
  return def;
}

ProjectionDef Renamed(ProjectionDef def, const std::string& name) {
  def.name = name;
  return def;
}

absl::StatusOr<std::vector<RecordedEvent>> WholeLog(Store& store) { return store.ReadAll(1); }

absl::StatusOr<ModelDump> Dump(ProjectionRunner& runner, const ProjectionDef& def) {
  absl::StatusOr<std::unique_ptr<ReadModelView>> view = runner.View(def.name);
  if (!view.ok()) return view.status();
  return DumpView(**view, def.tables);
}

bool AwaitStatus(ProjectionRunner& runner, const std::string& name,
                 const std::function<bool(const ProjectionStatus&)>& pred, ProjectionStatus* last,
                 absl::Duration timeout) {
  ProjectionStatus seen;
  const bool ok = WaitUntil(
      [&] {
        absl::StatusOr<ProjectionStatus> st = runner.Status(name);
        if (!st.ok()) return false;
        seen = *st;
        return pred(seen);
      },
      timeout);
  if (last != nullptr) *last = seen;
  return ok;
}

bool RebuildDone(const ProjectionStatus& st) {
  return st.rebuild_version == 0 && st.state != ProjectionState::kRebuilding;
}

// White box (docs/format.md): the generations that still hold rows in the
// derived environment's "rm" database, whose row keys start with the
// generation id (u64 big-endian). Used to see that a swapped-out
// generation's tables are really dropped.
absl::StatusOr<std::set<uint64_t>> GenerationsWithRows(Store* store) {
  absl::StatusOr<internal::LmdbEnv*> env = store->core()->DerivedEnv();
  if (!env.ok()) return env.status();
  absl::StatusOr<MDB_dbi> rows = (*env)->OpenDb("rm", /*create=*/false);
  if (!rows.ok()) return rows.status();
  absl::StatusOr<internal::Txn> txn = (*env)->BeginRead();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<internal::CursorPtr> cursor = txn->OpenCursor(*rows);
  if (!cursor.ok()) return cursor.status();
  std::set<uint64_t> out;
  MDB_val k, v;
  int rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_FIRST);
  while (rc == 0) {
    if (k.mv_size < 8) return absl::DataLossError("short row key");
    const uint64_t gen = internal::GetBigEndian64(static_cast<const uint8_t*>(k.mv_data));
    out.insert(gen);
    uint8_t next[8];
    internal::PutBigEndian64(gen + 1, next);
    k = internal::ToVal(next, sizeof(next));
    rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_SET_RANGE);
  }
  if (rc != MDB_NOTFOUND) return absl::InternalError("cursor error");
  return out;
}

ViewHammer::ViewHammer(ProjectionRunner* runner, std::string name, int threads,
                       std::function<std::string(ReadModelView&)> check)
    : runner_(runner), name_(std::move(name)), check_(std::move(check)), views_(threads) {
  for (int t = 0; t < threads; ++t) {
    threads_.emplace_back([this, t] { Loop(t); });
  }
}

bool ViewHammer::AwaitViews(int n, absl::Duration timeout) {
  return WaitUntil(
      [&] {
        for (const auto& v : views_) {
          if (v.load() < n) return false;
        }
        return true;
      },
      timeout);
}

void ViewHammer::Stop() {
  stop_.store(true);
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

std::vector<std::string> ViewHammer::errors() {
  absl::MutexLock lock(&mu_);
  return errors_;
}

int64_t ViewHammer::total_views() const {
  int64_t n = 0;
  for (const auto& v : views_) n += v.load();
  return n;
}

void ViewHammer::Loop(int t) {
  uint64_t last_checkpoint = 0;
  while (!stop_.load()) {
    std::string error;
    {
      absl::StatusOr<std::unique_ptr<ReadModelView>> view = runner_->View(name_);
      if (!view.ok()) {
        error = view.status().ToString();
      } else {
        error = check_(**view);
        if (error.empty() && (*view)->checkpoint() < last_checkpoint) {
          error = absl::StrCat("checkpoint went back from ", last_checkpoint, " to ",
                               (*view)->checkpoint());
        }
        last_checkpoint = (*view)->checkpoint();
      }
    }
    if (!error.empty()) {
      absl::MutexLock lock(&mu_);
      if (errors_.size() < 20) errors_.push_back(error);
    }
    views_[t].fetch_add(1);
  }
}

std::vector<uint64_t> ParkedPositions(const std::vector<ParkedEvent>& parked) {
  std::vector<uint64_t> out;
  for (const ParkedEvent& p : parked) out.push_back(p.position);
  return out;
}

}  // namespace rill::testing
