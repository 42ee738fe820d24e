// Helpers shared by the benchmark suites: scratch directories, the payload
// every benchmark writes, big-endian keys, latency percentiles, and the raw
// LMDB environment that serves as the ceiling rill is compared against.
//
// The raw LMDB side mirrors the writes a rill append makes (see
// docs/benchmarks.md and design.md "Storage"), minus the envelope and the
// checks:
//   events        8-byte BE position            -> payload   (MDB_APPEND)
//   stream_index  8-byte BE stream id + BE ver  -> 8-byte BE position
//   streams       stream name                   -> 32-byte record
#ifndef RILL_BENCH_BENCH_UTIL_H_
#define RILL_BENCH_BENCH_UTIL_H_

#include <benchmark/benchmark.h>
#include <lmdb.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace rill::bench {

// RILL_BENCH_QUICK=1 (bench/run --quick) shortens every suite: smaller logs,
// shorter minimum times. The figures are noisier but have the same shape.
inline bool Quick() {
  const char* q = std::getenv("RILL_BENCH_QUICK");
  return q != nullptr && q[0] != '\0' && q[0] != '0';
}

// Minimum time of an fsync-bound benchmark, in seconds.
inline double SyncBoundMinTime() { return Quick() ? 0.8 : 1.5; }

// How long `b` runs: at least `min_time` seconds, or exactly
// $RILL_BENCH_ITERATIONS iterations when that is set (for profiling, so that
// perf sample counts of two runs compare per iteration).
inline benchmark::internal::Benchmark* RunLength(benchmark::internal::Benchmark* b,
                                                 double min_time) {
  const char* it = std::getenv("RILL_BENCH_ITERATIONS");
  if (it != nullptr && std::atoll(it) > 0) return b->Iterations(std::atoll(it));
  return b->MinTime(min_time);
}

[[noreturn]] inline void Die(const std::string& what) {
  std::fprintf(stderr, "bench: fatal: %s\n", what.c_str());
  std::abort();
}

inline void CheckMdb(int rc, const char* what) {
  if (rc != MDB_SUCCESS) Die(absl::StrFormat("%s: %s", what, mdb_strerror(rc)));
}

// A fresh directory under $RILL_BENCH_DIR (default /tmp), removed with its
// contents when destroyed. Benchmarks keep their stores there so that the
// syncs hit the disk being measured.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag) {
    const char* base = std::getenv("RILL_BENCH_DIR");
    std::string tmpl =
        absl::StrFormat("%s/rill-bench-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) == nullptr) Die("mkdtemp " + tmpl);
    path_ = buf.data();
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The payload of every benchmark event: 256 bytes of JSON shaped like an
// order line, the same bytes for rill and raw LMDB.
inline constexpr size_t kPayloadBytes = 256;
inline std::string Payload(uint64_t n) {
  std::string p =
      absl::StrFormat(R"({"order_id":"o-%08d","customer_id":"c-%05d","currency":"EUR",)"
                      R"("lines":[{"sku":"SKU-%04d","qty":%d,"price_cents":%d}],"note":")",
                      n % 100000000, n % 100000, n % 10000, 1 + n % 7, 199 + n % 9000);
  const std::string tail = "\"}";
  while (p.size() + tail.size() < kPayloadBytes) p.push_back('x');
  p += tail;
  p.resize(kPayloadBytes);
  return p;
}

inline void PutBE64(uint64_t v, unsigned char* out) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<unsigned char>(v & 0xff);
    v >>= 8;
  }
}
inline uint64_t GetBE64(const void* p) {
  const unsigned char* b = static_cast<const unsigned char*>(p);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | b[i];
  return v;
}

// Latency percentile (q in [0, 1]) of `samples` in microseconds; sorts them.
inline double PercentileUs(std::vector<double>& samples_ns, double q) {
  if (samples_ns.empty()) return 0;
  std::sort(samples_ns.begin(), samples_ns.end());
  size_t i = static_cast<size_t>(q * (samples_ns.size() - 1) + 0.5);
  return samples_ns[std::min(i, samples_ns.size() - 1)] / 1000.0;
}

// The raw LMDB ceiling: one environment (a directory) with the three named
// databases of rill's log, written the way rill writes them.
class RawLog {
 public:
  // The `streams` value: what rill's StreamRecord holds, packed.
  struct StreamRecord {
    uint64_t first_position;  // doubles as the stream id, as in rill
    uint64_t last_position;
    int64_t last_version;
    int64_t last_recorded_us;
  };
  static_assert(sizeof(StreamRecord) == 32);

