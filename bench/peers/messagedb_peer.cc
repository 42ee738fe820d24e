// Message DB (the Eventide project's event store: SQL functions on
// PostgreSQL) through libpq, the way its own clients write and read:
//
//   write  message_store.write_message(id, stream, type, data, NULL,
//          expected_version) per message, expected versions always given
//          (the first message of a batch expects the stream's last version,
//          the next ones that plus one, ...). Best case: libpq pipeline
//          mode, so a batch is ONE round trip and ONE transaction (the
//          statements up to a pipeline sync form one implicit transaction).
//          Message ids are random UUIDs made by the client.
//   read   get_category_messages('order', position, 1000) pages (read all:
//          every read-log stream is in category "order") and
//          get_stream_messages(stream, position, 1000) pages.
//
// Idempotency, the closest honest equivalent: Message DB has no idempotency
// keys; its writers are idempotent through the message id (a unique index)
// and expected versions. A request's message id is derived from its key, so
// a retry fails (wrong expected version, or duplicate id); the client then
// looks the id up and, when the message is there, counts the retry as
// deduplicated. A retry costs a failed transaction and a lookup, no sync.
//
// Each writer has its own connection. The server is PostgreSQL 15 set up by
// bench/compare (fsync on, synchronous_commit on, full_page_writes on); its
// settings are listed in docs/benchmarks.md.
#include <libpq-fe.h>
#include <xxhash.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../bench_util.h"
#include "absl/strings/str_format.h"
#include "peer.h"

namespace rill::bench {
namespace {

PGconn* Connect(const std::string& conninfo) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    Die(absl::StrFormat("messagedb connect '%s': %s", conninfo, PQerrorMessage(c)));
  }
  return c;
}

void ExecOrDie(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  const ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    Die(absl::StrFormat("messagedb '%s': %s", sql, PQerrorMessage(c)));
  }
  PQclear(r);
}

std::string UuidText(uint64_t hi, uint64_t lo) {
  // Version 4 / variant 1 bits, as gen_random_uuid() would have them.
  hi = (hi & ~uint64_t{0xf000}) | 0x4000;
  lo = (lo & ~(uint64_t{0xc} << 60)) | (uint64_t{0x8} << 60);
  return absl::StrFormat("%08x-%04x-%04x-%04x-%012x", hi >> 32, (hi >> 16) & 0xffff, hi & 0xffff,
                         lo >> 48, lo & 0xffffffffffffULL);
}

constexpr const char* kWriteSql = "SELECT message_store.write_message($1, $2, $3, $4, NULL, $5)";

class MdbWriter : public PeerWriter {
 public:
  explicit MdbWriter(const std::string& conninfo)
      : c_(Connect(conninfo)), rng_(std::random_device{}()) {
    PGresult* r = PQprepare(c_, "w", kWriteSql, 5, nullptr);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) Die(PQerrorMessage(c_));
    PQclear(r);
    r = PQprepare(c_, "find", "SELECT 1 FROM message_store.messages WHERE id = $1::uuid", 1,
                  nullptr);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) Die(PQerrorMessage(c_));
    PQclear(r);
    if (PQenterPipelineMode(c_) != 1) Die("PQenterPipelineMode");
  }
  ~MdbWriter() override {
    PQexitPipelineMode(c_);
    PQfinish(c_);
  }

  void Append(const std::string& stream, int64_t expected,
              absl::Span<const std::string> payloads) override {
    ids_.resize(payloads.size());
    versions_.resize(payloads.size());
    for (size_t i = 0; i < payloads.size(); ++i) {
      ids_[i] = UuidText(rng_(), rng_());
      versions_[i] = std::to_string(expected + static_cast<int64_t>(i));
      SendWrite(ids_[i], stream, payloads[i], versions_[i]);
    }
    if (PQpipelineSync(c_) != 1) Die(PQerrorMessage(c_));
    std::string error;
    for (size_t i = 0; i < payloads.size(); ++i) ReadResult(&error);
    ReadSync();
    if (!error.empty()) Die("messagedb write_message: " + error);
  }

  bool AppendIdempotent(const std::string& stream, int64_t expected, const std::string& payload,
                        const std::string& key) override {
    const XXH128_hash_t h = XXH3_128bits(key.data(), key.size());
    const std::string id = UuidText(h.high64, h.low64);
    const std::string version = std::to_string(expected);
    SendWrite(id, stream, payload, version);
    if (PQpipelineSync(c_) != 1) Die(PQerrorMessage(c_));
    std::string error;
    ReadResult(&error);
    ReadSync();
    if (error.empty()) return false;
    // Failed: a retry if the message with this id is there.
    const char* values[1] = {id.c_str()};
    if (PQsendQueryPrepared(c_, "find", 1, values, nullptr, nullptr, 0) != 1 ||
        PQpipelineSync(c_) != 1) {
      Die(PQerrorMessage(c_));
    }
    PGresult* r = PQgetResult(c_);
    const bool found = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    PQclear(r);
    while ((r = PQgetResult(c_)) != nullptr) PQclear(r);
    ReadSync();
    if (!found) Die("messagedb write_message (idempotent): " + error);
    return true;
  }

 private:
  void SendWrite(const std::string& id, const std::string& stream, const std::string& payload,
                 const std::string& version) {
    const char* values[5] = {id.c_str(), stream.c_str(), kEventType, payload.c_str(),
                             version.c_str()};
    if (PQsendQueryPrepared(c_, "w", 5, values, nullptr, nullptr, 0) != 1) {
      Die(PQerrorMessage(c_));
    }
  }
  // One statement's result, then the NULL that ends it.
  void ReadResult(std::string* error) {
    PGresult* r = PQgetResult(c_);
    if (r == nullptr) Die("messagedb: missing result");
    const ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && error->empty()) {
      *error = st == PGRES_PIPELINE_ABORTED ? "aborted" : PQresultErrorMessage(r);
    }
    PQclear(r);
    r = PQgetResult(c_);
    if (r != nullptr) Die("messagedb: unexpected extra result");
  }
  void ReadSync() {
    PGresult* r = PQgetResult(c_);
    if (r == nullptr || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
      Die(absl::StrFormat("messagedb: expected pipeline sync, got %s",
                          r ? PQresStatus(PQresultStatus(r)) : "NULL"));
    }
    PQclear(r);
  }

  PGconn* const c_;
  std::mt19937_64 rng_;
  std::vector<std::string> ids_, versions_;
};

