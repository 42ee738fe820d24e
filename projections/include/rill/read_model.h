// Read models: the tables a projection owns, as byte keys and byte values.
//
// A projection's Apply writes through a ReadModelTxn; queries read through a
// ReadModelView. Tables live in the store's derived environment
// (STORE/derived/), every generation's rows in one LMDB database under keys
// that start with the generation (docs/format.md), so they can be dropped and
// rebuilt from the log at any time.
//
// Thread-safety: a ReadModelTxn belongs to the runner thread that passed it to
// Apply and is valid only during that call. A ReadModelView is a consistent
// read-only snapshot; it may be used from any one thread at a time and should
// be short-lived (it holds an LMDB read transaction).
#ifndef RILL_READ_MODEL_H_
#define RILL_READ_MODEL_H_

#include <optional>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rill {

class ReadModelTxn {
 public:
  virtual ~ReadModelTxn() = default;

  // Sees the writes made earlier in the same batch. NotFound when the table
  // is not one of the projection's tables.
  virtual absl::StatusOr<std::optional<std::string>> Get(absl::string_view table,
                                                         absl::string_view key) = 0;
  // Keys: 1..400 bytes. Values: up to 16 MiB.
  virtual absl::Status Put(absl::string_view table, absl::string_view key,
                           absl::string_view value) = 0;
  virtual absl::Status Delete(absl::string_view table, absl::string_view key) = 0;
};

class ReadModelView {
 public:
  virtual ~ReadModelView() = default;

  // The value under `key`, or nullopt. NotFound for an unknown table.
  virtual absl::StatusOr<std::optional<std::string>> Get(absl::string_view table,
                                                         absl::string_view key) = 0;
  // Rows of `table` whose keys start with `prefix`, in key order, until `fn`
  // returns false. The views are valid only during the call of `fn`.
  virtual absl::Status Scan(
      absl::string_view table, absl::string_view prefix,
      absl::FunctionRef<bool(absl::string_view key, absl::string_view value)> fn) = 0;
  // The log position this snapshot of the model reflects.
  virtual uint64_t checkpoint() const = 0;
};

}  // namespace rill

#endif  // RILL_READ_MODEL_H_
