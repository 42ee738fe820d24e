// The read path: scans of the log and of one stream, in chunks of records
// copied out of short read transactions. Each chunk is copied into aligned
// memory inside the transaction, the transaction ends, and only then are the
// records checked (checksum, verifier) and handed to the caller. So no user
// code ever runs inside a transaction, and a long scan never pins old pages.
//
// Inside the transaction a chunk is first located (the cursor walk collects
// where each record sits in the map) and then copied, prefetching a few
// records ahead: the map's pages are scattered in physical memory, so the
// CPU's own prefetcher stops at every 4 KiB page and each record's copy
// waited for its cache misses. Located then prefetched, read_all went from
// 3.4 M to 6.2 M events/s (bench/compare_reading.md).
#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "keys.h"
#include "store_impl.h"

namespace rill::internal {
namespace {

// Records per read transaction; a chunk also ends after kChunkBytes.
constexpr size_t kChunkRecords = 512;
constexpr size_t kChunkBytes = size_t{4} << 20;

struct ChunkEntry {
  uint64_t position;
  size_t offset;
  size_t size;
};

// A record found in the map, valid while its read transaction lives.
struct Located {
  uint64_t position;
  MDB_val value;
};

// How many records ahead of the one being copied are prefetched.
constexpr size_t kPrefetchRecords = 4;

// Prefetches the whole 4 KiB page holding `p` the first time a walk touches
// it (`*current` remembers the page): the cursor's next steps land on the
// same leaf page's other nodes. Only a hint: a wrong guess costs nothing.
inline void PrefetchPageOf(const void* p, uintptr_t* current) {
  constexpr uintptr_t kPage = 4096;
  const uintptr_t page = reinterpret_cast<uintptr_t>(p) & ~(kPage - 1);
  if (page == *current) return;
  *current = page;
  for (uintptr_t off = 0; off < kPage; off += 64) {
    __builtin_prefetch(reinterpret_cast<const void*>(page + off));
  }
}

// Copies the located records (`bytes` in all) into `arena`, appending them to
// `chunk`.
void CopyLocated(const std::vector<Located>& located, size_t bytes, AlignedBuffer* arena,
                 std::vector<ChunkEntry>* chunk) {
  arena->Reserve(bytes, located.size());
  chunk->reserve(chunk->size() + located.size());
  for (size_t i = 0; i < located.size(); ++i) {
    if (i + kPrefetchRecords < located.size()) {
      const MDB_val& ahead = located[i + kPrefetchRecords].value;
      const char* p = static_cast<const char*>(ahead.mv_data);
      for (size_t off = 0; off < ahead.mv_size; off += 64) __builtin_prefetch(p + off);
    }
    const Located& l = located[i];
    chunk->push_back({l.position, arena->Append(FromVal(l.value)), l.value.mv_size});
  }
}

// Locates the event stored under `position`, through `cursor` on `events`.
// A stream's events mostly sit next to each other in the log (an append's
// events have consecutive positions): the next position is
// tried with MDB_NEXT, and any other is found with MDB_SET_KEY, which LMDB
// answers without a search from the root while the key is on the cursor's
// current leaf page. (mdb_get searched from the root for every event.)
absl::Status LocateEvent(MDB_cursor* cursor, uint64_t position, uint64_t* cursor_position,
                         std::vector<Located>* located) {
  PositionKey pkey(position);
  MDB_val key, value;
  int rc = MDB_NOTFOUND;
  if (*cursor_position != 0 && position == *cursor_position + 1) {
    rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT);
    if (rc == 0 && (key.mv_size != 8 || std::memcmp(key.mv_data, pkey.bytes.data(), 8) != 0)) {
      rc = MDB_NOTFOUND;  // not the next record after all: look it up
    }
  }
  if (rc != 0) {
    key = ToVal(pkey.bytes.data(), pkey.bytes.size());
    rc = mdb_cursor_get(cursor, &key, &value, MDB_SET_KEY);
  }
  if (rc == MDB_NOTFOUND) {
    *cursor_position = 0;
    return absl::DataLossError(
        absl::StrCat("the stream index points at position ", position, ", which is missing"));
  }
  if (rc != 0) return LmdbError(rc, "reading an event");
  *cursor_position = position;
  located->push_back({position, value});
  return absl::OkStatus();
}

}  // namespace

