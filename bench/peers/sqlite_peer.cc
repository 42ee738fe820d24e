// SQLite as an event store, configured the way a careful user would:
//
//   CREATE TABLE events(position INTEGER PRIMARY KEY, stream TEXT NOT NULL,
//     version INTEGER NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL,
//     UNIQUE(stream, version))
//
// WAL journal with synchronous=FULL (the WAL is fsync'd on every commit: as
// durable as rill), prepared statements, one BEGIN IMMEDIATE transaction per
// append. The expected version is checked in SQL inside that transaction
// (max(version) of the stream through the UNIQUE index; the index would also
// reject a duplicate version). Each writer thread has its own connection; a
// process-wide mutex around write transactions stands in for SQLite's busy
// handler, which would sleep (and so only be slower) when 16 connections
// contend for its one write lock. Idempotency: a WITHOUT ROWID table
// key -> (fingerprint, position), looked up and written in the same
// transaction; a retry commits a transaction that wrote nothing (no sync).
// Reads use a 1 GiB mmap and a 256 MiB page cache.
#include <sqlite3.h>
#include <xxhash.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../bench_util.h"
#include "absl/strings/str_format.h"
#include "peer.h"

namespace rill::bench {
namespace {

void Check(sqlite3* db, int rc, const char* what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
    Die(absl::StrFormat("sqlite %s: %s", what, db ? sqlite3_errmsg(db) : "?"));
  }
}

void Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    Die(absl::StrFormat("sqlite exec '%s': %s", sql, err ? err : "?"));
  }
}

struct Stmt {
  sqlite3_stmt* s = nullptr;
  Stmt(sqlite3* db, const char* sql) {
    Check(db, sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr), sql);
  }
  ~Stmt() { sqlite3_finalize(s); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
};

sqlite3* OpenDb(const std::string& path, bool durable) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  Check(db, rc, "open");
  sqlite3_busy_timeout(db, 60000);
  Exec(db, "PRAGMA journal_mode=WAL");
  Exec(db, durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=OFF");
  Exec(db, "PRAGMA cache_size=-262144");
  Exec(db, "PRAGMA mmap_size=1073741824");
  Exec(db,
       "CREATE TABLE IF NOT EXISTS events(position INTEGER PRIMARY KEY, "
       "stream TEXT NOT NULL, version INTEGER NOT NULL, type TEXT NOT NULL, "
       "data BLOB NOT NULL, UNIQUE(stream, version))");
  Exec(db,
       "CREATE TABLE IF NOT EXISTS idempotency(key TEXT PRIMARY KEY, "
       "fingerprint BLOB NOT NULL, position INTEGER NOT NULL) WITHOUT ROWID");
  return db;
}

class SqliteWriter : public PeerWriter {
 public:
  SqliteWriter(const std::string& path, std::mutex* write_mu)
      : db_(OpenDb(path, true)),
        write_mu_(write_mu),
        begin_(db_, "BEGIN IMMEDIATE"),
        commit_(db_, "COMMIT"),
        rollback_(db_, "ROLLBACK"),
        version_(db_, "SELECT coalesce(max(version), -1) FROM events WHERE stream = ?1"),
        insert_(db_, "INSERT INTO events(stream, version, type, data) VALUES (?1, ?2, ?3, ?4)"),
        find_key_(db_, "SELECT fingerprint FROM idempotency WHERE key = ?1"),
        put_key_(db_,
                 "INSERT INTO idempotency(key, fingerprint, position) "
                 "VALUES (?1, ?2, last_insert_rowid())") {}
  ~SqliteWriter() override { sqlite3_close_v2(db_); }

  void Append(const std::string& stream, int64_t expected,
              absl::Span<const std::string> payloads) override {
    std::lock_guard<std::mutex> lock(*write_mu_);
    Step(begin_);
    CheckVersion(stream, expected);
    for (size_t i = 0; i < payloads.size(); ++i) Insert(stream, expected + 1 + i, payloads[i]);
    Step(commit_);
  }

