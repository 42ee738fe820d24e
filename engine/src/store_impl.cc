#include "store_impl.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "keys.h"
#include "replica_marker.h"
#include "replicated_store.h"
#include "rill/replication.h"
#include "validate.h"
#include "writer.h"

namespace rill::internal {
namespace {

// The reader table of an environment (lock.mdb), as mdb_reader_list prints
// it: one line per slot, "pid thread txnid", txnid "-" for a slot that holds
// no snapshot now.
struct ReaderTable {
  unsigned slots = 0;
  unsigned stale = 0;       // slots of dead processes
  uint64_t oldest_txn = 0;  // oldest snapshot held (0: none)
  int64_t oldest_pid = 0;
};

bool ProcessIsDead(int64_t pid) {
  return pid > 0 && pid != getpid() && kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

ReaderTable ReadReaderTable(MDB_env* env) {
  ReaderTable table;
  mdb_reader_list(
      env,
      [](const char* msg, void* ctx) {
        auto* t = static_cast<ReaderTable*>(ctx);
        long long pid = 0;
        char thread[32], txn[32];
        // The header line and "(no active readers)" do not parse.
        if (sscanf(msg, "%lld %31s %31s", &pid, thread, txn) != 3) return 0;
        ++t->slots;
        if (ProcessIsDead(pid)) ++t->stale;
        uint64_t id = 0;
        if (txn[0] != '-' && absl::SimpleAtoi(txn, &id) && id != 0 &&
            (t->oldest_txn == 0 || id < t->oldest_txn)) {
          t->oldest_txn = id;
          t->oldest_pid = pid;
        }
        return 0;
      },
      &table);
  return table;
}

StreamInfo MakeStreamInfo(absl::string_view name, const StreamState& state) {
  StreamInfo info;
  info.name = std::string(name);
  info.exists = true;
  info.last_version = state.last_version;
  info.event_count = static_cast<uint64_t>(state.last_version) + 1;
  info.first_position = state.first_position;
  info.last_position = state.last_position;
  info.last_recorded_at = absl::FromUnixMicros(state.last_recorded_us);
  return info;
}

}  // namespace

absl::StatusOr<std::unique_ptr<StoreImpl>> StoreImpl::OpenLocal(const std::string& dir,
                                                                const StoreOptions& options) {
  absl::StatusOr<OpenedLog> log = OpenLog(dir, options);
  if (!log.ok()) return log.status();
  std::unique_ptr<StoreImpl> store(new StoreImpl(dir, *std::move(log), options));
  absl::StatusOr<uint64_t> head = store->core_.ReadHead();
  if (!head.ok()) return head.status();
  store->core_.head().Publish(*head);
  return store;
}

StoreImpl::StoreImpl(const std::string& dir, OpenedLog log, const StoreOptions& options)
    : registration_(std::move(log.registration)),
      core_(dir, options, std::move(log.env), log.dbs, std::move(log.store_id)) {
  if (!options.read_only) {
    writer_ = std::make_unique<Writer>(core_.log_env(), core_.dbs(), &core_.head(), options,
                                       &core_.metrics());
  }
}

StoreImpl::~StoreImpl() = default;

absl::Status PrepareRequest(std::vector<RequestPart> parts, const AppendOptions& options,
                            AppendRequest* request) {
  size_t event_count = 0;
  for (const RequestPart& p : parts) {
    if (absl::Status s =
            ValidateStreamAppend(p.stream, p.expected, p.events, &request->bytes, &event_count);
        !s.ok()) {
      return s;
    }
  }
  if (!options.idempotency_key.empty()) {
    if (absl::Status s = ValidateIdempotencyKey(options.idempotency_key); !s.ok()) return s;
    request->idempotency_key = options.idempotency_key;
    request->fingerprint = Fingerprint(parts);
  }
  request->parts = std::move(parts);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RequestPart>> MultiParts(absl::Span<const StreamAppend> appends) {
  if (appends.empty()) return absl::InvalidArgumentError("append request names no stream");
  std::vector<RequestPart> parts;
  parts.reserve(appends.size());
  absl::flat_hash_set<absl::string_view> seen;
  for (const StreamAppend& a : appends) {
    if (!seen.insert(a.stream).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("stream \"", a.stream, "\" appears twice in one append request"));
    }
    parts.push_back(RequestPart{a.stream, a.expected, a.events});
  }
  return parts;
}

absl::StatusOr<AppendResult> StoreImpl::Append(absl::string_view stream, ExpectedVersion expected,
                                               absl::Span<const EventData> events,
                                               const AppendOptions& options) {
  std::vector<RequestPart> parts{RequestPart{stream, expected, events}};
  absl::StatusOr<std::vector<AppendResult>> results = Submit(std::move(parts), options);
  if (!results.ok()) return results.status();
  return std::move(results->front());
}

absl::StatusOr<std::vector<AppendResult>> StoreImpl::AppendMulti(
    absl::Span<const StreamAppend> appends, const AppendOptions& options) {
  absl::StatusOr<std::vector<RequestPart>> parts = MultiParts(appends);
  if (!parts.ok()) return parts.status();
  return Submit(*std::move(parts), options);
}

absl::StatusOr<std::vector<AppendResult>> StoreImpl::Submit(std::vector<RequestPart> parts,
                                                            const AppendOptions& options) {
  if (core_.options().read_only) {
    return absl::FailedPreconditionError("the store was opened read-only");
  }
  AppendRequest request;
  if (absl::Status s = PrepareRequest(std::move(parts), options, &request); !s.ok()) return s;
  writer_->Submit(&request);
  return std::move(request.result);
}

absl::StatusOr<uint64_t> StoreImpl::WaitForHead(uint64_t known_head, absl::Duration timeout,
                                                absl::Duration poll_interval) {
  return core_.head().Wait(known_head, timeout, poll_interval);
}

absl::StatusOr<uint64_t> StoreImpl::HeadPosition() { return core_.ReadHead(); }

absl::StatusOr<StoreStats> StoreImpl::Stats() {
  StoreStats stats;
  stats.format_version = kFormatVersion;
  stats.store_id = core_.store_id();
  stats.durability = core_.options().durability;
  stats.read_only = core_.options().read_only;
  {
    absl::StatusOr<Txn> txn = core_.log_env()->BeginRead();
    if (!txn.ok()) return txn.status();
    MDB_stat st;
    mdb_stat(txn->get(), core_.dbs().events, &st);
    stats.event_count = st.ms_entries;
    mdb_stat(txn->get(), core_.dbs().streams, &st);
    stats.stream_count = st.ms_entries;
    mdb_stat(txn->get(), core_.dbs().idempotency, &st);
    stats.idempotency_keys = st.ms_entries;
    MDB_envinfo info;
    mdb_env_info(core_.log_env()->env(), &info);
    MDB_stat env_stat;
    mdb_env_stat(core_.log_env()->env(), &env_stat);
    stats.map_size = info.me_mapsize;
    stats.used_bytes = (info.me_last_pgno + 1) * uint64_t{env_stat.ms_psize};
    const ReaderTable readers = ReadReaderTable(core_.log_env()->env());
    stats.readers_in_use = readers.slots;
    stats.stale_readers = readers.stale;
    if (readers.oldest_txn != 0 && readers.oldest_txn < info.me_last_txnid) {
      stats.oldest_reader_lag = info.me_last_txnid - readers.oldest_txn;
      stats.oldest_reader_pid = readers.oldest_pid;
    }
    stats.max_readers = info.me_maxreaders;
  }
  absl::StatusOr<uint64_t> head = HeadPosition();
  if (!head.ok()) return head.status();
  stats.head_position = *head;
  std::error_code ec;
  stats.file_bytes = std::filesystem::file_size(LogDataFile(core_.dir()), ec);
  return stats;
}

absl::StatusOr<unsigned> StoreImpl::ClearStaleReaders() { return core_.ClearStaleReaders(); }

absl::StatusOr<StreamInfo> StoreImpl::GetStreamInfo(absl::string_view stream) {
  absl::StatusOr<Txn> txn = core_.log_env()->BeginRead();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<StreamState> state = ReadStreamState(txn->get(), stream);
  if (state.status().code() == absl::StatusCode::kNotFound) {
    StreamInfo info;
    info.name = std::string(stream);
    return info;
  }
  if (!state.ok()) return state.status();
  return MakeStreamInfo(stream, *state);
}

absl::StatusOr<std::vector<StreamInfo>> StoreImpl::ListStreams(absl::string_view prefix,
                                                               size_t limit,
                                                               absl::string_view start_after) {
  std::vector<StreamInfo> out;
  absl::StatusOr<Txn> txn = core_.log_env()->BeginRead();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<CursorPtr> cursor = txn->OpenCursor(core_.dbs().streams);
  if (!cursor.ok()) return cursor.status();
  absl::string_view start = start_after > prefix ? start_after : prefix;
  MDB_val k = ToVal(start), v;
  int rc = start.empty() ? mdb_cursor_get(cursor->get(), &k, &v, MDB_FIRST)
                         : mdb_cursor_get(cursor->get(), &k, &v, MDB_SET_RANGE);
  for (; rc == 0 && out.size() < limit; rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
    absl::string_view name = FromVal(k);
    if (!absl::StartsWith(name, prefix)) break;
    if (!start_after.empty() && name <= start_after) continue;
    absl::StatusOr<StreamState> state = DecodeStreamState(FromVal(v), name);
    if (!state.ok()) return state.status();
    out.push_back(MakeStreamInfo(name, *state));
  }
  if (rc != 0 && rc != MDB_NOTFOUND) return LmdbError(rc, "listing streams");
  return out;
}

}  // namespace rill::internal

namespace rill {

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& dir,
                                                   const StoreOptions& options) {
  // A replicated node's directory records its settings (replication.h):
  // appends then go through JetStream. Read-only, the local replica is all
  // there is to read.
  absl::StatusOr<ReplicationOptions> replication = ReadReplicationSettings(dir);
  if (replication.ok() && !options.read_only) {
    return internal::OpenReplicatedStore(dir, *replication, options);
  }
  if (!replication.ok() && replication.status().code() != absl::StatusCode::kNotFound) {
    return replication.status();
  }
  if (replication.ok()) {
    if (absl::Status s = internal::CheckReplicaReadable(dir); !s.ok()) return s;
  }
  absl::StatusOr<std::unique_ptr<internal::StoreImpl>> store =
      internal::StoreImpl::OpenLocal(dir, options);
  if (!store.ok()) return store.status();
  return std::unique_ptr<Store>(*std::move(store));
}

}  // namespace rill