class MessageDbPeer : public Peer {
 public:
  MessageDbPeer(std::string app, std::string admin)
      : app_(std::move(app)), admin_conninfo_(std::move(admin)) {}
  ~MessageDbPeer() override { Close(); }
  std::string name() const override { return "messagedb"; }

  // An empty table, then a history the workloads never touch, analyzed:
  // the planner statistics of a store in use. write_message's stream_version
  // (`max(position) ... WHERE stream_name = $1`) gets its plan cached per
  // connection (PL/pgSQL, generic after five calls), made when the writer
  // starts. TRUNCATE alone leaves pg_class saying "empty" or "unknown" while
  // keeping the last workload's pg_statistic and its pending autoanalyze
  // (n_mod_since_analyze survives TRUNCATE); which plan got cached then
  // depended on when autovacuum had last visited: a seq scan (the table
  // analyzed while empty) whose cost grows with every message written, a
  // forward scan of the whole stream (a stale n_distinct: one row per
  // stream), or the backward index probe a store in use gets. That swung
  // append_b100 and append_b1000 up to 10x between full runs.
  void OpenFresh(const std::string& /*tag*/) override {
    Reset();
    ExecOrDie(admin_, "TRUNCATE message_store.messages RESTART IDENTITY");
    const std::string payload = Payload(0);
    const char* values[2] = {payload.c_str(), kEventType};
    PGresult* r = PQexecParams(
        admin_,
        "INSERT INTO message_store.messages (stream_name, position, type, data, id) "
        "SELECT 'history-' || lpad((g % 1000)::text, 4, '0'), g / 1000, $2, $1::jsonb, "
        "gen_random_uuid() FROM generate_series(0, 9999) AS g",
        2, nullptr, values, nullptr, nullptr, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) Die(PQerrorMessage(admin_));
    PQclear(r);
    ExecOrDie(admin_, "VACUUM (FREEZE, ANALYZE) message_store.messages");
    ExecOrDie(admin_, "CHECKPOINT");
  }
  std::unique_ptr<PeerWriter> NewWriter() override { return std::make_unique<MdbWriter>(app_); }

