// Snapshots: the saved state of one aggregate (one stream) at a stream
// version, so that loading the aggregate reads the newest snapshot plus the
// events after it instead of the whole stream.
//
// A snapshot is (stream, version, schema version, data, taken time). `data`
// is the application's own encoding of its state after folding the stream's
// events 0..version; `schema_version` numbers that encoding. A load asks for
// exactly one schema version and never decodes a snapshot of any other: to
// change the encoding, bump the number. Older snapshots are then skipped
// (the load falls back to an older matching snapshot or to the start of the
// stream) and pruned away as new ones are saved.
//
// Snapshots live in the store's derived environment (STORE/derived/, database
// `snapshots`, see docs/snapshots.md): saving one never takes the log's
// writer lock and never delays an append. They are a cache of the log:
// deleting them loses nothing but load time. Every stored snapshot carries a
// checksum; one that fails it (or FlatBuffers verification) is DataLoss,
// never misread.
//
// Thread-safety: every method may be called from any number of threads at
// once, and several processes may use the snapshots of one store. A
// SnapshotStore must be destroyed before the Store it was opened on.
//
// Example (an aggregate whose state is a balance):
//   rill::SnapshotPolicy policy;
//   policy.every_n_events = 100;
//   auto snapshots = rill::SnapshotStore::Open(store.get(), policy);
//   auto account = (*snapshots)->LoadAggregate(
//       "account-42", /*schema_version=*/1, int64_t{0},
//       [](absl::string_view data) -> absl::StatusOr<int64_t> { ... },
//       [](const int64_t& balance) { return std::to_string(balance); },
//       [](int64_t& balance, const rill::EventView& e) {
//         balance += Amount(e);
//       });
//   // account->state, account->version
#ifndef RILL_SNAPSHOT_H_
#define RILL_SNAPSHOT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "rill/event.h"
#include "rill/store.h"

namespace rill {

// Largest `data` a snapshot may hold.
inline constexpr size_t kMaxSnapshotBytes = size_t{64} << 20;  // 64 MiB

// One saved snapshot, owning its bytes.
struct Snapshot {
  std::string stream;
  int64_t version = -1;         // stream version of the last event folded in
  uint32_t schema_version = 0;  // the application's version of `data`
  std::string data;
  absl::Time taken_at = absl::InfinitePast();
};

struct SnapshotPolicy {
  // LoadAggregate saves a snapshot when it has folded at least this many
  // events past the snapshot it started from (or past the stream's start).
  // 0: LoadAggregate never saves; snapshots are taken only by Save.
  int64_t every_n_events = 0;
  // After each save, only the newest `keep_last` snapshots of that stream
  // (by stream version, whatever their schema version) are kept. 0: keep all.
  int keep_last = 3;
};

// What LoadAggregate returns.
template <typename State>
struct LoadedAggregate {
  State state;
  // Version of the last event folded into `state` (or of the snapshot it
  // came from); -1 when the stream has no events.
  int64_t version = -1;
  // True when `state` started from a snapshot (at snapshot_version).
  bool from_snapshot = false;
  int64_t snapshot_version = -1;
  // Events read from the log and applied by this load.
  int64_t events_folded = 0;
  // True when this load saved a new snapshot (per SnapshotPolicy).
  bool snapshot_saved = false;
  // Why a policy save failed (e.g. disk full). The load itself succeeded and
  // `state` is right; the next load simply folds more events.
  absl::Status snapshot_status = absl::OkStatus();
};

class SnapshotStore {
 public:
  // Opens the snapshots of `store` (one returned by Store::Open, or a Store
  // that wraps one and forwards core()), which must outlive the
  // SnapshotStore. FailedPrecondition for a Store with no engine behind it. On a writable store
  // this opens (creating if needed) STORE/derived/ and its `snapshots` database; on a read-only
  // store they are looked for on each call until they exist.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<SnapshotStore>> Open(
      Store* store, SnapshotPolicy policy = SnapshotPolicy());
  ~SnapshotStore();
  SnapshotStore(const SnapshotStore&) = delete;
  SnapshotStore& operator=(const SnapshotStore&) = delete;

  // Saves `data` as the state of `stream` after its event `version`, then
  // prunes that stream's snapshots to policy().keep_last, in one transaction.
  // A snapshot already saved at that (stream, version) is replaced, whatever
  // its schema version. Errors:
  //   InvalidArgument     bad stream name, version < 0 or past the stream's
  //                       last version, data larger than kMaxSnapshotBytes;
  //   NotFound            the stream does not exist;
  //   FailedPrecondition  the store is read-only;
  //   ResourceExhausted   the disk is full.
  [[nodiscard]] absl::Status Save(absl::string_view stream, int64_t version,
                                  uint32_t schema_version, absl::string_view data);

  // The snapshot of `stream` with the highest version among those whose
  // schema version is exactly `schema_version`; nullopt when there is none
  // (also when a read-only store has no derived data yet). DataLoss when a
  // snapshot of the stream that had to be looked at (every one newer than
  // the result) is corrupt.
  [[nodiscard]] absl::StatusOr<std::optional<Snapshot>> LoadLatest(absl::string_view stream,
                                                                   uint32_t schema_version);

