#include "overlay.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "rill/limits.h"

namespace rill::internal {

absl::StatusOr<std::optional<std::string>> CommittedRows::Get(absl::string_view row_key) {
  absl::StatusOr<Txn> txn = env_->BeginRead();
  if (!txn.ok()) return txn.status();
  MDB_val k = ToVal(row_key), v;
  int rc = mdb_get(txn->get(), rows_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<std::string>();
  if (rc != 0) return LmdbError(rc, "reading a read model");
  return std::optional<std::string>(std::string(FromVal(v)));
}

absl::StatusOr<std::string> EventTxn::Key(absl::string_view table, absl::string_view key) const {
  if (std::find(tables_->begin(), tables_->end(), table) == tables_->end()) {
    return absl::NotFoundError(absl::StrCat("\"", table, "\" is not a table of this projection"));
  }
  if (key.empty() || key.size() > kMaxStreamNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "read-model key of ", key.size(), " bytes; keys are 1..", kMaxStreamNameBytes, " bytes"));
  }
  return RowKey(generation_, table, key);
}

absl::StatusOr<std::optional<std::string>> EventTxn::Get(absl::string_view table,
                                                         absl::string_view key) {
  absl::StatusOr<std::string> row = Key(table, key);
  if (!row.ok()) return row.status();
  if (auto it = own_.find(*row); it != own_.end()) return it->second;
  if (auto it = batch_->find(*row); it != batch_->end()) return it->second;
  return committed_->Get(*row);
}

absl::Status EventTxn::Put(absl::string_view table, absl::string_view key,
                           absl::string_view value) {
  absl::StatusOr<std::string> row = Key(table, key);
  if (!row.ok()) return row.status();
  if (value.size() > kMaxPayloadBytes) {
    return absl::InvalidArgumentError(absl::StrCat("read-model value of ", value.size(),
                                                   " bytes; the limit is ", kMaxPayloadBytes));
  }
  own_[*std::move(row)] = std::string(value);
  return absl::OkStatus();
}

absl::Status EventTxn::Delete(absl::string_view table, absl::string_view key) {
  absl::StatusOr<std::string> row = Key(table, key);
  if (!row.ok()) return row.status();
  own_[*std::move(row)] = std::nullopt;
  return absl::OkStatus();
}

void EventTxn::MergeIntoBatch() {
  for (auto& [k, v] : own_) (*batch_)[k] = std::move(v);
  own_.clear();
}

absl::Status WriteChanges(MDB_txn* txn, MDB_dbi rows, const RowChanges& changes) {
  for (const auto& [key, value] : changes) {
    absl::Status s = value ? Put(txn, rows, key, *value) : Del(txn, rows, key);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace rill::internal