  void LoadReadLog(uint64_t events, ReadLayout layout) override {
    Reset();
    ExecOrDie(admin_, "TRUNCATE message_store.messages RESTART IDENTITY");
    const std::string payload = Payload(0);
    const std::string n = std::to_string(events / kReadBatch * kReadBatch);
    // Runs of $3 consecutive events (kRuns: kReadBatch; kInterleaved: 1):
    // message g is event k = g % $3 of run u = g / $3, and run u goes where
    // StreamSlotOfEvent sends it (compare.cc): every 10th run to order-big,
    // the others round robin over the 999 small streams.
    const std::string run = std::to_string(layout == ReadLayout::kRuns ? kReadBatch : 1);
    const char* values[3] = {payload.c_str(), n.c_str(), run.c_str()};
    PGresult* r =
        PQexecParams(admin_,
                     "INSERT INTO message_store.messages (stream_name, position, type, data, id) "
                     "SELECT CASE WHEN u % 10 = 0 THEN 'order-big' ELSE 'order-' || "
                     "  lpad(((u - u / 10 - 1) % 999)::text, 4, '0') END, "
                     "CASE WHEN u % 10 = 0 THEN (u / 10) * $3::bigint + k "
                     "  ELSE ((u - u / 10 - 1) / 999) * $3::bigint + k END, "
                     "'OrderLinePlaced', $1::jsonb, gen_random_uuid() "
                     "FROM (SELECT g, g / $3::bigint AS u, g % $3::bigint AS k "
                     "  FROM generate_series(0, $2::bigint - 1) AS g) AS s ORDER BY g",
                     3, nullptr, values, nullptr, nullptr, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) Die(PQerrorMessage(admin_));
    PQclear(r);
    ExecOrDie(admin_, "VACUUM (FREEZE, ANALYZE) message_store.messages");
    ExecOrDie(admin_, "CHECKPOINT");
    reader_ = Connect(app_);
    events_ = events;
  }

  uint64_t ReadAll(uint64_t* sum) override {
    uint64_t n = 0, from = 1;
    while (true) {
      const std::string pos = std::to_string(from);
      const char* values[1] = {pos.c_str()};
      PGresult* r = PQexecParams(reader_,
                                 "SELECT global_position, data FROM "
                                 "message_store.get_category_messages('order', $1::bigint, 1000)",
                                 1, nullptr, values, nullptr, nullptr, 0);
      const int rows = Drain(r, 0, 1, sum);
      n += rows;
      if (rows < 1000) break;
      from = last_ + 1;
    }
    return n;
  }
  uint64_t ReadStream(const std::string& stream, uint64_t* sum) override {
    uint64_t n = 0;
    int64_t from = 0;
    while (true) {
      const int rows = Slice(stream, from, 1000, sum);
      n += rows;
      if (rows < 1000) break;
      from += rows;
    }
    return n;
  }
  uint64_t ReadSlice(const std::string& stream, int64_t from, int count, uint64_t* sum) override {
    return Slice(stream, from, count, sum);
  }
  double BytesPerEvent() override {
    PGresult* r = PQexec(admin_, "SELECT pg_total_relation_size('message_store.messages')");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) Die(PQerrorMessage(admin_));
    const double bytes = std::atof(PQgetvalue(r, 0, 0));
    PQclear(r);
    return bytes / events_;
  }
  void Close() override {
    if (reader_ != nullptr) PQfinish(reader_);
    reader_ = nullptr;
    if (admin_ != nullptr) PQfinish(admin_);
    admin_ = nullptr;
  }

 private:
  void Reset() {
    Close();
    admin_ = Connect(admin_conninfo_);
  }
  int Slice(const std::string& stream, int64_t from, int count, uint64_t* sum) {
    const std::string pos = std::to_string(from), n = std::to_string(count);
    const char* values[3] = {stream.c_str(), pos.c_str(), n.c_str()};
    PGresult* r = PQexecParams(reader_,
                               "SELECT global_position, data, position FROM "
                               "message_store.get_stream_messages($1, $2::bigint, $3::bigint)",
                               3, nullptr, values, nullptr, nullptr, 0);
    return Drain(r, 0, 1, sum);
  }
  // Rows of `r` (freed): Touch(position column, data column) of each.
  int Drain(PGresult* r, int pos_col, int data_col, uint64_t* sum) {
    if (PQresultStatus(r) != PGRES_TUPLES_OK) Die(PQerrorMessage(reader_));
    const int rows = PQntuples(r);
    for (int i = 0; i < rows; ++i) {
      last_ = std::strtoull(PQgetvalue(r, i, pos_col), nullptr, 10);
      *sum +=
          Touch(last_, absl::string_view(PQgetvalue(r, i, data_col), PQgetlength(r, i, data_col)));
    }
    PQclear(r);
    return rows;
  }

  const std::string app_, admin_conninfo_;
  PGconn* admin_ = nullptr;
  PGconn* reader_ = nullptr;
  uint64_t events_ = 0;
  uint64_t last_ = 0;
};

}  // namespace

std::unique_ptr<Peer> NewMessageDbPeer(const std::string& app_conninfo,
                                       const std::string& admin_conninfo) {
  return std::make_unique<MessageDbPeer>(app_conninfo, admin_conninfo);
}

}  // namespace rill::bench