  // Durable: flags 0 (fsync of data, then meta page, on each commit).
  // Setup of read fixtures passes MDB_NOSYNC.
  RawLog(const std::string& dir, unsigned flags, size_t map_size = size_t{16} << 30) {
    std::filesystem::create_directories(dir);
    CheckMdb(mdb_env_create(&env_), "mdb_env_create");
    CheckMdb(mdb_env_set_maxdbs(env_, 8), "mdb_env_set_maxdbs");
    CheckMdb(mdb_env_set_maxreaders(env_, 256), "mdb_env_set_maxreaders");
    CheckMdb(mdb_env_set_mapsize(env_, map_size), "mdb_env_set_mapsize");
    CheckMdb(mdb_env_open(env_, dir.c_str(), flags, 0644), "mdb_env_open");
    MDB_txn* txn;
    CheckMdb(mdb_txn_begin(env_, nullptr, 0, &txn), "mdb_txn_begin");
    CheckMdb(mdb_dbi_open(txn, "events", MDB_CREATE, &events_), "open events");
    CheckMdb(mdb_dbi_open(txn, "stream_index", MDB_CREATE, &index_), "open stream_index");
    CheckMdb(mdb_dbi_open(txn, "streams", MDB_CREATE, &streams_), "open streams");
    CheckMdb(mdb_txn_commit(txn), "mdb_txn_commit");
  }
  ~RawLog() { mdb_env_close(env_); }
  RawLog(const RawLog&) = delete;
  RawLog& operator=(const RawLog&) = delete;

  MDB_env* env() const { return env_; }
  MDB_dbi events() const { return events_; }
  MDB_dbi index() const { return index_; }
  MDB_dbi streams() const { return streams_; }

  // The writes of one append of `count` copies of `payload` to a stream,
  // inside `txn` (which the caller begins and commits). `rec` is the
  // stream's record, updated; `next_position` the log's next position,
  // advanced. first_position == 0 means a new stream.
  void AppendIn(MDB_txn* txn, absl::string_view stream, StreamRecord* rec, uint64_t* next_position,
                absl::string_view payload, int count, int64_t now_us) {
    unsigned char pos_key[8];
    unsigned char idx_key[16];
    for (int i = 0; i < count; ++i) {
      const uint64_t pos = (*next_position)++;
      if (rec->first_position == 0) {
        rec->first_position = pos;
        rec->last_version = -1;
      }
      PutBE64(pos, pos_key);
      MDB_val k{8, pos_key};
      MDB_val v{payload.size(), const_cast<char*>(payload.data())};
      CheckMdb(mdb_put(txn, events_, &k, &v, MDB_APPEND), "put events");
      const int64_t version = ++rec->last_version;
      PutBE64(rec->first_position, idx_key);
      PutBE64(static_cast<uint64_t>(version), idx_key + 8);
      MDB_val ik{16, idx_key};
      MDB_val iv{8, pos_key};
      CheckMdb(mdb_put(txn, index_, &ik, &iv, 0), "put stream_index");
      rec->last_position = pos;
    }
    rec->last_recorded_us = now_us;
    MDB_val sk{stream.size(), const_cast<char*>(stream.data())};
    MDB_val sv{sizeof(StreamRecord), rec};
    CheckMdb(mdb_put(txn, streams_, &sk, &sv, 0), "put streams");
  }

 private:
  MDB_env* env_ = nullptr;
  MDB_dbi events_ = 0;
  MDB_dbi index_ = 0;
  MDB_dbi streams_ = 0;
};

// The last committed transaction id of the LMDB environment at `path` (a
// directory, or a data file opened with MDB_NOSUBDIR), opened read-only. Commits between two calls
// = the difference. Only call while no other MDB_env in this process has `dir` open (LMDB forbids
// opening one env twice in a process).
inline uint64_t LastTxnId(const std::string& path) {
  MDB_env* env;
  CheckMdb(mdb_env_create(&env), "mdb_env_create");
  CheckMdb(mdb_env_set_maxdbs(env, 16), "mdb_env_set_maxdbs");
  const unsigned flags = MDB_RDONLY | (std::filesystem::is_regular_file(path) ? MDB_NOSUBDIR : 0u);
  CheckMdb(mdb_env_open(env, path.c_str(), flags, 0644), "mdb_env_open (read-only)");
  MDB_envinfo info;
  CheckMdb(mdb_env_info(env, &info), "mdb_env_info");
  mdb_env_close(env);
  return static_cast<uint64_t>(info.me_last_txnid);
}

}  // namespace rill::bench

#endif  // RILL_BENCH_BENCH_UTIL_H_
