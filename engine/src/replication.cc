// The node's settings file, creating a node, and its replication status
// (rill/replication.h).
#include "rill/replication.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "nats_link.h"
#include "repl_codec.h"
#include "replica.h"
#include "rill/store.h"
#include "store_core.h"
#include "store_impl.h"

namespace rill {
namespace {

constexpr char kSettingsFile[] = "replication.conf";

std::string SettingsPath(const std::string& dir) { return dir + "/" + kSettingsFile; }

absl::Status Validate(const ReplicationOptions& o) {
  if (o.servers.empty()) return absl::InvalidArgumentError("no NATS server URL given");
  for (const std::string& url : o.servers) {
    if (!absl::StartsWith(url, "nats://") && !absl::StartsWith(url, "tls://")) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", url, "\" is not a NATS URL (nats://HOST:PORT or tls://HOST:PORT)"));
    }
  }
  if (o.stream.empty() || o.stream.size() > 64) {
    return absl::InvalidArgumentError("the stream name must be 1..64 characters");
  }
  for (char c : o.stream) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
      return absl::InvalidArgumentError(absl::StrCat(
          "stream name \"", o.stream, "\" may hold only letters, digits, '-' and '_'"));
    }
  }
  if (o.replicas < 1 || o.replicas > 5) {
    return absl::InvalidArgumentError("replicas must be between 1 and 5");
  }
  if (o.max_message_bytes < 4096 || o.max_message_bytes > (size_t{64} << 20)) {
    return absl::InvalidArgumentError("max_message_bytes must be between 4 KiB and 64 MiB");
  }
  if (o.connect_timeout <= absl::ZeroDuration() || o.append_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeouts must be positive");
  }
  if (o.group_commit_wait < absl::ZeroDuration() || o.group_commit_wait > absl::Milliseconds(100)) {
    return absl::InvalidArgumentError("group_commit_wait must be between 0 and 100 ms");
  }
  return absl::OkStatus();
}

std::string Encode(const ReplicationOptions& o) {
  std::string out =
      "# rill replicated node (docs/replication.md). Written by rill replicate init.\n";
  absl::StrAppend(&out, "servers = ", absl::StrJoin(o.servers, ","), "\n");
  absl::StrAppend(&out, "stream = ", o.stream, "\n");
  absl::StrAppend(&out, "subject = ", o.effective_subject(), "\n");
  absl::StrAppend(&out, "replicas = ", o.replicas, "\n");
  absl::StrAppend(&out, "connect_timeout_ms = ", absl::ToInt64Milliseconds(o.connect_timeout),
                  "\n");
  absl::StrAppend(&out, "append_timeout_ms = ", absl::ToInt64Milliseconds(o.append_timeout), "\n");
  absl::StrAppend(&out, "max_message_bytes = ", o.max_message_bytes, "\n");
  // Only when set: an older rill refuses keys it does not know.
  if (o.group_commit_wait != ReplicationOptions().group_commit_wait) {
    absl::StrAppend(&out, "group_commit_wait_us = ", absl::ToInt64Microseconds(o.group_commit_wait),
                    "\n");
  }
  absl::StrAppend(&out, "sync_replica = ", o.sync_replica ? "true" : "false", "\n");
  if (!o.credentials_file.empty())
    absl::StrAppend(&out, "credentials = ", o.credentials_file, "\n");
  if (o.tls) absl::StrAppend(&out, "tls = true\n");
  if (!o.tls_ca_file.empty()) absl::StrAppend(&out, "tls_ca = ", o.tls_ca_file, "\n");
  if (!o.tls_cert_file.empty()) absl::StrAppend(&out, "tls_cert = ", o.tls_cert_file, "\n");
  if (!o.tls_key_file.empty()) absl::StrAppend(&out, "tls_key = ", o.tls_key_file, "\n");
  return out;
}

