// ProjectionRunner: one Worker per projection, views of their models, dead
// letters, rebuild requests and as-of rebuilds.
#include <limits>
#include <memory>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "apply_batch.h"
#include "catalog.h"
#include "dead_letters.h"
#include "keys.h"
#include "rill/projection.h"
#include "worker.h"

namespace rill {
namespace internal {
namespace {

constexpr size_t kMaxTableName = 32;
constexpr size_t kMaxTables = 32;

absl::Status ValidateDef(const ProjectionDef& def) {
  if (absl::Status s = ValidateName("projection name", def.name, kMaxProjectionName); !s.ok()) {
    return s;
  }
  if (def.tables.empty() || def.tables.size() > kMaxTables) {
    return absl::InvalidArgumentError(
        absl::StrCat("projection \"", def.name, "\" must name 1..", kMaxTables, " tables"));
  }
  for (const std::string& t : def.tables) {
    if (absl::Status s = ValidateName("table name", t, kMaxTableName); !s.ok()) return s;
  }
  if (!def.apply) {
    return absl::InvalidArgumentError(absl::StrCat("projection \"", def.name, "\" has no apply"));
  }
  return absl::OkStatus();
}

// A read-only snapshot of one generation's rows.
class ViewImpl final : public ReadModelView {
 public:
  ViewImpl(Txn txn, MDB_dbi rows, uint64_t generation, uint64_t checkpoint,
           std::vector<std::string> tables)
      : txn_(std::move(txn)),
        rows_(rows),
        generation_(generation),
        checkpoint_(checkpoint),
        tables_(std::move(tables)) {}

  absl::StatusOr<std::optional<std::string>> Get(absl::string_view table,
                                                 absl::string_view key) override {
    if (absl::Status s = CheckTable(table); !s.ok()) return s;
    const std::string row = RowKey(generation_, table, key);
    MDB_val k = ToVal(row), v;
    int rc = mdb_get(txn_.get(), rows_, &k, &v);
    if (rc == MDB_NOTFOUND) return std::optional<std::string>();
    if (rc != 0) return LmdbError(rc, "reading a read model");
    return std::optional<std::string>(std::string(FromVal(v)));
  }

  absl::Status Scan(absl::string_view table, absl::string_view prefix,
                    absl::FunctionRef<bool(absl::string_view, absl::string_view)> fn) override {
    if (absl::Status s = CheckTable(table); !s.ok()) return s;
    absl::StatusOr<CursorPtr> cursor = txn_.OpenCursor(rows_);
    if (!cursor.ok()) return cursor.status();
    const std::string table_prefix = RowKey(generation_, table, "");
    const std::string start = absl::StrCat(table_prefix, prefix);
    MDB_val k = ToVal(start), v;
    int rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_SET_RANGE);
    for (; rc == 0; rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
      absl::string_view key = FromVal(k);
      if (!absl::StartsWith(key, start)) break;
      if (!fn(key.substr(table_prefix.size()), FromVal(v))) return absl::OkStatus();
    }
    if (rc != 0 && rc != MDB_NOTFOUND) return LmdbError(rc, "scanning a read model");
    return absl::OkStatus();
  }

  uint64_t checkpoint() const override { return checkpoint_; }

 private:
  absl::Status CheckTable(absl::string_view table) const {
    for (const std::string& t : tables_) {
      if (t == table) return absl::OkStatus();
    }
    return absl::NotFoundError(absl::StrCat("\"", table, "\" is not a table of this projection"));
  }

  Txn txn_;
  MDB_dbi rows_;
  uint64_t generation_;
  uint64_t checkpoint_;
  std::vector<std::string> tables_;
};

class RunnerImpl final : public ProjectionRunner {
 public:
  RunnerImpl(Derived derived, const RunnerOptions& options)
      : derived_(derived), options_(options) {}
  ~RunnerImpl() override { Stop(); }