  bool AppendIdempotent(const std::string& stream, int64_t expected, const std::string& payload,
                        const std::string& key) override {
    std::lock_guard<std::mutex> lock(*write_mu_);
    Step(begin_);
    const XXH128_hash_t fp = Fingerprint(stream, expected, payload);
    sqlite3_bind_text(find_key_.s, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
    const int rc = sqlite3_step(find_key_.s);
    Check(db_, rc, "find key");
    if (rc == SQLITE_ROW) {
      if (sqlite3_column_bytes(find_key_.s, 0) != sizeof(fp) ||
          std::memcmp(sqlite3_column_blob(find_key_.s, 0), &fp, sizeof(fp)) != 0) {
        Die("sqlite: idempotency key reused with another request");
      }
      sqlite3_reset(find_key_.s);
      Step(commit_);  // wrote nothing: SQLite does not sync it
      return true;
    }
    sqlite3_reset(find_key_.s);
    CheckVersion(stream, expected);
    Insert(stream, expected + 1, payload);
    sqlite3_bind_text(put_key_.s, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
    sqlite3_bind_blob(put_key_.s, 2, &fp, sizeof(fp), SQLITE_STATIC);
    Step(put_key_);
    Step(commit_);
    return false;
  }

 private:
  static XXH128_hash_t Fingerprint(const std::string& stream, int64_t expected,
                                   const std::string& payload) {
    XXH3_state_t* st = XXH3_createState();
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, stream.data(), stream.size());
    XXH3_128bits_update(st, &expected, sizeof(expected));
    XXH3_128bits_update(st, payload.data(), payload.size());
    const XXH128_hash_t fp = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    return fp;
  }

  void Step(Stmt& st) {
    Check(db_, sqlite3_step(st.s), sqlite3_sql(st.s));
    sqlite3_reset(st.s);
  }

  void CheckVersion(const std::string& stream, int64_t expected) {
    sqlite3_bind_text(version_.s, 1, stream.data(), static_cast<int>(stream.size()), SQLITE_STATIC);
    Check(db_, sqlite3_step(version_.s), "max(version)");
    const int64_t actual = sqlite3_column_int64(version_.s, 0);
    sqlite3_reset(version_.s);
    if (actual != expected) {
      Step(rollback_);
      Die(absl::StrFormat("sqlite: %s expected version %d, actual %d", stream, expected, actual));
    }
  }

  void Insert(const std::string& stream, int64_t version, const std::string& payload) {
    sqlite3_bind_text(insert_.s, 1, stream.data(), static_cast<int>(stream.size()), SQLITE_STATIC);
    sqlite3_bind_int64(insert_.s, 2, version);
    sqlite3_bind_text(insert_.s, 3, kEventType, -1, SQLITE_STATIC);
    sqlite3_bind_blob(insert_.s, 4, payload.data(), static_cast<int>(payload.size()),
                      SQLITE_STATIC);
    Step(insert_);
  }

  sqlite3* const db_;
  std::mutex* const write_mu_;
  Stmt begin_, commit_, rollback_, version_, insert_, find_key_, put_key_;
};

class SqlitePeer : public Peer {
 public:
  explicit SqlitePeer(std::string dir) : dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
  }
  ~SqlitePeer() override { Close(); }
  std::string name() const override { return "sqlite"; }

  void OpenFresh(const std::string& tag) override {
    Close();
    path_ = absl::StrFormat("%s/%s-%d.db", dir_, tag, ++count_);
    db_ = OpenDb(path_, true);
  }
  std::unique_ptr<PeerWriter> NewWriter() override {
    return std::make_unique<SqliteWriter>(path_, &write_mu_);
  }