absl::StatusOr<ReplicationOptions> Decode(absl::string_view text, const std::string& path) {
  ReplicationOptions o;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(line, absl::MaxSplits('=', 1));
    const absl::string_view key = absl::StripAsciiWhitespace(kv.first);
    const std::string value(absl::StripAsciiWhitespace(kv.second));
    auto bad = [&]() {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " line ", line_no, ": bad value for ", key, ": \"", value, "\""));
    };
    int64_t n = 0;
    if (key == "servers") {
      o.servers = absl::StrSplit(value, ',', absl::SkipWhitespace());
    } else if (key == "stream") {
      o.stream = value;
    } else if (key == "subject") {
      o.subject = value;
    } else if (key == "replicas") {
      if (!absl::SimpleAtoi(value, &n)) return bad();
      o.replicas = static_cast<int>(n);
    } else if (key == "connect_timeout_ms") {
      if (!absl::SimpleAtoi(value, &n)) return bad();
      o.connect_timeout = absl::Milliseconds(n);
    } else if (key == "append_timeout_ms") {
      if (!absl::SimpleAtoi(value, &n)) return bad();
      o.append_timeout = absl::Milliseconds(n);
    } else if (key == "max_message_bytes") {
      if (!absl::SimpleAtoi(value, &n)) return bad();
      o.max_message_bytes = static_cast<size_t>(n);
    } else if (key == "group_commit_wait_us") {
      if (!absl::SimpleAtoi(value, &n)) return bad();
      o.group_commit_wait = absl::Microseconds(n);
    } else if (key == "sync_replica") {
      if (value != "true" && value != "false") return bad();
      o.sync_replica = value == "true";
    } else if (key == "credentials") {
      o.credentials_file = value;
    } else if (key == "tls") {
      o.tls = value == "true";
    } else if (key == "tls_ca") {
      o.tls_ca_file = value;
    } else if (key == "tls_cert") {
      o.tls_cert_file = value;
    } else if (key == "tls_key") {
      o.tls_key_file = value;
    } else {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " line ", line_no, ": unknown setting \"", key, "\""));
    }
  }
  if (absl::Status s = Validate(o); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": ", s.message()));
  }
  return o;
}

// Writes `text` to `path` durably: a temporary file, fsync, rename, fsync of
// the directory.
absl::Status WriteFileDurably(const std::string& dir, const std::string& path,
                              const std::string& text) {
  const std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("creating ", tmp));
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status s = absl::ErrnoToStatus(errno, absl::StrCat("writing ", tmp));
      close(fd);
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) {
    absl::Status s = absl::ErrnoToStatus(errno, absl::StrCat("syncing ", tmp));
    close(fd);
    return s;
  }
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("renaming ", tmp));
  }
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ReplicationOptions> ReadReplicationSettings(const std::string& dir) {
  const std::string path = SettingsPath(dir);
  std::ifstream in(path);
  if (!in) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
      return absl::NotFoundError(absl::StrCat(dir, " is not a replicated node"));
    }
    return absl::PermissionDeniedError(absl::StrCat("cannot read ", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  return Decode(text.str(), path);
}

absl::Status InitReplicatedNode(const std::string& dir, const ReplicationOptions& options,
                                const StoreOptions& store_options) {
  if (absl::Status s = Validate(options); !s.ok()) return s;
  std::error_code ec;
  if (std::filesystem::exists(dir, ec) && !std::filesystem::is_empty(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, " is not empty: a node is created in a new or empty directory"));
  }
  // The stream first: nothing is created on disk when NATS cannot be reached.
  {
    absl::StatusOr<std::unique_ptr<internal::NatsLink>> link =
        internal::NatsLink::Connect(options, /*must_connect=*/true);
    if (!link.ok()) return link.status();
    if (absl::Status s = (*link)->EnsureStream(options); !s.ok()) return s;
  }
  StoreOptions local = store_options;
  local.create_if_missing = true;
  local.read_only = false;
  absl::StatusOr<std::unique_ptr<internal::StoreImpl>> store =
      internal::StoreImpl::OpenLocal(dir, local);
  if (!store.ok()) return store.status();
  absl::StatusOr<std::unique_ptr<internal::Replica>> replica =
      internal::Replica::Open(store->get());
  if (!replica.ok()) return replica.status();
  return WriteFileDurably(dir, SettingsPath(dir), Encode(options));
}

absl::StatusOr<ReplicationStatus> GetReplicationStatus(Store* store) {
  absl::StatusOr<internal::StoreCore*> core = internal::CoreOf(store, "GetReplicationStatus");
  if (!core.ok()) return core.status();
  absl::StatusOr<ReplicationOptions> options = ReadReplicationSettings((*core)->dir());
  if (!options.ok()) return options.status();
  ReplicationStatus status;
  status.stream = options->stream;
  absl::StatusOr<uint64_t> applied = internal::ReadAppliedSequence(*core);
  if (!applied.ok()) return applied.status();
  status.applied_sequence = *applied;
  absl::StatusOr<std::unique_ptr<internal::NatsLink>> link =
      internal::NatsLink::Connect(*options, /*must_connect=*/true);
  absl::StatusOr<internal::NatsLink::StreamState> stream =
      link.ok() ? (*link)->GetStream(options->stream, options->connect_timeout)
                : absl::StatusOr<internal::NatsLink::StreamState>(link.status());
  if (!stream.ok()) {
    status.error = std::string(stream.status().message());
    return status;
  }
  status.reachable = true;
  status.stream_last_sequence = stream->last_sequence;
  status.lag = stream->last_sequence > *applied ? stream->last_sequence - *applied : 0;
  status.replicas = stream->replicas;
  status.leader = stream->leader;
  return status;
}