  absl::Status Init(std::vector<ProjectionDef> defs) {
    for (ProjectionDef& def : defs) {
      if (absl::Status s = ValidateDef(def); !s.ok()) return s;
      if (workers_.contains(def.name)) {
        return absl::InvalidArgumentError(
            absl::StrCat("projection \"", def.name, "\" is given twice"));
      }
      std::string name = def.name;
      workers_[name] = std::make_unique<Worker>(derived_, std::move(def), options_);
      order_.push_back(name);
    }
    for (const std::string& name : order_) {
      if (absl::Status s = workers_[name]->Start(); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  void Stop() override {
    for (auto& [name, worker] : workers_) worker->Stop();
  }

  absl::Status WaitFor(absl::string_view projection, uint64_t position,
                       absl::Duration timeout) override {
    absl::StatusOr<Worker*> w = Find(projection);
    if (!w.ok()) return w.status();
    return (*w)->WaitFor(position, timeout);
  }

  absl::StatusOr<std::unique_ptr<ReadModelView>> View(absl::string_view projection) override {
    absl::StatusOr<Worker*> w = Find(projection);
    if (!w.ok()) return w.status();
    absl::StatusOr<Txn> txn = derived_.env->BeginRead();
    if (!txn.ok()) return txn.status();
    absl::StatusOr<std::optional<CatalogRec>> rec =
        ReadCatalog(txn->get(), derived_.dbs, projection);
    if (!rec.ok()) return rec.status();
    if (!rec->has_value()) {
      return absl::NotFoundError(absl::StrCat("projection \"", projection, "\" has no model"));
    }
    const GenerationRec active = (*rec)->active;
    return std::unique_ptr<ReadModelView>(new ViewImpl(
        *std::move(txn), derived_.dbs.rows, active.id, active.checkpoint, (*w)->def().tables));
  }

  absl::StatusOr<ProjectionStatus> Status(absl::string_view projection) override {
    absl::StatusOr<Worker*> w = Find(projection);
    if (!w.ok()) return w.status();
    return (*w)->Status();
  }

  std::vector<ProjectionStatus> Statuses() override {
    std::vector<ProjectionStatus> out;
    for (const std::string& name : order_) out.push_back(workers_[name]->Status());
    return out;
  }

  absl::Status Rebuild(absl::string_view projection) override {
    absl::StatusOr<Worker*> w = Find(projection);
    if (!w.ok()) return w.status();
    (*w)->Rebuild();
    return absl::OkStatus();
  }

  absl::Status RebuildAsOf(absl::string_view projection, uint64_t position,
                           absl::string_view label) override {
    absl::StatusOr<Worker*> w = Find(projection);
    if (!w.ok()) return w.status();
    if (absl::Status s = ValidateName("as-of label", label, kMaxTableName); !s.ok()) return s;
    const ProjectionDef& def = (*w)->def();
    GenerationRec gen;
    absl::Status s = derived_.env->Write(kCommitDerived, [&](MDB_txn* txn) -> absl::Status {
      absl::StatusOr<uint64_t> id = NextGeneration(txn, derived_.dbs);
      if (!id.ok()) return id.status();
      gen = GenerationRec{*id, def.version, 0};
      return absl::OkStatus();
    });
    if (!s.ok()) return s;
    const std::string key = AsOfKey(projection, label);
    // Failing events are handled as the projection's policy says, except
    // that an as-of set keeps no dead letters of its own. The set has no
    // catalog entry until it is complete.
    BatchSpec spec;
    spec.batch_size = options_.batch_size;
    spec.last_position = position;
    spec.park = def.error_policy == ErrorPolicy::kPark;
    spec.record_dead_letters = false;
    auto no_catalog = [](MDB_txn*, const GenerationRec&) { return absl::OkStatus(); };
    for (;;) {
      absl::StatusOr<BatchOutcome> out = ApplyBatch(derived_, def, &gen, spec, no_catalog);
      absl::Status failure = !out.ok() ? out.status() : out->failed ? out->error : absl::OkStatus();
      if (!failure.ok()) {
        // Leave no rows of the unfinished set behind.
        absl::Status cleaned = derived_.env->Write(
            kCommitDerived, [&](MDB_txn* txn) { return DeleteRows(txn, gen.id); });
        return cleaned.ok() ? failure : cleaned;
      }
      if (out->records < options_.batch_size || gen.checkpoint >= position) break;
    }
    // Publish the set; a set of the same label is replaced (its rows are
    // deleted here: nobody else writes as-of sets).
    return derived_.env->Write(kCommitDerived, [&](MDB_txn* txn) -> absl::Status {
      MDB_val k = ToVal(key), v;
      int rc = mdb_get(txn, derived_.dbs.asof, &k, &v);
      if (rc == 0) {
        absl::StatusOr<std::pair<GenerationRec, uint64_t>> old = DecodeAsOf(FromVal(v));
        if (old.ok()) {
          if (absl::Status d = DeleteRows(txn, old->first.id); !d.ok()) return d;
        }
      } else if (rc != MDB_NOTFOUND) {
        return LmdbError(rc, "reading an as-of set");
      }
      return Put(txn, derived_.dbs.asof, key, EncodeAsOf(gen, position));
    });
  }

  absl::StatusOr<std::unique_ptr<ReadModelView>> ViewAsOf(absl::string_view projection,
                                                          absl::string_view label) override {
    absl::StatusOr<Worker*> w = Find(projection);
    if (!w.ok()) return w.status();
    absl::StatusOr<Txn> txn = derived_.env->BeginRead();
    if (!txn.ok()) return txn.status();
    const std::string key = AsOfKey(projection, label);
    MDB_val k = ToVal(key), v;
    int rc = mdb_get(txn->get(), derived_.dbs.asof, &k, &v);
    if (rc == MDB_NOTFOUND) {
      return absl::NotFoundError(
          absl::StrCat("projection \"", projection, "\" has no as-of set \"", label, "\""));
    }
    if (rc != 0) return LmdbError(rc, "reading an as-of set");
    absl::StatusOr<std::pair<GenerationRec, uint64_t>> set = DecodeAsOf(FromVal(v));
    if (!set.ok()) return set.status();
    return std::unique_ptr<ReadModelView>(new ViewImpl(*std::move(txn), derived_.dbs.rows,
                                                       set->first.id, set->first.checkpoint,
                                                       (*w)->def().tables));
  }

  absl::StatusOr<std::vector<ParkedEvent>> ListParked(absl::string_view projection) override {
    absl::StatusOr<Worker*> w = Find(projection);
    if (!w.ok()) return w.status();
    return ListDeadLetters(derived_, projection);
  }

  absl::Status RetryParked(absl::string_view projection, uint64_t position) override {
    absl::StatusOr<Worker*> w = Find(projection);
    if (!w.ok()) return w.status();
    return (*w)->RetryParked(position);
  }

  absl::Status DropParked(absl::string_view projection, uint64_t position) override {
    absl::StatusOr<Worker*> w = Find(projection);
    if (!w.ok()) return w.status();
    return DropDeadLetter(derived_, projection, position);
  }

 private:
  absl::StatusOr<Worker*> Find(absl::string_view projection) {
    auto it = workers_.find(projection);
    if (it == workers_.end()) {
      return absl::NotFoundError(
          absl::StrCat("this runner does not run a projection \"", projection, "\""));
    }
    return it->second.get();
  }

  absl::Status DeleteRows(MDB_txn* txn, uint64_t generation) {
    return DeletePrefix(txn, derived_.dbs.rows, GenerationPrefix(generation),
                        std::numeric_limits<size_t>::max())
        .status();
  }

  Derived derived_;
  RunnerOptions options_;
  absl::flat_hash_map<std::string, std::unique_ptr<Worker>> workers_;
  std::vector<std::string> order_;
};

}  // namespace
}  // namespace internal

const char* ProjectionStateName(ProjectionState state) {
  switch (state) {
    case ProjectionState::kRunning:
      return "running";
    case ProjectionState::kCaughtUp:
      return "caught up";
    case ProjectionState::kRebuilding:
      return "rebuilding";
    case ProjectionState::kStopped:
      return "stopped";
    case ProjectionState::kFailed:
      return "failed";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<ProjectionRunner>> ProjectionRunner::Start(
    Store* store, std::vector<ProjectionDef> projections, const RunnerOptions& options) {
  if (store == nullptr) return absl::InvalidArgumentError("no store");
  absl::StatusOr<internal::Derived> derived = internal::OpenDerived(store);
  if (!derived.ok()) return derived.status();
  if (derived->env->read_only()) {
    return absl::FailedPreconditionError("projections cannot run on a read-only store");
  }
  auto runner = std::make_unique<internal::RunnerImpl>(*derived, options);
  if (absl::Status s = runner->Init(std::move(projections)); !s.ok()) return s;
  return std::unique_ptr<ProjectionRunner>(std::move(runner));
}

}  // namespace rill