  void LoadReadLog(uint64_t events, ReadLayout layout) override {
    Close();
    path_ = absl::StrFormat("%s/read-%d.db", dir_, ++count_);
    db_ = OpenDb(path_, false);
    {
      Stmt insert(db_, "INSERT INTO events(stream, version, type, data) VALUES (?1, ?2, ?3, ?4)");
      std::vector<int64_t> next(kSmallStreams + 1, 0);
      const std::string payload = Payload(0);
      std::vector<std::string> streams;
      for (int slot = 0; slot <= kSmallStreams; ++slot) streams.push_back(StreamOfSlot(slot));
      // One transaction per 100 * kReadBatch events.
      Exec(db_, "BEGIN");
      for (uint64_t i = 0; i < events / kReadBatch * kReadBatch; ++i) {
        const int slot = StreamSlotOfEvent(i, layout);
        const std::string& stream = streams[slot];
        sqlite3_bind_text(insert.s, 1, stream.data(), static_cast<int>(stream.size()),
                          SQLITE_STATIC);
        sqlite3_bind_int64(insert.s, 2, next[slot]++);
        sqlite3_bind_text(insert.s, 3, kEventType, -1, SQLITE_STATIC);
        sqlite3_bind_blob(insert.s, 4, payload.data(), static_cast<int>(payload.size()),
                          SQLITE_STATIC);
        Check(db_, sqlite3_step(insert.s), "load insert");
        sqlite3_reset(insert.s);
        if (i % (100 * kReadBatch) == 100 * kReadBatch - 1) {
          Exec(db_, "COMMIT");
          Exec(db_, "BEGIN");
        }
      }
      Exec(db_, "COMMIT");
    }
    Exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)");
    Exec(db_, "PRAGMA synchronous=FULL");
    events_ = events;
  }

  uint64_t ReadAll(uint64_t* sum) override {
    Stmt st(db_, "SELECT position, stream, version, type, data FROM events ORDER BY position");
    return Drain(st, sum);
  }
  uint64_t ReadStream(const std::string& stream, uint64_t* sum) override {
    return ReadSlice(stream, 0, -1, sum);
  }
  uint64_t ReadSlice(const std::string& stream, int64_t from, int count, uint64_t* sum) override {
    if (slice_ == nullptr) {
      slice_ =
          std::make_unique<Stmt>(db_,
                                 "SELECT position, stream, version, type, data FROM events "
                                 "WHERE stream = ?1 AND version >= ?2 ORDER BY version LIMIT ?3");
    }
    sqlite3_bind_text(slice_->s, 1, stream.data(), static_cast<int>(stream.size()), SQLITE_STATIC);
    sqlite3_bind_int64(slice_->s, 2, from);
    sqlite3_bind_int64(slice_->s, 3, count);
    return Drain(*slice_, sum);
  }
  double BytesPerEvent() override {
    Exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)");
    std::error_code ec;
    return static_cast<double>(std::filesystem::file_size(path_, ec)) / events_;
  }
  void Close() override {
    slice_.reset();
    if (db_ != nullptr) sqlite3_close_v2(db_);
    db_ = nullptr;
  }

 private:
  uint64_t Drain(Stmt& st, uint64_t* sum) {
    uint64_t n = 0;
    int rc;
    while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
      const uint64_t position = sqlite3_column_int64(st.s, 0);
      const unsigned char* stream = sqlite3_column_text(st.s, 1);
      const int64_t version = sqlite3_column_int64(st.s, 2);
      const unsigned char* type = sqlite3_column_text(st.s, 3);
      const void* data = sqlite3_column_blob(st.s, 4);
      const int size = sqlite3_column_bytes(st.s, 4);
      *sum += Touch(position, absl::string_view(static_cast<const char*>(data), size)) + stream[0] +
              type[0] + version;
      ++n;
    }
    Check(db_, rc, "read");
    sqlite3_reset(st.s);
    return n;
  }

  const std::string dir_;
  int count_ = 0;
  uint64_t events_ = 0;
  std::string path_;
  sqlite3* db_ = nullptr;
  std::mutex write_mu_;
  std::unique_ptr<Stmt> slice_;
};

}  // namespace

std::unique_ptr<Peer> NewSqlitePeer(const std::string& dir) {
  return std::make_unique<SqlitePeer>(dir);
}

}  // namespace rill::bench