absl::Status StoreCore::ScanChunked(uint64_t from_position, Direction direction,
                                    const EventFilter& filter, size_t max_records,
                                    absl::FunctionRef<bool(const EventView&)> fn,
                                    ScanProgress* progress) {
  const bool forward = direction == Direction::kForward;
  AlignedBuffer arena;
  std::vector<ChunkEntry> chunk;
  std::vector<Located> located;
  uint64_t next = from_position;
  while (progress->records < max_records) {
    if (!forward && next == 0) return absl::OkStatus();
    arena.Clear();
    chunk.clear();
    located.clear();
    bool exhausted = false;
    {
      absl::StatusOr<Txn> txn = log_->BeginRead();
      if (!txn.ok()) return txn.status();
      absl::StatusOr<CursorPtr> cursor = txn->OpenCursor(dbs_.events);
      if (!cursor.ok()) return cursor.status();
      PositionKey pkey(next);
      MDB_val k = ToVal(pkey.bytes.data(), pkey.bytes.size()), v;
      int rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_SET_RANGE);
      if (!forward) {
        if (rc == MDB_NOTFOUND) {
          rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_LAST);
        } else if (rc == 0 && FromVal(k) != FromVal(ToVal(pkey.bytes.data(), 8))) {
          rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_PREV);
        }
      }
      const size_t want = std::min(kChunkRecords, max_records - progress->records);
      size_t bytes = 0;
      uintptr_t page = 0;
      while (rc == 0 && located.size() < want && bytes < kChunkBytes) {
        if (k.mv_size != 8) return absl::DataLossError("events database holds a malformed key");
        located.push_back({GetBigEndian64(static_cast<const uint8_t*>(k.mv_data)), v});
        PrefetchPageOf(v.mv_data, &page);
        bytes += v.mv_size;
        rc = mdb_cursor_get(cursor->get(), &k, &v, forward ? MDB_NEXT : MDB_PREV);
      }
      if (rc == MDB_NOTFOUND) {
        exhausted = true;
      } else if (rc != 0) {
        return LmdbError(rc, "scanning the log");
      }
      CopyLocated(located, bytes, &arena, &chunk);
    }  // the read transaction ends here, before any record is handed out
    for (const ChunkEntry& e : chunk) {
      absl::StatusOr<const schema::EventRecord*> record =
          DecodeEvent(arena.data() + e.offset, e.size, e.position);
      if (!record.ok()) return record.status();
      progress->last_scanned = e.position;
      ++progress->records;
      const EventView view = EventViewAccess::Of(*record);
      if (filter.Matches(view) && !fn(view)) return absl::OkStatus();
    }
    if (exhausted || chunk.empty()) return absl::OkStatus();
    next = forward ? chunk.back().position + 1 : chunk.back().position - 1;
  }
  return absl::OkStatus();
}

absl::Status StoreImpl::ScanAll(uint64_t from_position, const ReadOptions& options,
                                absl::FunctionRef<bool(const EventView&)> fn) {
  if (options.limit == 0) return absl::OkStatus();
  size_t delivered = 0;
  bool stopped = false;
  ScanProgress progress;
  // Without a filter every record read is delivered, so the limit also
  // bounds how many records to copy out of the map (a ReadAll with limit 1
  // copies one record, not a whole chunk).
  const size_t max_records =
      options.filter.empty() ? options.limit : std::numeric_limits<size_t>::max();
  return core_.ScanChunked(
      from_position, options.direction, options.filter, max_records,
      [&](const EventView& e) {
        stopped = !fn(e);
        return !stopped && ++delivered < options.limit;
      },
      &progress);
}

