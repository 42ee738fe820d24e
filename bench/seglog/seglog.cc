// The segment-log prototype (seglog.h; docs/segment-log.md).
//
// Record (little-endian, padded to 8 bytes; `length` excludes the padding):
//
//    0 u32 length          72 + the variable part
//    4 u32 checksum        low 32 bits of XXH3-64 over bytes [8, length)
//    8 u64 position
//   16 i64 stream version
//   24 i64 recorded_us     commit time, microseconds since the epoch
//   32 u32 request_events  events of this record's request on its first
//                          record, 0 on the others (atomicity at recovery)
//   36 u32 schema_version
//   40 u32 payload_len
//   44 u16 stream_len
//   46 u16 type_len
//   48 u16 key_len         idempotency key (first record only; then a
//                          16-byte request fingerprint follows the key)
//   50 u8  content_type
//   51 u8  reserved (0)
//   52 u32 metadata_len
//   56 16  event id
//   72 stream, type, [key, fingerprint], payload, metadata
//
// Index (LMDB, MDB_NOSYNC), databases:
//   streams  stream name -> u64 id, i64 last version
//   events   u64 id (big-endian), u64 version (big-endian) -> u64 offset
//   marks    u64 position (big-endian), every kMarkEvery-th -> u64 offset
//   keys     idempotency key -> 16-byte fingerprint, u64 first position,
//            i64 first version, u32 events
//   meta     "end" -> u64 last position, u64 end offset, u64 next stream id
// Offsets are global: segment number * segment_bytes + offset in segment.
#include "seglog.h"

#include <fcntl.h>
#include <lmdb.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "fingerprint.h"
#include "rill/limits.h"
#include "validate.h"
#include "writer.h"

