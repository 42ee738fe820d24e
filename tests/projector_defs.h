// Projections shared by the projection tests and
// tests/children/projector_child.cc, with their invariants and independent
// folds of the log, so a model built by a runner (in this process or a killed
// child) can be checked exactly.
//
// Every model counts how often each event was applied (table "applied" or
// "seen": position -> count), so an event applied twice or lost shows up in
// the model itself, not only in aggregates.
//
// Header-only: the children link neither GoogleTest nor rill_test_util.
#ifndef RILL_TESTS_PROJECTOR_DEFS_H_
#define RILL_TESTS_PROJECTOR_DEFS_H_

#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "rill/event.h"
#include "rill/projection.h"
#include "rill/read_model.h"

namespace rill::testing {

// Row keys for positions sort in position order.
inline std::string PosKey(uint64_t position) { return absl::StrFormat("%012d", position); }

// The integer under table/key (0 when absent).
inline absl::StatusOr<int64_t> GetInt(ReadModelTxn& txn, absl::string_view table,
                                      absl::string_view key) {
  absl::StatusOr<std::optional<std::string>> v = txn.Get(table, key);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return 0;
  int64_t n = 0;
  if (!absl::SimpleAtoi(**v, &n)) {
    return absl::DataLossError(absl::StrCat(table, "/", key, " holds \"", **v, "\""));
  }
  return n;
}

// Read-modify-write: table/key += delta.
inline absl::Status AddInt(ReadModelTxn& txn, absl::string_view table, absl::string_view key,
                           int64_t delta) {
  absl::StatusOr<int64_t> n = GetInt(txn, table, key);
  if (!n.ok()) return n.status();
  return txn.Put(table, key, absl::StrCat(*n + delta));
}

// --- ledger: every event, read-modify-write on shared rows ---------------
// totals/count   events applied
// totals/sum     sum of position * version
// totals/version the version that built the model
// streams/<s>    events of stream s
// applied/<pos>  times the event at pos was applied (must be 1)
inline constexpr char kLedger[] = "ledger";

inline ProjectionDef LedgerProjection(uint32_t version = 1) {
  ProjectionDef def;
  def.name = kLedger;
  def.version = version;
  def.tables = {"totals", "streams", "applied"};
  def.apply = [version](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    if (absl::Status s = AddInt(txn, "totals", "count", 1); !s.ok()) return s;
    if (absl::Status s = AddInt(txn, "totals", "sum", static_cast<int64_t>(e.position()) * version);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = txn.Put("totals", "version", absl::StrCat(version)); !s.ok()) return s;
    if (absl::Status s = AddInt(txn, "streams", e.stream(), 1); !s.ok()) return s;
    return AddInt(txn, "applied", PosKey(e.position()), 1);
  };
  return def;
}

// --- typed: a filter by type and stream prefix -----------------------------
// by_type/<type> events of that type
// seen/<pos>     times the event at pos was applied (must be 1)
inline constexpr char kTyped[] = "typed";

inline ProjectionDef TypedProjection(uint32_t version = 1) {
  ProjectionDef def;
  def.name = kTyped;
  def.version = version;
  def.filter.types = {"Opened", "Closed"};
  def.filter.stream_prefix = "acct-";
  def.tables = {"by_type", "seen"};
  def.apply = [](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    if (absl::Status s = AddInt(txn, "by_type", e.type(), 1); !s.ok()) return s;
    return AddInt(txn, "seen", PosKey(e.position()), 1);
  };
  return def;
}

// --- parking: ErrorPolicy::kPark; every 13th position is poison ------------
// totals/count   events applied
// applied/<pos>  times the event at pos was applied (must be 1)
inline constexpr char kParking[] = "parking";
inline constexpr uint64_t kPoisonEvery = 13;

inline ProjectionDef ParkingProjection(uint32_t version = 1) {
  ProjectionDef def;
  def.name = kParking;
  def.version = version;
  def.tables = {"totals", "applied"};
  def.error_policy = ErrorPolicy::kPark;
  def.max_attempts = 2;
  def.retry_backoff = absl::Milliseconds(1);
  def.apply = [](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    // RILL_TEST_HEALED in the environment: the poison is gone (a fixed
    // deployment), so a retry of the parked events succeeds.
    if (e.position() % kPoisonEvery == 0 && std::getenv("RILL_TEST_HEALED") == nullptr) {
      return absl::InternalError(absl::StrCat("poison at position ", e.position()));
    }
    if (absl::Status s = AddInt(txn, "totals", "count", 1); !s.ok()) return s;
    return AddInt(txn, "applied", PosKey(e.position()), 1);
  };
  return def;
}

inline std::vector<ProjectionDef> CrashProjections(uint32_t ledger_version) {
  return {LedgerProjection(ledger_version), TypedProjection(), ParkingProjection()};
}

// --- models as plain maps ----------------------------------------------------
// table -> key -> value
using ModelDump = std::map<std::string, std::map<std::string, std::string>>;

inline absl::StatusOr<ModelDump> DumpView(ReadModelView& view,
                                          const std::vector<std::string>& tables) {
  ModelDump out;
  for (const std::string& table : tables) {
    std::map<std::string, std::string>& rows = out[table];
    absl::Status s = view.Scan(table, "", [&rows](absl::string_view k, absl::string_view v) {
      rows.emplace(std::string(k), std::string(v));
      return true;
    });
    if (!s.ok()) return s;
  }
  return out;
}

inline bool MatchesFilter(const EventFilter& f, const RecordedEvent& e) {
  if (!f.stream_prefix.empty() &&
      e.stream.compare(0, f.stream_prefix.size(), f.stream_prefix) != 0) {
    return false;
  }
  if (f.types.empty()) return true;
  for (const std::string& t : f.types) {
    if (t == e.type) return true;
  }
  return false;
}

// The ledger model of version `version` over the events at positions <= upto.
inline ModelDump FoldLedger(const std::vector<RecordedEvent>& log, uint64_t upto,
                            uint32_t version) {
  ModelDump m;
  m["totals"];
  m["streams"];
  m["applied"];
  int64_t count = 0, sum = 0;
  std::map<std::string, int64_t> streams;
  for (const RecordedEvent& e : log) {
    if (e.position > upto) break;
    ++count;
    sum += static_cast<int64_t>(e.position) * version;
    ++streams[e.stream];
    m["applied"][PosKey(e.position)] = "1";
  }
  if (count > 0) {
    m["totals"]["count"] = absl::StrCat(count);
    m["totals"]["sum"] = absl::StrCat(sum);
    m["totals"]["version"] = absl::StrCat(version);
  }
  for (const auto& [s, n] : streams) m["streams"][s] = absl::StrCat(n);
  return m;
}

inline ModelDump FoldTyped(const std::vector<RecordedEvent>& log, uint64_t upto) {
  const EventFilter filter = TypedProjection().filter;
  ModelDump m;
  m["by_type"];
  m["seen"];
  std::map<std::string, int64_t> by_type;
  for (const RecordedEvent& e : log) {
    if (e.position > upto) break;
    if (!MatchesFilter(filter, e)) continue;
    ++by_type[e.type];
    m["seen"][PosKey(e.position)] = "1";
  }
  for (const auto& [t, n] : by_type) m["by_type"][t] = absl::StrCat(n);
  return m;
}

inline ModelDump FoldParking(const std::vector<RecordedEvent>& log, uint64_t upto) {
  ModelDump m;
  m["totals"];
  m["applied"];
  int64_t count = 0;
  for (const RecordedEvent& e : log) {
    if (e.position > upto) break;
    if (e.position % kPoisonEvery == 0) continue;
    ++count;
    m["applied"][PosKey(e.position)] = "1";
  }
  if (count > 0) m["totals"]["count"] = absl::StrCat(count);
  return m;
}

// Checks what a ledger view must satisfy in any snapshot, from its own
// checkpoint alone (the ledger sees every event and the log is gapless):
// count == checkpoint, sum == version * (1 + ... + checkpoint), the streams'
// counts add up to count, and "applied" holds exactly positions
// 1..checkpoint, each applied once. Returns "" or what is wrong.
inline std::string CheckLedgerView(ReadModelView& view) {
  const uint64_t cp = view.checkpoint();
  auto get = [&view](absl::string_view table, absl::string_view key) -> std::optional<int64_t> {
    absl::StatusOr<std::optional<std::string>> v = view.Get(table, key);
    int64_t n = 0;
    if (!v.ok() || !v->has_value() || !absl::SimpleAtoi(**v, &n)) return std::nullopt;
    return n;
  };
  const std::optional<int64_t> count = get("totals", "count");
  const std::optional<int64_t> sum = get("totals", "sum");
  const std::optional<int64_t> version = get("totals", "version");
  const std::string where = absl::StrCat("ledger view at checkpoint ", cp, ": ");
  if (cp == 0) {
    if (count || sum || version) return absl::StrCat(where, "rows in an empty model");
    return "";
  }
  if (!count || !sum || !version) return absl::StrCat(where, "totals missing");
  if (*count != static_cast<int64_t>(cp)) {
    return absl::StrCat(where, "count ", *count, " != checkpoint");
  }
  const int64_t want_sum = *version * static_cast<int64_t>(cp * (cp + 1) / 2);
  if (*sum != want_sum) {
    return absl::StrCat(where, "sum ", *sum, " != ", want_sum, " (version ", *version, ")");
  }
  int64_t streams = 0;
  std::string err;
  absl::Status s = view.Scan("streams", "", [&](absl::string_view k, absl::string_view v) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(v, &n)) {
      err = absl::StrCat("streams/", k, " holds ", v);
      return false;
    }
    streams += n;
    return true;
  });
  if (!s.ok()) return absl::StrCat(where, s.ToString());
  if (!err.empty()) return absl::StrCat(where, err);
  if (streams != *count) return absl::StrCat(where, "streams add up to ", streams);
  uint64_t next = 1;
  s = view.Scan("applied", "", [&](absl::string_view k, absl::string_view v) {
    if (k != PosKey(next)) {
      err = absl::StrCat("applied/", k, " where ", PosKey(next), " was expected");
      return false;
    }
    if (v != "1") {
      err = absl::StrCat("event at ", k, " applied ", v, " times");
      return false;
    }
    ++next;
    return true;
  });
  if (!s.ok()) return absl::StrCat(where, s.ToString());
  if (!err.empty()) return absl::StrCat(where, err);
  if (next != cp + 1) return absl::StrCat(where, "applied ends at ", next - 1);
  return "";
}

