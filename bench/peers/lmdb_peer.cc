// The raw LMDB ceiling (bench_util.h's RawLog): the puts a rill append makes
// (the payload under its position with MDB_APPEND, a (stream id, version)
// index entry, the stream's record), no envelope, no checksum, no checks.
// Durable: flags 0, so each commit fsyncs the data pages, then the meta page.
// One write transaction per append; concurrent writers queue on LMDB's
// writer lock. With an idempotency key the transaction also looks the key up
// in an `idempotency` database and records it (16-byte XXH3-128 fingerprint
// + position), as rill does.
#include <xxhash.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "../bench_util.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "peer.h"

namespace rill::bench {
namespace {

int64_t NowUs() { return absl::ToUnixMicros(absl::Now()); }

struct Shared {
  std::unique_ptr<RawLog> log;
  MDB_dbi idempotency = 0;
  uint64_t next_position = 1;  // touched only inside a write txn
};

class LmdbWriter : public PeerWriter {
 public:
  explicit LmdbWriter(Shared* shared) : s_(shared) {}

  void Append(const std::string& stream, int64_t /*expected*/,
              absl::Span<const std::string> payloads) override {
    MDB_txn* txn;
    CheckMdb(mdb_txn_begin(s_->log->env(), nullptr, 0, &txn), "mdb_txn_begin");
    RawLog::StreamRecord& rec = recs_[stream];
    // All payloads of one batch are the same size; RawLog writes `count`
    // copies of one payload, which is what the other peers' bytes amount to.
    s_->log->AppendIn(txn, stream, &rec, &s_->next_position, payloads[0],
                      static_cast<int>(payloads.size()), NowUs());
    CheckMdb(mdb_txn_commit(txn), "mdb_txn_commit");
  }

  bool AppendIdempotent(const std::string& stream, int64_t /*expected*/, const std::string& payload,
                        const std::string& key) override {
    MDB_txn* txn;
    CheckMdb(mdb_txn_begin(s_->log->env(), nullptr, 0, &txn), "mdb_txn_begin");
    MDB_val k{key.size(), const_cast<char*>(key.data())}, v;
    const int rc = mdb_get(txn, s_->idempotency, &k, &v);
    if (rc == MDB_SUCCESS) {
      mdb_txn_abort(txn);  // a retry: nothing to write
      return true;
    }
    if (rc != MDB_NOTFOUND) CheckMdb(rc, "mdb_get idempotency");
    XXH3_state_t* st = XXH3_createState();
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, stream.data(), stream.size());
    XXH3_128bits_update(st, payload.data(), payload.size());
    const XXH128_hash_t fp = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    unsigned char value[24];
    std::memcpy(value, &fp, 16);
    PutBE64(s_->next_position, value + 16);
    MDB_val iv{sizeof(value), value};
    CheckMdb(mdb_put(txn, s_->idempotency, &k, &iv, 0), "mdb_put idempotency");
    RawLog::StreamRecord& rec = recs_[stream];
    s_->log->AppendIn(txn, stream, &rec, &s_->next_position, payload, 1, NowUs());
    CheckMdb(mdb_txn_commit(txn), "mdb_txn_commit");
    return false;
  }

 private:
  Shared* const s_;
  std::map<std::string, RawLog::StreamRecord> recs_;
};

class LmdbPeer : public Peer {
 public:
  explicit LmdbPeer(std::string dir) : dir_(std::move(dir)) {}
  std::string name() const override { return "lmdb"; }

  void OpenFresh(const std::string& tag) override {
    Open(absl::StrFormat("%s/%s-%d", dir_, tag, ++count_), 0);
  }
  std::unique_ptr<PeerWriter> NewWriter() override {
    return std::make_unique<LmdbWriter>(&shared_);
  }