absl::StatusOr<std::vector<RecordedEvent>> StoreImpl::ReadAll(uint64_t from_position,
                                                              const ReadOptions& options) {
  std::vector<RecordedEvent> out;
  absl::Status s = ScanAll(from_position, options, [&out](const EventView& e) {
    out.push_back(e.ToOwned());
    return true;
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<StreamState> StoreImpl::ReadStreamState(MDB_txn* txn, absl::string_view stream) {
  if (stream.empty() || stream.size() > kMaxStreamNameBytes) {
    return absl::NotFoundError(absl::StrCat("stream \"", stream, "\" does not exist"));
  }
  MDB_val key = ToVal(stream), value;
  int rc = mdb_get(txn, core_.dbs().streams, &key, &value);
  if (rc == MDB_NOTFOUND) {
    return absl::NotFoundError(absl::StrCat("stream \"", stream, "\" does not exist"));
  }
  if (rc != 0) return LmdbError(rc, "reading a stream record");
  return DecodeStreamState(FromVal(value), stream);
}

absl::Status StoreImpl::ScanStream(absl::string_view stream, int64_t from_version,
                                   const ReadOptions& options,
                                   absl::FunctionRef<bool(const EventView&)> fn) {
  const bool forward = options.direction == Direction::kForward;
  AlignedBuffer arena;
  std::vector<ChunkEntry> chunk;
  std::vector<Located> located;
  size_t delivered = 0;
  int64_t next = forward ? std::max<int64_t>(from_version, 0) : from_version;
  for (;;) {
    if (delivered >= options.limit || next < 0) return absl::OkStatus();
    arena.Clear();
    chunk.clear();
    located.clear();
    bool exhausted = false;
    int64_t chunk_start;
    {
      absl::StatusOr<Txn> txn = core_.log_env()->BeginRead();
      if (!txn.ok()) return txn.status();
      absl::StatusOr<StreamState> state = ReadStreamState(txn->get(), stream);
      if (!state.ok()) return state.status();
      if (!forward) next = std::min(next, state->last_version);
      chunk_start = next;
      const int64_t last = forward ? state->last_version : 0;
      absl::StatusOr<CursorPtr> cursor = txn->OpenCursor(core_.dbs().stream_index);
      if (!cursor.ok()) return cursor.status();
      absl::StatusOr<CursorPtr> events = txn->OpenCursor(core_.dbs().events);
      if (!events.ok()) return events.status();
      uint64_t events_at = 0;  // where `events` stands; 0: nowhere yet
      StreamIndexKey ikey(state->first_position, next);
      MDB_val k = ToVal(ikey.bytes.data(), ikey.bytes.size()), v;
      int rc = (forward ? next > last : next < last)
                   ? MDB_NOTFOUND
                   : mdb_cursor_get(cursor->get(), &k, &v, MDB_SET_KEY);
      if (rc == MDB_NOTFOUND && (forward ? next <= last : next >= last)) {
        return absl::DataLossError(
            absl::StrCat("the index of stream \"", stream, "\" has no entry for version ", next));
      }
      const size_t want = std::min(kChunkRecords, options.limit - delivered);
      size_t bytes = 0;
      uintptr_t page = 0;
      while (rc == 0 && located.size() < want && bytes < kChunkBytes) {
        if (k.mv_size != 16 || v.mv_size != 8 ||
            GetBigEndian64(static_cast<const uint8_t*>(k.mv_data)) != state->first_position) {
          break;  // past the stream's index entries
        }
        const uint64_t position = GetBigEndian64(static_cast<const uint8_t*>(v.mv_data));
        if (absl::Status s = LocateEvent(events->get(), position, &events_at, &located); !s.ok()) {
          return s;
        }
        PrefetchPageOf(located.back().value.mv_data, &page);
        bytes += located.back().value.mv_size;
        if (forward ? next == last : next == 0) {
          rc = MDB_NOTFOUND;
          break;
        }
        next += forward ? 1 : -1;
        rc = mdb_cursor_get(cursor->get(), &k, &v, forward ? MDB_NEXT : MDB_PREV);
      }
      if (rc == MDB_NOTFOUND) {
        exhausted = true;
      } else if (rc != 0) {
        return LmdbError(rc, "reading the stream index");
      }
      CopyLocated(located, bytes, &arena, &chunk);
    }
    int64_t expected_version = chunk_start;
    for (const ChunkEntry& e : chunk) {
      absl::StatusOr<const schema::EventRecord*> record =
          DecodeEvent(arena.data() + e.offset, e.size, e.position);
      if (!record.ok()) return record.status();
      const EventView view = EventViewAccess::Of(*record);
      if (view.stream() != stream || view.version() != expected_version) {
        return absl::DataLossError(
            absl::StrCat("the index of stream \"", stream, "\" points at position ", e.position,
                         ", which holds ", view.stream(), "@", view.version()));
      }
      expected_version += forward ? 1 : -1;
      ++delivered;
      if (!fn(view) || delivered >= options.limit) return absl::OkStatus();
    }
    if (exhausted || chunk.empty()) return absl::OkStatus();
  }
}

absl::StatusOr<std::vector<RecordedEvent>> StoreImpl::ReadStream(absl::string_view stream,
                                                                 int64_t from_version,
                                                                 const ReadOptions& options) {
  std::vector<RecordedEvent> out;
  absl::Status s = ScanStream(stream, from_version, options, [&out](const EventView& e) {
    out.push_back(e.ToOwned());
    return true;
  });
  if (!s.ok()) return s;
  return out;
}

}  // namespace rill::internal