// Like CheckLedgerView for the parking projection: every position up to the
// checkpoint applied once except the poison ones.
inline std::string CheckParkingView(ReadModelView& view) {
  const uint64_t cp = view.checkpoint();
  const std::string where = absl::StrCat("parking view at checkpoint ", cp, ": ");
  absl::StatusOr<std::optional<std::string>> count = view.Get("totals", "count");
  if (!count.ok()) return absl::StrCat(where, count.status().ToString());
  const uint64_t want = cp - cp / kPoisonEvery;
  const std::string want_text = want == 0 ? "" : absl::StrCat(want);
  if (count->value_or("") != want_text) {
    return absl::StrCat(where, "count \"", count->value_or(""), "\" != ", want);
  }
  uint64_t next = 1;
  std::string err;
  absl::Status s = view.Scan("applied", "", [&](absl::string_view k, absl::string_view v) {
    if (next % kPoisonEvery == 0) ++next;
    if (next > cp) {
      err = absl::StrCat("applied/", k, " is past the checkpoint");
      return false;
    }
    if (k != PosKey(next) || v != "1") {
      err = absl::StrCat("applied/", k, "=", v, " where ", PosKey(next), "=1 was expected");
      return false;
    }
    ++next;
    return true;
  });
  if (!s.ok()) return absl::StrCat(where, s.ToString());
  if (!err.empty()) return absl::StrCat(where, err);
  if (next % kPoisonEvery == 0) ++next;
  if (next <= cp) return absl::StrCat(where, "applied ends before ", PosKey(next));
  return "";
}

}  // namespace rill::testing

#endif  // RILL_TESTS_PROJECTOR_DEFS_H_