  void LoadReadLog(uint64_t events, ReadLayout layout) override {
    Open(absl::StrFormat("%s/read-%d", dir_, ++count_), MDB_NOSYNC);
    std::vector<RawLog::StreamRecord> recs(kSmallStreams + 1, RawLog::StreamRecord{});
    const std::string payload = Payload(0);
    // One transaction per kReadBatch events, one AppendIn per run of
    // consecutive events of a stream (kRuns: one of 100; kInterleaved: 100 of
    // one).
    for (uint64_t b = 0; b < events / kReadBatch; ++b) {
      MDB_txn* txn;
      CheckMdb(mdb_txn_begin(shared_.log->env(), nullptr, 0, &txn), "mdb_txn_begin");
      for (uint64_t i = b * kReadBatch, end = i + kReadBatch; i < end;) {
        const int slot = StreamSlotOfEvent(i, layout);
        int run = 1;
        while (i + run < end && StreamSlotOfEvent(i + run, layout) == slot) ++run;
        shared_.log->AppendIn(txn, StreamOfSlot(slot), &recs[slot], &shared_.next_position, payload,
                              run, NowUs());
        i += run;
      }
      CheckMdb(mdb_txn_commit(txn), "mdb_txn_commit");
    }
    CheckMdb(mdb_env_sync(shared_.log->env(), 1), "mdb_env_sync");
    ids_.clear();
    for (int slot = 0; slot <= kSmallStreams; ++slot) {
      ids_[StreamOfSlot(slot)] = recs[slot].first_position;
    }
    events_ = events;
  }

  uint64_t ReadAll(uint64_t* sum) override { return Scan(false, sum); }
  uint64_t ReadAllHashed(uint64_t* sum) override { return Scan(true, sum); }
  uint64_t Scan(bool hash, uint64_t* sum) {
    uint64_t n = 0;
    MDB_txn* txn;
    MDB_cursor* cur;
    CheckMdb(mdb_txn_begin(shared_.log->env(), nullptr, MDB_RDONLY, &txn), "begin");
    CheckMdb(mdb_cursor_open(txn, shared_.log->events(), &cur), "cursor_open");
    MDB_val k, v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      *sum += Touch(GetBE64(k.mv_data),
                    absl::string_view(static_cast<const char*>(v.mv_data), v.mv_size));
      if (hash) *sum += XXH3_64bits(v.mv_data, v.mv_size);
      ++n;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return n;
  }
  uint64_t ReadStream(const std::string& stream, uint64_t* sum) override {
    return ReadSlice(stream, 0, -1, sum);
  }
  uint64_t ReadSlice(const std::string& stream, int64_t from, int count, uint64_t* sum) override {
    const uint64_t id = ids_.at(stream);
    uint64_t n = 0;
    MDB_txn* txn;
    MDB_cursor* cur;
    CheckMdb(mdb_txn_begin(shared_.log->env(), nullptr, MDB_RDONLY, &txn), "begin");
    CheckMdb(mdb_cursor_open(txn, shared_.log->index(), &cur), "cursor_open");
    unsigned char start[16];
    PutBE64(id, start);
    PutBE64(static_cast<uint64_t>(from), start + 8);
    MDB_val k{16, start}, v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == MDB_SUCCESS && k.mv_size == 16 && GetBE64(k.mv_data) == id &&
         (count < 0 || n < static_cast<uint64_t>(count));
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      MDB_val pk{8, v.mv_data}, pv;
      CheckMdb(mdb_get(txn, shared_.log->events(), &pk, &pv), "mdb_get events");
      *sum += Touch(GetBE64(v.mv_data),
                    absl::string_view(static_cast<const char*>(pv.mv_data), pv.mv_size));
      ++n;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return n;
  }
  double BytesPerEvent() override {
    MDB_envinfo info;
    MDB_stat stat;
    CheckMdb(mdb_env_info(shared_.log->env(), &info), "mdb_env_info");
    CheckMdb(mdb_env_stat(shared_.log->env(), &stat), "mdb_env_stat");
    return static_cast<double>(info.me_last_pgno + 1) * stat.ms_psize / events_;
  }
  void Close() override { shared_.log.reset(); }

 private:
  void Open(const std::string& dir, unsigned flags) {
    shared_.log.reset();
    shared_.log = std::make_unique<RawLog>(dir, flags);
    shared_.next_position = 1;
    MDB_txn* txn;
    CheckMdb(mdb_txn_begin(shared_.log->env(), nullptr, 0, &txn), "mdb_txn_begin");
    CheckMdb(mdb_dbi_open(txn, "idempotency", MDB_CREATE, &shared_.idempotency),
             "open idempotency");
    CheckMdb(mdb_txn_commit(txn), "mdb_txn_commit");
  }

  const std::string dir_;
  int count_ = 0;
  uint64_t events_ = 0;
  Shared shared_;
  std::map<std::string, uint64_t> ids_;
};

}  // namespace

std::unique_ptr<Peer> NewLmdbPeer(const std::string& dir) {
  return std::make_unique<LmdbPeer>(dir);
}

}  // namespace rill::bench