absl::StatusOr<PushResult> PushToStream(Store* source, const ReplicationOptions& options) {
  if (absl::Status s = Validate(options); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<internal::NatsLink>> link =
      internal::NatsLink::Connect(options, /*must_connect=*/true);
  if (!link.ok()) return link.status();
  absl::StatusOr<internal::NatsLink::StreamState> existing =
      (*link)->GetStream(options.stream, options.connect_timeout);
  if (existing.ok() && existing->last_sequence > 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "JetStream stream ", options.stream, " already holds ", existing->last_sequence,
        " messages: a store is pushed into a new (or empty) stream"));
  }
  if (!existing.ok() && !absl::IsNotFound(existing.status())) return existing.status();
  if (absl::Status s = (*link)->EnsureStream(options); !s.ok()) return s;
  EventId node;
  if (absl::StatusOr<EventId> id = EventId::Parse(source->store_id()); id.ok()) node = *id;

  // A message holds runs of events of one stream with one recorded time (a
  // request each), up to about half the message limit.
  struct Run {
    std::string stream;
    int64_t recorded_us = 0;
    std::vector<EventData> events;
  };
  const size_t budget = options.max_message_bytes / 2;
  std::vector<Run> runs;
  size_t bytes = 0;
  PushResult result;
  uint64_t last_sequence = 0;
  absl::Status failed;
  auto flush = [&]() -> absl::Status {
    if (runs.empty()) return absl::OkStatus();
    std::vector<internal::AppendRequest> requests(runs.size());
    std::vector<internal::AppendRequest*> pointers;
    for (size_t i = 0; i < runs.size(); ++i) {
      requests[i].parts.push_back(
          internal::RequestPart{runs[i].stream, ExpectedVersion::Any(), runs[i].events});
      requests[i].recorded_us = runs[i].recorded_us;
      pointers.push_back(&requests[i]);
    }
    const EventId txid = EventId::Random();
    const std::string data =
        internal::EncodeTransaction(txid, node, runs.front().recorded_us, pointers);
    absl::StatusOr<uint64_t> seq = (*link)->PublishRetrying(
        options.effective_subject(), options.stream, txid.ToString(), data, options.append_timeout,
        absl::Seconds(2), [] { return false; }, last_sequence);
    if (!seq.ok()) return seq.status();
    last_sequence = *seq;
    ++result.messages;
    runs.clear();
    bytes = 0;
    return absl::OkStatus();
  };
  absl::Status scanned = source->ScanAll(1, ReadOptions(), [&](const EventView& e) {
    const int64_t us = absl::ToUnixMicros(e.recorded_at());
    const size_t size = e.payload().size() + e.type().size() + 128;
    if (!runs.empty() && bytes + size > budget) {
      failed = flush();
      if (!failed.ok()) return false;
    }
    if (runs.empty() || runs.back().stream != e.stream() || runs.back().recorded_us != us) {
      runs.push_back(Run{std::string(e.stream()), us, {}});
    }
    runs.back().events.push_back(internal::ToEventData(e));
    bytes += size;
    ++result.events;
    return true;
  });
  if (!failed.ok()) return failed;
  if (!scanned.ok()) return scanned;
  if (absl::Status s = flush(); !s.ok()) return s;
  result.last_sequence = last_sequence;
  return result;
}

absl::Status WaitForReplica(Store* store, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<ReplicationStatus> status = GetReplicationStatus(store);
  if (absl::IsNotFound(status.status())) {
    return absl::FailedPreconditionError("WaitForReplica: the store is not a replicated node");
  }
  if (!status.ok()) return status.status();
  if (!status->reachable) {
    return absl::UnavailableError(absl::StrCat("WaitForReplica: ", status->error));
  }
  absl::StatusOr<internal::StoreCore*> core = internal::CoreOf(store, "WaitForReplica");
  if (!core.ok()) return core.status();
  for (;;) {
    absl::StatusOr<uint64_t> applied = internal::ReadAppliedSequence(*core);
    if (!applied.ok()) return applied.status();
    if (*applied >= status->stream_last_sequence) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("the replica has applied sequence ", *applied,
                                                      " of ", status->stream_last_sequence,
                                                      " after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
}

}  // namespace rill