namespace rill::seglog {
namespace {

namespace fs = std::filesystem;

constexpr size_t kHeader = 72;
constexpr size_t kFingerprint = 16;
constexpr uint64_t kMarkEvery = 64;
constexpr size_t kZeroChunk = size_t{1} << 20;

uint64_t Pad8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

template <typename T>
T Load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
void Store(char* p, T v) {
  std::memcpy(p, &v, sizeof v);
}
void PutBe64(char* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}
uint64_t GetBe64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

absl::Status Errno(absl::string_view what, const std::string& path) {
  const int e = errno;
  const std::string msg = absl::StrFormat("%s %s: %s", what, path, std::strerror(e));
  return e == ENOSPC ? absl::ResourceExhaustedError(msg) : absl::InternalError(msg);
}
absl::Status Mdb(int rc, absl::string_view what) {
  if (rc == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("lmdb ", what, ": ", mdb_strerror(rc)));
}

absl::Status SyncPath(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("open", path);
  const int rc = fsync(fd);
  close(fd);
  return rc == 0 ? absl::OkStatus() : Errno("fsync", path);
}

// Writes `data` to `path` durably (write a temporary, fsync, rename, fsync
// the directory).
absl::Status WriteFileDurably(const std::string& dir, const std::string& name,
                              const std::string& data) {
  const std::string tmp = dir + "/" + name + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create", tmp);
  const bool ok = write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()) &&
                  fdatasync(fd) == 0;
  const int e = errno;
  close(fd);
  errno = e;
  if (!ok) return Errno("write", tmp);
  if (rename(tmp.c_str(), (dir + "/" + name).c_str()) != 0) return Errno("rename", tmp);
  return SyncPath(dir);
}

std::string ReadBootId(const Options& o) {
  if (!o.boot_id.empty()) return o.boot_id;
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

std::string SegmentName(uint64_t n) { return absl::StrFormat("seg-%06d", n); }

MDB_val Val(const void* p, size_t n) { return MDB_val{n, const_cast<void*>(p)}; }
MDB_val Val(absl::string_view s) { return Val(s.data(), s.size()); }

// A decoded record header (views into the mapping).
struct Rec {
  uint64_t length = 0;  // padded
  uint64_t position = 0;
  int64_t version = 0;
  int64_t recorded_us = 0;
  uint32_t request_events = 0;
  absl::string_view stream, type, key, fingerprint, payload;
};

// Decodes the record at `p` with at most `room` bytes after it; false when
// it is not a whole, intact record.
bool Decode(const char* p, uint64_t room, bool verify, Rec* r) {
  if (room < kHeader) return false;
  const uint32_t length = Load<uint32_t>(p);
  if (length < kHeader || Pad8(length) > room) return false;
  const uint32_t payload_len = Load<uint32_t>(p + 40);
  const uint16_t stream_len = Load<uint16_t>(p + 44);
  const uint16_t type_len = Load<uint16_t>(p + 46);
  const uint16_t key_len = Load<uint16_t>(p + 48);
  const uint32_t metadata_len = Load<uint32_t>(p + 52);
  const uint64_t fp_len = key_len > 0 ? kFingerprint : 0;
  if (uint64_t{kHeader} + stream_len + type_len + key_len + fp_len + payload_len + metadata_len !=
      length) {
    return false;
  }
  if (verify && static_cast<uint32_t>(XXH3_64bits(p + 8, length - 8)) != Load<uint32_t>(p + 4)) {
    return false;
  }
  r->length = Pad8(length);
  r->position = Load<uint64_t>(p + 8);
  r->version = Load<int64_t>(p + 16);
  r->recorded_us = Load<int64_t>(p + 24);
  r->request_events = Load<uint32_t>(p + 32);
  const char* v = p + kHeader;
  r->stream = absl::string_view(v, stream_len);
  v += stream_len;
  r->type = absl::string_view(v, type_len);
  v += type_len;
  r->key = absl::string_view(v, key_len);
  v += key_len;
  r->fingerprint = absl::string_view(v, fp_len);
  v += fp_len;
  r->payload = absl::string_view(v, payload_len);
  return true;
}

std::string EncodeMetadata(const Metadata& m) {
  if (m.empty()) return {};
  std::string out;
  auto put = [&](absl::string_view s) {
    const uint32_t n = static_cast<uint32_t>(s.size());
    out.append(reinterpret_cast<const char*>(&n), 4);
    out.append(s.data(), s.size());
  };
  put(m.correlation_id);
  put(m.causation_id);
  for (const auto& [k, v] : m.headers) {
    put(k);
    put(v);
  }
  return out;
}

// Appends one encoded record to `buf`.
void Encode(std::string* buf, uint64_t position, int64_t version, int64_t recorded_us,
            uint32_t request_events, absl::string_view stream, const EventData& e,
            absl::string_view key, absl::string_view fingerprint, const std::string& metadata) {
  const uint64_t fp_len = key.empty() ? 0 : kFingerprint;
  const uint64_t length = kHeader + stream.size() + e.type.size() + key.size() + fp_len +
                          e.payload.size() + metadata.size();
  const size_t at = buf->size();
  buf->resize(at + Pad8(length), '\0');
  char* p = buf->data() + at;
  Store<uint32_t>(p, static_cast<uint32_t>(length));
  Store<uint64_t>(p + 8, position);
  Store<int64_t>(p + 16, version);
  Store<int64_t>(p + 24, recorded_us);
  Store<uint32_t>(p + 32, request_events);
  Store<uint32_t>(p + 36, e.schema_version);
  Store<uint32_t>(p + 40, static_cast<uint32_t>(e.payload.size()));
  Store<uint16_t>(p + 44, static_cast<uint16_t>(stream.size()));
  Store<uint16_t>(p + 46, static_cast<uint16_t>(e.type.size()));
  Store<uint16_t>(p + 48, static_cast<uint16_t>(key.size()));
  p[50] = static_cast<char>(e.content_type);
  Store<uint32_t>(p + 52, static_cast<uint32_t>(metadata.size()));
  const EventId id = e.id.IsNil() ? EventId::Random() : e.id;
  std::memcpy(p + 56, id.bytes().data(), 16);
  char* v = p + kHeader;
  for (absl::string_view part :
       {stream, absl::string_view(e.type), key, key.empty() ? absl::string_view() : fingerprint,
        absl::string_view(e.payload), absl::string_view(metadata)}) {
    if (part.empty()) continue;  // (memcpy from a null view is undefined)
    std::memcpy(v, part.data(), part.size());
    v += part.size();
  }
  Store<uint32_t>(p + 4, static_cast<uint32_t>(XXH3_64bits(p + 8, length - 8)));
}

// One segment file, mapped read-only for readers and recovery.
struct Segment {
  uint64_t number = 0;
  int fd = -1;
  const char* map = nullptr;
  uint64_t size = 0;  // of the mapping (segment_bytes)
  ~Segment() {
    if (map != nullptr) munmap(const_cast<char*>(map), size);
    if (fd >= 0) close(fd);
  }
};

struct Request {
  absl::string_view stream;
  ExpectedVersion expected = ExpectedVersion::Any();
  absl::Span<const EventData> events;
  absl::string_view key;
  std::string fingerprint;
  uint64_t bytes = 0;  // encoded size of its records
  absl::StatusOr<AppendResult> result;
  bool done = false;
};

// The index state of the end of the log.
struct End {
  uint64_t last_position = 0;
  uint64_t offset = 0;  // global
  uint64_t next_stream_id = 1;
};

class LogImpl : public Log {
 public:
  explicit LogImpl(Options o) : o_(std::move(o)) {}
  ~LogImpl() override {
    (void)Close();
    StopPrep();
    if (env_ != nullptr) mdb_env_close(env_);
  }

  absl::Status Open();

  absl::StatusOr<AppendResult> Append(absl::string_view stream, ExpectedVersion expected,
                                      absl::Span<const EventData> events,
                                      absl::string_view key) override;
  absl::StatusOr<uint64_t> ReadAll(uint64_t from,
                                   const std::function<bool(const EventRef&)>& fn) override;
  absl::StatusOr<uint64_t> ReadStream(absl::string_view stream, int64_t from, int64_t count,
                                      const std::function<bool(const EventRef&)>& fn) override;
  uint64_t last_position() const override { return last_position_.load(); }
  absl::Status Checkpoint() override { return Mdb(mdb_env_sync(env_, 1), "sync"); }
  absl::Status Close() override;
  const RecoveryInfo& recovery() const override { return recovery_; }
  uint64_t commits() const override { return commits_.load(); }
  uint64_t bytes_used() const override;

 private:
  // Segments.
  std::string SegPath(uint64_t n) const { return o_.dir + "/" + SegmentName(n); }
  absl::Status PrepareSegment(uint64_t n);
  absl::StatusOr<Segment*> MapSegment(uint64_t n);
  Segment* SegmentAt(uint64_t n);
  void StartPrep(uint64_t n);
  void StopPrep();
  absl::Status RollSegment();

  // Recovery.
  absl::Status Recover();
  absl::StatusOr<End> ReadEnd(MDB_txn* txn);
  absl::Status IndexFrom(End end);
  absl::Status CutAfter(uint64_t offset);
  // fdatasyncs segments [first, last] (those that exist).
  absl::Status SyncSegments(uint64_t first, uint64_t last);

  // Writing.
  // Indexes one whole request: its records (all of one stream) at their
  // offsets, its stream's last version, its idempotency key.
  absl::Status IndexRequest(MDB_txn* txn, absl::Span<const std::pair<Rec, uint64_t>> recs,
                            End* end);
  void CommitBatch(std::vector<Request*>& batch);
  absl::Status StageRequest(MDB_txn* txn, Request* r, uint64_t offset, int64_t now_us,
                            std::string* buf);

  const char* RecordAt(uint64_t offset) {
    Segment* s = SegmentAt(offset / o_.segment_bytes);
    return s == nullptr ? nullptr : s->map + offset % o_.segment_bytes;
  }

  const Options o_;
  MDB_env* env_ = nullptr;
  MDB_dbi streams_ = 0, events_ = 0, marks_ = 0, keys_ = 0, meta_ = 0;
  std::string boot_id_;
  RecoveryInfo recovery_;
  bool closed_ = false;
  uint64_t open_seg_ = 0;  // the segment appends went to when Open ended

  absl::Mutex seg_mu_;
  std::deque<std::unique_ptr<Segment>> segments_ ABSL_GUARDED_BY(seg_mu_);  // by number

  // The background preparation of the next segment.
  absl::Mutex prep_mu_;
  std::thread prep_thread_;
  uint64_t prep_target_ ABSL_GUARDED_BY(prep_mu_) = 0;  // prepare up to this number
  uint64_t prepared_ ABSL_GUARDED_BY(prep_mu_) = 0;     // segments ready: [0, prepared_)
  absl::Status prep_status_ ABSL_GUARDED_BY(prep_mu_);
  bool prep_stop_ ABSL_GUARDED_BY(prep_mu_) = false;

  // The writer (leader) state: touched only by the leader.
  End end_;
  std::vector<std::pair<Rec, uint64_t>> staged_;  // one request's records
  uint64_t cur_seg_ = 0;                          // the segment appends go to
  int fd_ = -1;                                   // its descriptor (owned by segments_)
  uint64_t unsynced_index_bytes_ = 0;
  absl::Status failed_;  // a failed sync: the log refuses appends until reopened

  absl::Mutex mu_;
  std::deque<Request*> queue_ ABSL_GUARDED_BY(mu_);
  bool leader_active_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;  // Close began: no new appends

  std::atomic<uint64_t> committed_end_{0};
  std::atomic<uint64_t> last_position_{0};
  std::atomic<uint64_t> commits_{0};
};

// ------------------------------------------------------------ segments ---

absl::Status LogImpl::PrepareSegment(uint64_t n) {
  const std::string path = SegPath(n);
  if (fs::exists(path)) return absl::OkStatus();
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create", tmp);
  bool ok = true;
  if (o_.prealloc == Prealloc::kZeroFill) {
    const std::string zeros(kZeroChunk, '\0');
    for (uint64_t at = 0; ok && at < o_.segment_bytes; at += kZeroChunk) {
      const size_t n_bytes =
          static_cast<size_t>(std::min<uint64_t>(kZeroChunk, o_.segment_bytes - at));
      ok = pwrite(fd, zeros.data(), n_bytes, static_cast<off_t>(at)) ==
           static_cast<ssize_t>(n_bytes);
    }
  } else if (o_.prealloc == Prealloc::kFallocate) {
    ok = posix_fallocate(fd, 0, static_cast<off_t>(o_.segment_bytes)) == 0;
  }
  ok = ok && fsync(fd) == 0;
  const int e = errno;
  close(fd);
  errno = e;
  if (!ok) return Errno("prepare", tmp);
  if (rename(tmp.c_str(), path.c_str()) != 0) return Errno("rename", tmp);
  return SyncPath(o_.dir);
}

absl::StatusOr<Segment*> LogImpl::MapSegment(uint64_t n) {
  {
    absl::MutexLock l(&seg_mu_);
    if (n < segments_.size() && segments_[n] != nullptr) return segments_[n].get();
  }
  auto s = std::make_unique<Segment>();
  s->number = n;
  s->size = o_.segment_bytes;
  const std::string path = SegPath(n);
  s->fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (s->fd < 0) return Errno("open", path);
  void* m = mmap(nullptr, s->size, PROT_READ, MAP_SHARED, s->fd, 0);
  if (m == MAP_FAILED) return Errno("mmap", path);
  s->map = static_cast<const char*>(m);
  absl::MutexLock l(&seg_mu_);
  if (segments_.size() <= n) segments_.resize(n + 1);
  if (segments_[n] == nullptr) segments_[n] = std::move(s);
  return segments_[n].get();
}

Segment* LogImpl::SegmentAt(uint64_t n) {
  absl::MutexLock l(&seg_mu_);
  return n < segments_.size() ? segments_[n].get() : nullptr;
}

void LogImpl::StartPrep(uint64_t n) {
  absl::MutexLock l(&prep_mu_);
  prep_target_ = std::max(prep_target_, n + 1);
  if (prep_thread_.joinable()) return;
  prep_thread_ = std::thread([this] {
    absl::MutexLock l(&prep_mu_);
    while (true) {
      prep_mu_.Await(absl::Condition(
          +[](LogImpl* self) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return self->prep_stop_ || self->prepared_ < self->prep_target_;
          },
          this));
      if (prep_stop_) return;
      const uint64_t n = prepared_;
      prep_mu_.Unlock();
      const absl::Status s = PrepareSegment(n);
      prep_mu_.Lock();
      if (!s.ok()) {
        prep_status_ = s;
        prep_stop_ = true;
        return;
      }
      prepared_ = n + 1;
    }
  });
}

void LogImpl::StopPrep() {
  {
    absl::MutexLock l(&prep_mu_);
    prep_stop_ = true;
  }
  if (prep_thread_.joinable()) prep_thread_.join();
}

// Moves the writer to the next segment (waiting for its preparation) and
// asks for the one after.
absl::Status LogImpl::RollSegment() {
  const uint64_t next = cur_seg_ + 1;
  // A segment that grew by appends is extended (sparse) to its full size, so
  // that readers find zeros after its last record as in the others.
  // Synced: after a power cut a reader must not meet the end of the file
  // inside the mapping (SIGBUS).
  if (o_.prealloc == Prealloc::kNone &&
      (ftruncate(fd_, static_cast<off_t>(o_.segment_bytes)) != 0 || fdatasync(fd_) != 0)) {
    return Errno("extend", SegPath(cur_seg_));
  }
  StartPrep(next + 1);
  {
    absl::MutexLock l(&prep_mu_);
    std::pair<LogImpl*, uint64_t> arg(this, next);
    prep_mu_.Await(absl::Condition(
        +[](std::pair<LogImpl*, uint64_t>* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return a->first->prepared_ > a->second || a->first->prep_stop_;
        },
        &arg));
    if (prepared_ <= next) {
      return prep_status_.ok() ? absl::CancelledError("closing") : prep_status_;
    }
  }
  absl::StatusOr<Segment*> s = MapSegment(next);
  if (!s.ok()) return s.status();
  fd_ = (*s)->fd;
  cur_seg_ = next;
  end_.offset = next * o_.segment_bytes;
  return absl::OkStatus();
}

// ------------------------------------------------------------ recovery ---

absl::StatusOr<End> LogImpl::ReadEnd(MDB_txn* txn) {
  End end;
  MDB_val k = Val("end"), v;
  const int rc = mdb_get(txn, meta_, &k, &v);
  if (rc == MDB_NOTFOUND) return end;
  if (rc != 0) return Mdb(rc, "get end");
  if (v.mv_size != 24) return absl::DataLossError("index: malformed end record");
  const char* p = static_cast<const char*>(v.mv_data);
  end.last_position = Load<uint64_t>(p);
  end.offset = Load<uint64_t>(p + 8);
  end.next_stream_id = Load<uint64_t>(p + 16);
  return end;
}

absl::Status LogImpl::IndexRequest(MDB_txn* txn, absl::Span<const std::pair<Rec, uint64_t>> recs,
                                   End* end) {
  // The stream: one lookup and one put per request.
  const Rec& first = recs.front().first;
  MDB_val k = Val(first.stream), v;
  uint64_t id;
  int rc = mdb_get(txn, streams_, &k, &v);
  if (rc == 0) {
    id = Load<uint64_t>(static_cast<const char*>(v.mv_data));
  } else if (rc == MDB_NOTFOUND) {
    id = end->next_stream_id++;
  } else {
    return Mdb(rc, "get stream");
  }
  char sv[16];
  Store<uint64_t>(sv, id);
  Store<int64_t>(sv + 8, recs.back().first.version);
  v = Val(sv, 16);
  if (absl::Status s = Mdb(mdb_put(txn, streams_, &k, &v, 0), "put stream"); !s.ok()) return s;
  for (const auto& [r, offset] : recs) {
    char ek[16];
    PutBe64(ek, id);
    PutBe64(ek + 8, static_cast<uint64_t>(r.version));
    k = Val(ek, 16);
    v = Val(&offset, 8);
    if (absl::Status s = Mdb(mdb_put(txn, events_, &k, &v, 0), "put event"); !s.ok()) return s;
    if ((r.position - 1) % kMarkEvery == 0) {
      char mk[8];
      PutBe64(mk, r.position);
      k = Val(mk, 8);
      v = Val(&offset, 8);
      if (absl::Status s = Mdb(mdb_put(txn, marks_, &k, &v, MDB_APPEND), "put mark"); !s.ok()) {
        return s;
      }
    }
    end->last_position = r.position;
    end->offset = offset + r.length;
  }
  if (!first.key.empty()) {
    char kv[kFingerprint + 20];
    std::memcpy(kv, first.fingerprint.data(), kFingerprint);
    Store<uint64_t>(kv + 16, first.position);
    Store<int64_t>(kv + 24, first.version);
    Store<uint32_t>(kv + 32, first.request_events);
    k = Val(first.key);
    v = Val(kv, sizeof kv);
    if (absl::Status s = Mdb(mdb_put(txn, keys_, &k, &v, 0), "put key"); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status PutEnd(MDB_txn* txn, MDB_dbi meta, const End& end) {
  char buf[24];
  Store<uint64_t>(buf, end.last_position);
  Store<uint64_t>(buf + 8, end.offset);
  Store<uint64_t>(buf + 16, end.next_stream_id);
  MDB_val k = Val("end"), v = Val(buf, 24);
  return Mdb(mdb_put(txn, meta, &k, &v, 0), "put end");
}

// Indexes every whole request from `end` on (the index's own end, or the
// start of the log for a rebuild), in transactions of up to 64k records,
// then cuts the log after the last one.
absl::Status LogImpl::IndexFrom(End end) {
  MDB_txn* txn = nullptr;
  uint64_t in_txn = 0;
  auto commit = [&]() -> absl::Status {
    if (txn == nullptr) return absl::OkStatus();
    absl::Status s = PutEnd(txn, meta_, end);
    if (s.ok())
      s = Mdb(mdb_txn_commit(txn), "commit");
    else
      mdb_txn_abort(txn);
    txn = nullptr;
    in_txn = 0;
    return s;
  };
  std::vector<std::pair<Rec, uint64_t>> request;
  uint64_t map_no = ~uint64_t{0}, map_size = 0;
  const char* map = nullptr;
  while (true) {
    uint64_t seg = end.offset / o_.segment_bytes;
    uint64_t at = end.offset % o_.segment_bytes;
    // A request starts here, or at the start of the next segment.
    Rec first;
    auto decode_at = [&](uint64_t s_no, uint64_t off, Rec* r) -> bool {
      if (s_no != map_no) {
        map_no = s_no;
        map = nullptr;
        std::error_code ec;
        map_size = fs::file_size(SegPath(s_no), ec);
        if (ec) return false;
        absl::StatusOr<Segment*> s = MapSegment(s_no);
        if (!s.ok()) return false;
        map = (*s)->map;
        map_size = std::min(map_size, o_.segment_bytes);
      }
      return map != nullptr && off < map_size && Decode(map + off, map_size - off, true, r);
    };
    if (!decode_at(seg, at, &first)) {
      if (at == 0 || !decode_at(seg + 1, 0, &first)) break;
      ++seg;
      at = 0;
    }
    if (first.position != end.last_position + 1 || first.request_events == 0) break;
    request.clear();
    request.emplace_back(first, seg * o_.segment_bytes + at);
    uint64_t off = at + first.length;
    bool whole = true;
    for (uint32_t i = 1; i < first.request_events; ++i) {
      Rec r;
      if (!decode_at(seg, off, &r) || r.position != first.position + i || r.request_events != 0 ||
          r.stream != first.stream || r.version != first.version + i) {
        whole = false;
        break;
      }
      request.emplace_back(r, seg * o_.segment_bytes + off);
      off += r.length;
    }
    if (!whole) break;
    if (txn == nullptr) {
      if (absl::Status s = Mdb(mdb_txn_begin(env_, nullptr, 0, &txn), "begin"); !s.ok()) return s;
    }
    if (absl::Status s = IndexRequest(txn, request, &end); !s.ok()) {
      mdb_txn_abort(txn);
      return s;
    }
    recovery_.reindexed += request.size();
    if (++in_txn >= 65536) {
      if (absl::Status s = commit(); !s.ok()) return s;
    }
  }
  if (absl::Status s = commit(); !s.ok()) return s;
  end_ = end;
  return CutAfter(end.offset);
}

// Zeroes what follows `offset` in its segment (only the 4 KiB blocks that
// are not zero), removes the segments after it, and syncs.
absl::Status LogImpl::CutAfter(uint64_t offset) {
  const uint64_t seg = offset / o_.segment_bytes;
  if (absl::Status s = PrepareSegment(seg); !s.ok()) return s;
  absl::StatusOr<Segment*> s = MapSegment(seg);
  if (!s.ok()) return s.status();
  const uint64_t fsize = fs::file_size(SegPath(seg));
  const char* map = (*s)->map;
  uint64_t at = offset % o_.segment_bytes;
  static const char kZeros[4096] = {};
  bool wrote = false;
  if (o_.prealloc == Prealloc::kNone) {
    if (fsize > at) {
      if (ftruncate((*s)->fd, static_cast<off_t>(at)) != 0) return Errno("truncate", SegPath(seg));
      recovery_.cut_bytes += fsize - at;
      wrote = true;
    }
  } else {
    while (at < fsize) {
      const uint64_t block_end = std::min<uint64_t>(fsize, (at / 4096 + 1) * 4096);
      const uint64_t n = block_end - at;
      if (std::memcmp(map + at, kZeros, n) != 0) {
        if (pwrite((*s)->fd, kZeros, n, static_cast<off_t>(at)) != static_cast<ssize_t>(n)) {
          return Errno("zero", SegPath(seg));
        }
        recovery_.cut_bytes += n;
        wrote = true;
      }
      at = block_end;
    }
  }
  if (wrote && fdatasync((*s)->fd) != 0) return Errno("fdatasync", SegPath(seg));
  // Later segments go, the last first (a cut in the middle leaves no gap
  // in the numbering for the next Open to stop at).
  uint64_t last = seg;
  while (fs::exists(SegPath(last + 1))) ++last;
  const bool removed = last > seg;
  for (uint64_t n = last; n > seg; --n) {
    {
      absl::MutexLock l(&seg_mu_);
      if (n < segments_.size()) segments_[n].reset();
    }
    if (unlink(SegPath(n).c_str()) != 0) return Errno("unlink", SegPath(n));
  }
  if (removed) {
    if (absl::Status st = SyncPath(o_.dir); !st.ok()) return st;
  }
  fd_ = (*s)->fd;
  cur_seg_ = seg;
  {
    absl::MutexLock l(&prep_mu_);
    prepared_ = seg + 1;
  }
  StartPrep(seg + 1);
  return absl::OkStatus();
}

absl::Status LogImpl::SyncSegments(uint64_t first, uint64_t last) {
  for (uint64_t n = first; n <= last; ++n) {
    if (!fs::exists(SegPath(n))) continue;
    absl::StatusOr<Segment*> s = MapSegment(n);
    if (!s.ok()) return s.status();
    if (fdatasync((*s)->fd) != 0) return Errno("fdatasync", SegPath(n));
  }
  return absl::OkStatus();
}

absl::Status LogImpl::Open() {
  const auto t0 = std::chrono::steady_clock::now();
  if (o_.segment_bytes < 4096 || o_.segment_bytes % 4096 != 0) {
    return absl::InvalidArgumentError("segment_bytes must be a multiple of 4096");
  }
  std::error_code ec;
  const bool fresh_dir = !fs::exists(o_.dir);
  fs::create_directories(o_.dir + "/index", ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", o_.dir, ": ", ec.message()));
  if (fresh_dir) {
    if (absl::Status s = SyncPath(fs::path(o_.dir).parent_path().string()); !s.ok()) return s;
  }
  if (absl::Status s = SyncPath(o_.dir); !s.ok()) return s;
  boot_id_ = ReadBootId(o_);
  if (boot_id_.empty()) return absl::InternalError("no boot id");

  // Can the index be trusted? "clean": synced at the last close; "dirty"
  // with this boot's id: only a process died, and the page cache holds
  // every index commit; otherwise the OS went down with an unsynced index.
  std::string marker;
  {
    std::ifstream in(o_.dir + "/index.boot");
    std::getline(in, marker);
  }
  const bool clean = marker.size() > 6 && marker.compare(marker.size() - 6, 6, " clean") == 0;
  const bool trusted = clean || marker == boot_id_ + " dirty";
  const bool had_segments = fs::exists(SegPath(0));
  if (!trusted) {
    // Rebuild: an empty index, re-filled from the segments.
    recovery_.rebuilt = had_segments || !marker.empty();
    fs::remove(o_.dir + "/index/data.mdb", ec);
    fs::remove(o_.dir + "/index/lock.mdb", ec);
  }
  // From here on the index is written without syncs: say so first. (A
  // process that dies during the rebuild leaves a consistent prefix of it,
  // which the next Open continues.)
  if (absl::Status s = WriteFileDurably(o_.dir, "index.boot", boot_id_ + " dirty\n"); !s.ok()) {
    return s;
  }

  if (absl::Status s = Mdb(mdb_env_create(&env_), "env"); !s.ok()) return s;
  mdb_env_set_maxdbs(env_, 8);
  mdb_env_set_mapsize(env_, std::max<uint64_t>(o_.initial_map_size, uint64_t{32} << 30));
  if (absl::Status s = Mdb(mdb_env_open(env_, (o_.dir + "/index").c_str(),
                                        MDB_NOSYNC | MDB_NOTLS | MDB_NORDAHEAD, 0644),
                           "open index");
      !s.ok()) {
    return s;
  }
  MDB_txn* txn = nullptr;
  if (absl::Status s = Mdb(mdb_txn_begin(env_, nullptr, 0, &txn), "begin"); !s.ok()) return s;
  int rc = 0;
  rc = rc ? rc : mdb_dbi_open(txn, "streams", MDB_CREATE, &streams_);
  rc = rc ? rc : mdb_dbi_open(txn, "events", MDB_CREATE, &events_);
  rc = rc ? rc : mdb_dbi_open(txn, "marks", MDB_CREATE, &marks_);
  rc = rc ? rc : mdb_dbi_open(txn, "keys", MDB_CREATE, &keys_);
  rc = rc ? rc : mdb_dbi_open(txn, "meta", MDB_CREATE, &meta_);
  absl::StatusOr<End> end = rc ? absl::StatusOr<End>(Mdb(rc, "dbi")) : ReadEnd(txn);
  if (!end.ok()) {
    mdb_txn_abort(txn);
    return end.status();
  }
  if (absl::Status s = Mdb(mdb_txn_commit(txn), "commit"); !s.ok()) return s;
  if (absl::Status s = SyncPath(o_.dir + "/index"); !s.ok()) return s;
  recovery_.indexed_before = end->last_position;
  if (absl::Status s = IndexFrom(*end); !s.ok()) return s;
  // What was just (re-)indexed may be in the page cache only: a process
  // that died in its fdatasync left it there. Sync it before anyone reads
  // it or appends after it (one fdatasync per segment, nothing to write
  // when it is already on disk).
  if (absl::Status s = SyncSegments(end->offset / o_.segment_bytes, cur_seg_); !s.ok()) {
    return s;
  }
  open_seg_ = cur_seg_;
  // The re-indexed tail is in the index but not durable in it; sync it when
  // it was a rebuild (so a second crash does not redo the work).
  if (recovery_.rebuilt) {
    if (absl::Status s = Checkpoint(); !s.ok()) return s;
  }
  recovery_.last_position = end_.last_position;
  recovery_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  committed_end_.store(end_.offset);
  last_position_.store(end_.last_position);
  return absl::OkStatus();
}

absl::Status LogImpl::Close() {
  if (closed_ || env_ == nullptr) return absl::OkStatus();
  closed_ = true;
  {
    // No new appends; the ones queued or in flight finish first.
    absl::MutexLock l(&mu_);
    closing_ = true;
    mu_.Await(absl::Condition(
        +[](LogImpl* self) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return self->queue_.empty() && !self->leader_active_;
        },
        this));
  }
  StopPrep();
  // Segments written since Open (without syncs when Options::sync is off)
  // are durable before the index is called clean.
  if (absl::Status s = SyncSegments(open_seg_, cur_seg_); !s.ok()) return s;
  if (absl::Status s = Checkpoint(); !s.ok()) return s;
  if (!failed_.ok()) return failed_;
  return WriteFileDurably(o_.dir, "index.boot", boot_id_ + " clean\n");
}

uint64_t LogImpl::bytes_used() const {
  std::error_code ec;
  return committed_end_.load() + fs::file_size(o_.dir + "/index/data.mdb", ec);
}

// ------------------------------------------------------------- writing ---

absl::Status LogImpl::StageRequest(MDB_txn* txn, Request* r, uint64_t offset, int64_t now_us,
                                   std::string* buf) {
  MDB_val k, v;
  if (!r->key.empty()) {
    k = Val(r->key);
    const int rc = mdb_get(txn, keys_, &k, &v);
    if (rc == 0) {
      const char* p = static_cast<const char*>(v.mv_data);
      if (std::memcmp(p, r->fingerprint.data(), kFingerprint) != 0) {
        r->result = absl::AlreadyExistsError(
            absl::StrFormat("idempotency key \"%s\" was used for another request", r->key));
        return absl::OkStatus();
      }
      AppendResult res;
      res.stream = std::string(r->stream);
      res.first_position = Load<uint64_t>(p + 16);
      res.first_version = Load<int64_t>(p + 24);
      const uint32_t n = Load<uint32_t>(p + 32);
      res.last_position = res.first_position + n - 1;
      res.last_version = res.first_version + n - 1;
      res.deduplicated = true;
      r->result = res;
      return absl::OkStatus();
    }
    if (rc != MDB_NOTFOUND) return Mdb(rc, "get key");
  }
  k = Val(r->stream);
  int64_t last = -1;
  const int rc = mdb_get(txn, streams_, &k, &v);
  if (rc == 0) {
    last = Load<int64_t>(static_cast<const char*>(v.mv_data) + 8);
  } else if (rc != MDB_NOTFOUND) {
    return Mdb(rc, "get stream");
  }
  if (!internal::ExpectedVersionMatches(r->expected, last)) {
    r->result = internal::VersionMismatch(r->stream, r->expected, last);
    return absl::OkStatus();
  }
  AppendResult res;
  res.stream = std::string(r->stream);
  res.first_position = end_.last_position + 1;
  res.first_version = last + 1;
  const uint32_t n = static_cast<uint32_t>(r->events.size());
  const size_t request_at = buf->size();
  for (uint32_t i = 0; i < n; ++i) {
    const EventData& e = r->events[i];
    Encode(buf, end_.last_position + 1 + i, last + 1 + i, now_us, i == 0 ? n : 0, r->stream, e,
           i == 0 ? r->key : absl::string_view(), r->fingerprint, EncodeMetadata(e.metadata));
  }
  // Decoded after all are encoded: the buffer may have moved meanwhile.
  staged_.clear();
  for (size_t at = request_at; at < buf->size();) {
    Rec rec;
    Decode(buf->data() + at, buf->size() - at, false, &rec);
    staged_.emplace_back(rec, offset + at);
    at += rec.length;
  }
  if (absl::Status s = IndexRequest(txn, staged_, &end_); !s.ok()) return s;
  res.last_position = end_.last_position;
  res.last_version = last + n;
  r->result = res;
  return absl::OkStatus();
}

void LogImpl::CommitBatch(std::vector<Request*>& batch) {
  auto fail_all = [&](const absl::Status& s) {
    for (Request* r : batch) r->result = s;
  };
  if (!failed_.ok()) return fail_all(failed_);
  const End before = end_;
  const uint64_t before_seg = cur_seg_;
  const int before_fd = fd_;
  auto restore = [&] {
    end_ = before;
    cur_seg_ = before_seg;
    fd_ = before_fd;
  };
  MDB_txn* txn = nullptr;
  if (absl::Status s = Mdb(mdb_txn_begin(env_, nullptr, 0, &txn), "begin"); !s.ok()) {
    return fail_all(s);
  }
  const int64_t now_us = absl::ToUnixMicros(absl::Now());
  std::string buf;
  size_t taken = 0;
  for (; taken < batch.size(); ++taken) {
    Request* r = batch[taken];
    const uint64_t room = (cur_seg_ + 1) * o_.segment_bytes - end_.offset;
    if (r->bytes > room) {
      if (!buf.empty()) break;  // the rest goes to the next batch
      if (r->bytes > o_.segment_bytes) {
        r->result = absl::InvalidArgumentError("request larger than a segment");
        continue;
      }
      if (absl::Status s = RollSegment(); !s.ok()) {
        mdb_txn_abort(txn);
        restore();
        return fail_all(s);
      }
    }
    if (absl::Status s = StageRequest(txn, r, end_.offset - buf.size(), now_us, &buf); !s.ok()) {
      mdb_txn_abort(txn);
      restore();
      return fail_all(s);
    }
  }
  batch.resize(taken);
  if (!buf.empty()) {
    const uint64_t at = end_.offset - buf.size();  // end_ moved past the staged records
    const bool ok =
        pwrite(fd_, buf.data(), buf.size(), static_cast<off_t>(at - cur_seg_ * o_.segment_bytes)) ==
            static_cast<ssize_t>(buf.size()) &&
        (!o_.sync || fdatasync(fd_) == 0);
    if (!ok) {
      failed_ = Errno("write segment", SegPath(cur_seg_));
      mdb_txn_abort(txn);
      restore();
      return fail_all(failed_);
    }
    commits_.fetch_add(1);
  }
  absl::Status s = PutEnd(txn, meta_, end_);
  if (s.ok()) {
    s = Mdb(mdb_txn_commit(txn), "commit");
  } else {
    mdb_txn_abort(txn);
  }
  if (!s.ok()) {
    // The records are durable but not indexed: the log is only consistent
    // again after a reopen re-indexes its tail.
    failed_ = s;
    restore();
    return fail_all(s);
  }
  committed_end_.store(end_.offset, std::memory_order_release);
  last_position_.store(end_.last_position, std::memory_order_release);
  unsynced_index_bytes_ += buf.size();
  if (o_.checkpoint_bytes > 0 && unsynced_index_bytes_ >= o_.checkpoint_bytes) {
    unsynced_index_bytes_ = 0;
    (void)Checkpoint();
  }
}

absl::StatusOr<AppendResult> LogImpl::Append(absl::string_view stream, ExpectedVersion expected,
                                             absl::Span<const EventData> events,
                                             absl::string_view key) {
  size_t bytes = 0, count = 0;
  if (absl::Status s = internal::ValidateStreamName(stream); !s.ok()) return s;
  if (absl::Status s = internal::ValidateStreamAppend(stream, expected, events, &bytes, &count);
      !s.ok()) {
    return s;
  }
  Request req;
  req.stream = stream;
  req.expected = expected;
  req.events = events;
  req.key = key;
  if (!key.empty()) {
    if (absl::Status s = internal::ValidateIdempotencyKey(key); !s.ok()) return s;
    const internal::RequestPart part{stream, expected, events};
    req.fingerprint = internal::Fingerprint(absl::MakeConstSpan(&part, 1));
  }
  for (const EventData& e : events) {
    req.bytes += Pad8(kHeader + stream.size() + e.type.size() + e.payload.size() +
                      EncodeMetadata(e.metadata).size());
  }
  if (!key.empty()) req.bytes += Pad8(key.size() + kFingerprint) + 8;

  std::pair<LogImpl*, Request*> me(this, &req);
  const absl::Condition my_turn(
      +[](std::pair<LogImpl*, Request*>* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return a->second->done ||
               (!a->first->leader_active_ && a->first->queue_.front() == a->second);
      },
      &me);
  mu_.Lock();
  if (closing_) {
    mu_.Unlock();
    return absl::FailedPreconditionError("the log is closed");
  }
  queue_.push_back(&req);
  while (true) {
    mu_.Await(my_turn);
    if (req.done) break;
    // The leader: take the queue's front (up to the limits) as one batch.
    leader_active_ = true;
    std::vector<Request*> batch;
    uint64_t bytes_in = 0;
    for (Request* r : queue_) {
      if (batch.size() >= o_.max_batch_requests ||
          (!batch.empty() && bytes_in + r->bytes > o_.max_batch_bytes)) {
        break;
      }
      batch.push_back(r);
      bytes_in += r->bytes;
    }
    mu_.Unlock();
    CommitBatch(batch);  // shrinks `batch` to the requests it committed
    mu_.Lock();
    for (Request* r : batch) {
      r->done = true;
      queue_.pop_front();
    }
    leader_active_ = false;
  }
  mu_.Unlock();
  return std::move(req.result);
}

// ------------------------------------------------------------- reading ---

absl::StatusOr<uint64_t> LogImpl::ReadAll(uint64_t from,
                                          const std::function<bool(const EventRef&)>& fn) {
  const uint64_t end = committed_end_.load(std::memory_order_acquire);
  const uint64_t last = last_position_.load(std::memory_order_acquire);
  if (from == 0) from = 1;
  if (from > last) return 0;
  uint64_t offset = 0;
  if (from > 1) {
    MDB_txn* txn = nullptr;
    if (absl::Status s = Mdb(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn), "begin"); !s.ok()) {
      return s;
    }
    char mk[8];
    PutBe64(mk, ((from - 1) / kMarkEvery) * kMarkEvery + 1);
    MDB_val k = Val(mk, 8), v;
    const int rc = mdb_get(txn, marks_, &k, &v);
    if (rc == 0) offset = Load<uint64_t>(static_cast<const char*>(v.mv_data));
    mdb_txn_abort(txn);
    if (rc != 0) return Mdb(rc, "mark");
  }
  uint64_t n = 0;
  uint64_t next = 0;  // the position the next record must have; 0: not known yet
  while (offset < end) {
    const uint64_t seg = offset / o_.segment_bytes;
    Segment* s = SegmentAt(seg);
    if (s == nullptr) {
      absl::StatusOr<Segment*> m = MapSegment(seg);
      if (!m.ok()) return m.status();
      s = *m;
    }
    const uint64_t in = offset % o_.segment_bytes;
    Rec r;
    if (in + 4 > o_.segment_bytes || Load<uint32_t>(s->map + in) == 0) {
      offset = (seg + 1) * o_.segment_bytes;  // the rest of this segment is empty
      continue;
    }
    if (!Decode(s->map + in, o_.segment_bytes - in, o_.verify_reads, &r)) {
      return absl::DataLossError(absl::StrFormat("corrupt record at offset %d", offset));
    }
    // Positions follow each other: zeros where records should be (a hole)
    // show up here as a gap, not as a shorter log.
    if (next != 0 && r.position != next) {
      return absl::DataLossError(absl::StrFormat("position %d found where %d belongs (offset %d)",
                                                 r.position, next, offset));
    }
    next = r.position + 1;
    offset += r.length;
    if (r.position < from) continue;
    ++n;
    if (!fn(EventRef{r.position, r.version, r.stream, r.type, r.payload, r.recorded_us})) {
      return n;
    }
  }
  if (next != last + 1) {
    return absl::DataLossError(absl::StrFormat("the log ends at %d, not %d", next - 1, last));
  }
  return n;
}

absl::StatusOr<uint64_t> LogImpl::ReadStream(absl::string_view stream, int64_t from, int64_t count,
                                             const std::function<bool(const EventRef&)>& fn) {
  MDB_txn* txn = nullptr;
  if (absl::Status s = Mdb(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn), "begin"); !s.ok()) {
    return s;
  }
  struct Abort {
    MDB_txn* t;
    ~Abort() { mdb_txn_abort(t); }
  } abort{txn};
  MDB_val k = Val(stream), v;
  int rc = mdb_get(txn, streams_, &k, &v);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc != 0) return Mdb(rc, "get stream");
  const uint64_t id = Load<uint64_t>(static_cast<const char*>(v.mv_data));
  MDB_cursor* c = nullptr;
  if (absl::Status s = Mdb(mdb_cursor_open(txn, events_, &c), "cursor"); !s.ok()) return s;
  char ek[16];
  PutBe64(ek, id);
  PutBe64(ek + 8, static_cast<uint64_t>(std::max<int64_t>(from, 0)));
  k = Val(ek, 16);
  uint64_t n = 0;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
       rc == 0 && (count < 0 || n < static_cast<uint64_t>(count));
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 16 || GetBe64(static_cast<const char*>(k.mv_data)) != id) break;
    const uint64_t offset = Load<uint64_t>(static_cast<const char*>(v.mv_data));
    const char* p = RecordAt(offset);
    if (p == nullptr) {
      absl::StatusOr<Segment*> m = MapSegment(offset / o_.segment_bytes);
      if (!m.ok()) {
        mdb_cursor_close(c);
        return m.status();
      }
      p = RecordAt(offset);
    }
    Rec r;
    if (!Decode(p, o_.segment_bytes - offset % o_.segment_bytes, o_.verify_reads, &r)) {
      mdb_cursor_close(c);
      return absl::DataLossError(absl::StrFormat("corrupt record at offset %d", offset));
    }
    ++n;
    if (!fn(EventRef{r.position, r.version, r.stream, r.type, r.payload, r.recorded_us})) break;
  }
  mdb_cursor_close(c);
  if (rc != 0 && rc != MDB_NOTFOUND) return Mdb(rc, "cursor");
  return n;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Log>> Log::Open(const Options& options) {
  auto log = std::make_unique<LogImpl>(options);
  if (absl::Status s = log->Open(); !s.ok()) return s;
  return log;
}

}  // namespace rill::seglog