  // Every snapshot of `stream` (empty: of every stream), by stream name then
  // version, with their data. DataLoss on a corrupt one.
  [[nodiscard]] absl::StatusOr<std::vector<Snapshot>> List(absl::string_view stream);

  // Deletes all but the newest `keep_last` snapshots of `stream` (empty: of
  // each stream). keep_last 0 keeps all, as in SnapshotPolicy. Returns how
  // many were deleted. Reads keys only, so it also removes corrupt ones.
  // FailedPrecondition on a read-only store.
  [[nodiscard]] absl::StatusOr<size_t> Prune(absl::string_view stream, int keep_last);

  // Deletes every snapshot of `stream` (empty: of every stream); returns how
  // many. The way out of a DataLoss from a corrupt snapshot: the next load
  // folds the stream from its start. FailedPrecondition on a read-only store.
  [[nodiscard]] absl::StatusOr<size_t> Drop(absl::string_view stream);

  // Loads the aggregate of `stream`: the newest snapshot whose schema
  // version is `schema_version` decoded with `decode` (or `initial` when
  // there is none), then every later event of the stream folded in with
  // `apply`, in version order. Then, per policy(), saves `encode(state)` as a
  // new snapshot at the last folded version and prunes (not on a read-only
  // store; a failed save is reported in snapshot_status only).
  //   decode: absl::StatusOr<State>(absl::string_view data)
  //   encode: std::string(const State&)
  //   apply:  void(State&, const EventView&), or absl::Status(...) whose
  //           non-OK result stops the load and is returned.
  // The EventView is valid only during the call to `apply`. A stream that
  // does not exist (and has no snapshot) yields `initial` at version -1.
  // Errors: those of decode/apply as returned; DataLoss from a corrupt
  // snapshot (nothing is folded: drop the stream's snapshots to recover) or
  // event; FailedPrecondition when the snapshot is newer than the stream's
  // last event (derived data that does not belong to this log).
  // Safe to call from many threads at once, also for the same stream.
  template <typename State, typename Decode, typename Encode, typename Apply>
  [[nodiscard]] absl::StatusOr<LoadedAggregate<State>> LoadAggregate(absl::string_view stream,
                                                                     uint32_t schema_version,
                                                                     State initial, Decode&& decode,
                                                                     Encode&& encode,
                                                                     Apply&& apply);

  const SnapshotPolicy& policy() const { return policy_; }

 private:
  class Impl;
  // The type-erased part of LoadAggregate.
  struct Hooks {
    absl::FunctionRef<absl::Status(absl::string_view data)> restore;
    absl::FunctionRef<absl::Status(const EventView&)> apply;
    absl::FunctionRef<std::string()> encode;
  };
  struct LoadInfo {
    int64_t version = -1;
    bool from_snapshot = false;
    int64_t snapshot_version = -1;
    int64_t events_folded = 0;
    bool snapshot_saved = false;
    absl::Status snapshot_status;
  };

  SnapshotStore(Store* store, SnapshotPolicy policy, std::unique_ptr<Impl> impl);
  absl::Status Load(absl::string_view stream, uint32_t schema_version, const Hooks& hooks,
                    LoadInfo* info);

  Store* const store_;
  const SnapshotPolicy policy_;
  std::unique_ptr<Impl> impl_;
};

template <typename State, typename Decode, typename Encode, typename Apply>
absl::StatusOr<LoadedAggregate<State>> SnapshotStore::LoadAggregate(absl::string_view stream,
                                                                    uint32_t schema_version,
                                                                    State initial, Decode&& decode,
                                                                    Encode&& encode,
                                                                    Apply&& apply) {
  LoadedAggregate<State> result{std::move(initial), -1, false, -1, 0, false, absl::OkStatus()};
  auto restore = [&](absl::string_view data) -> absl::Status {
    absl::StatusOr<State> decoded = decode(data);
    if (!decoded.ok()) return decoded.status();
    result.state = *std::move(decoded);
    return absl::OkStatus();
  };
  auto apply_one = [&](const EventView& event) -> absl::Status {
    if constexpr (std::is_void_v<decltype(apply(result.state, event))>) {
      apply(result.state, event);
      return absl::OkStatus();
    } else {
      return apply(result.state, event);
    }
  };
  auto encode_state = [&]() -> std::string { return encode(std::as_const(result.state)); };
  LoadInfo info;
  if (absl::Status s = Load(stream, schema_version, Hooks{restore, apply_one, encode_state}, &info);
      !s.ok()) {
    return s;
  }
  result.version = info.version;
  result.from_snapshot = info.from_snapshot;
  result.snapshot_version = info.snapshot_version;
  result.events_folded = info.events_folded;
  result.snapshot_saved = info.snapshot_saved;
  result.snapshot_status = std::move(info.snapshot_status);
  return result;
}

}  // namespace rill

#endif  // RILL_SNAPSHOT_H_
