#include "nats_link.h"

#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace rill::internal {
namespace {

int64_t Millis(absl::Duration d) { return std::max<int64_t>(1, absl::ToInt64Milliseconds(d)); }

}  // namespace

absl::Status NatsError(natsStatus s, jsErrCode jerr, absl::string_view what) {
  if (s == NATS_OK) return absl::OkStatus();
  std::string msg = absl::StrCat(what, ": ", natsStatus_GetText(s));
  const char* detail = nats_GetLastError(nullptr);
  if (detail != nullptr && *detail != '\0') absl::StrAppend(&msg, " (", detail, ")");
  if (jerr != 0) absl::StrAppend(&msg, " [JetStream error ", static_cast<int>(jerr), "]");
  switch (s) {
    case NATS_TIMEOUT:
      return absl::DeadlineExceededError(msg);
    case NATS_NOT_FOUND:
      return absl::NotFoundError(msg);
    case NATS_INVALID_ARG:
    case NATS_INVALID_SUBJECT:
    case NATS_MAX_PAYLOAD:
      return absl::InvalidArgumentError(msg);
    case NATS_NOT_PERMITTED:
      return absl::PermissionDeniedError(msg);
    case NATS_ERR:
      return jerr != 0 ? absl::FailedPreconditionError(msg) : absl::UnavailableError(msg);
    default:
      return absl::UnavailableError(msg);
  }
}

absl::StatusOr<std::unique_ptr<NatsLink>> NatsLink::Connect(const ReplicationOptions& options,
                                                            bool must_connect) {
  if (options.servers.empty()) return absl::InvalidArgumentError("no NATS server URL given");
  natsOptions* opts = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  std::vector<const char*> urls;
  for (const std::string& u : options.servers) urls.push_back(u.c_str());
  if (s == NATS_OK) s = natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size()));
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, Millis(options.connect_timeout));
  // Keep reconnecting for as long as the store is open; a lost server is
  // replaced by another of the cluster.
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 100);
  // A server that stops answering (paused, partitioned) is noticed within
  // about three seconds, not the default six minutes, and left for another.
  if (s == NATS_OK) s = natsOptions_SetPingInterval(opts, 1000);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(opts, 2);
  if (s == NATS_OK && !must_connect) {
    // With a callback (even one that does nothing) a connect that fails at
    // once returns NATS_NOT_YET_CONNECTED and goes on in the background;
    // without one libnats retries inside natsConnection_Connect, forever.
    s = natsOptions_SetRetryOnFailedConnect(
        opts, true, [](natsConnection*, void*) {}, nullptr);
  }
  if (s == NATS_OK && !options.credentials_file.empty()) {
    s = natsOptions_SetUserCredentialsFromFiles(opts, options.credentials_file.c_str(), nullptr);
  }
  if (s == NATS_OK && options.tls) s = natsOptions_SetSecure(opts, true);
  if (s == NATS_OK && !options.tls_ca_file.empty()) {
    s = natsOptions_LoadCATrustedCertificates(opts, options.tls_ca_file.c_str());
  }
  if (s == NATS_OK && !options.tls_cert_file.empty()) {
    s = natsOptions_LoadCertificatesChain(opts, options.tls_cert_file.c_str(),
                                          options.tls_key_file.c_str());
  }
  if (s != NATS_OK) {
    natsOptions_Destroy(opts);
    return NatsError(s, static_cast<jsErrCode>(0), "setting up the NATS connection");
  }
  natsConnection* nc = nullptr;
  s = natsConnection_Connect(&nc, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK && !(s == NATS_NOT_YET_CONNECTED && nc != nullptr)) {
    absl::Status st = NatsError(s, static_cast<jsErrCode>(0),
                                absl::StrCat("connecting to NATS at ", options.servers.front()));
    return absl::UnavailableError(st.message());
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jsCtx* js = nullptr;
  s = natsConnection_JetStream(&js, nc, &jo);
  if (s != NATS_OK) {
    natsConnection_Destroy(nc);
    return NatsError(s, static_cast<jsErrCode>(0), "opening a JetStream context");
  }
  return std::unique_ptr<NatsLink>(new NatsLink(nc, js));
}

NatsLink::~NatsLink() {
  jsCtx_Destroy(js_);
  natsConnection_Destroy(nc_);
}

bool NatsLink::connected() const {
  return natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED;
}

bool NatsLink::AwaitConnected(absl::Time deadline) const {
  while (!connected()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

absl::Status NatsLink::EnsureStream(const ReplicationOptions& options) {
  jsErrCode jerr = static_cast<jsErrCode>(0);
  jsStreamInfo* si = nullptr;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = Millis(options.connect_timeout);
  natsStatus s = js_GetStreamInfo(&si, js_, options.stream.c_str(), &jo, &jerr);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(si);
    return absl::OkStatus();
  }
  if (s != NATS_NOT_FOUND) return NatsError(s, jerr, "looking up the JetStream stream");
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = options.stream.c_str();
  const std::string subject = options.effective_subject();
  const char* subjects[] = {subject.c_str()};
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Replicas = options.replicas;
  // The stream is the log: nothing may be taken out of it.
  cfg.DenyDelete = true;
  cfg.DenyPurge = true;
  cfg.MaxMsgSize = static_cast<int32_t>(options.max_message_bytes);
  jerr = static_cast<jsErrCode>(0);
  s = js_AddStream(&si, js_, &cfg, &jo, &jerr);
  if (s != NATS_OK) return NatsError(s, jerr, "creating the JetStream stream");
  jsStreamInfo_Destroy(si);
  return absl::OkStatus();
}

absl::StatusOr<NatsLink::StreamState> NatsLink::GetStream(const std::string& stream,
                                                          absl::Duration timeout) {
  jsErrCode jerr = static_cast<jsErrCode>(0);
  jsStreamInfo* si = nullptr;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = Millis(timeout);
  natsStatus s = js_GetStreamInfo(&si, js_, stream.c_str(), &jo, &jerr);
  if (s != NATS_OK) return NatsError(s, jerr, "looking up the JetStream stream");
  StreamState st;
  st.last_sequence = si->State.LastSeq;
  st.replicas = static_cast<int>(si->Config->Replicas);
  if (si->Cluster != nullptr && si->Cluster->Leader != nullptr) st.leader = si->Cluster->Leader;
  jsStreamInfo_Destroy(si);
  return st;
}

NatsLink::Published NatsLink::Publish(const std::string& subject, const std::string& stream,
                                      const std::string& msg_id, absl::string_view data,
                                      absl::Duration timeout, uint64_t expect_last_sequence) {
  Published out;
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = msg_id.c_str();
  po.ExpectStream = stream.c_str();
  po.ExpectLastSeq = expect_last_sequence;
  po.MaxWait = Millis(timeout);
  jsPubAck* ack = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_Publish(&ack, js_, subject.c_str(), data.data(), static_cast<int>(data.size()),
                            &po, &jerr);
  if (s == NATS_OK) {
    out.sequence = ack->Sequence;
    out.duplicate = ack->Duplicate;
    jsPubAck_Destroy(ack);
    return out;
  }
  out.maybe_stored = s == NATS_TIMEOUT;
  out.status = NatsError(s, jerr, "publishing to JetStream");
  return out;
}

absl::StatusOr<uint64_t> NatsLink::PublishRetrying(
    const std::string& subject, const std::string& stream, const std::string& msg_id,
    absl::string_view data, absl::Duration timeout, absl::Duration attempt,
    absl::FunctionRef<bool()> cancelled, uint64_t expect_last_sequence) {
  const absl::Time deadline = absl::Now() + timeout;
  bool maybe_stored = false;
  absl::Status last = absl::DeadlineExceededError("no attempt");
  absl::Duration backoff = absl::Milliseconds(10);
  for (;;) {
    if (cancelled()) {
      last = absl::CancelledError("the store is closing");
      break;
    }
    const absl::Time now = absl::Now();
    if (now >= deadline) break;
    if (!AwaitConnected(std::min(deadline, now + absl::Milliseconds(200)))) {
      last = absl::UnavailableError("not connected to any NATS server");
      continue;
    }
    // Each attempt waits a little for its acknowledgement, not the whole
    // timeout: a request sent to a server that died, or that sat in the
    // reconnect buffer, is never answered; the next attempt (same message
    // id) goes to a live server and JetStream keeps one copy.
    Published r = Publish(subject, stream, msg_id, data, std::min(deadline - now, attempt),
                          expect_last_sequence);
    if (r.status.ok()) return r.sequence;
    maybe_stored |= r.maybe_stored;
    last = r.status;
    // A JetStream API error (wrong stream, message too large, ...) will not
    // go away by retrying; no responders (no stream leader: an election is
    // under way) and timeouts may.
    if (absl::IsInvalidArgument(r.status) || absl::IsFailedPrecondition(r.status) ||
        absl::IsPermissionDenied(r.status)) {
      if (!maybe_stored) return r.status;
      break;
    }
    absl::SleepFor(std::min(backoff, std::max(deadline - absl::Now(), absl::ZeroDuration())));
    backoff = std::min(backoff * 2, absl::Milliseconds(250));
  }
  if (maybe_stored) {
    return absl::UnavailableError(absl::StrCat(
        "the append's outcome is unknown: JetStream did not acknowledge it within ",
        absl::FormatDuration(timeout),
        " after it was sent; a retry with the same idempotency key is safe (last error: ",
        last.message(), ")"));
  }
  return absl::UnavailableError(absl::StrCat("NATS JetStream did not take the append within ",
                                             absl::FormatDuration(timeout), "; it was not stored (",
                                             last.message(), ")"));
}

absl::StatusOr<std::unique_ptr<NatsLink::Follower>> NatsLink::Follow(const std::string& subject,
                                                                     const std::string& stream,
                                                                     uint64_t start_sequence) {
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Ordered = true;
  so.Config.DeliverPolicy = js_DeliverByStartSequence;
  so.Config.OptStartSeq = start_sequence;
  // Missed heartbeats make libnats recreate the consumer (a lost server):
  // one second bounds how long the replica stalls.
  so.Config.Heartbeat = 1'000'000'000;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsSubscription* sub = nullptr;
  natsStatus s = js_SubscribeSync(&sub, js_, subject.c_str(), nullptr, &so, &jerr);
  if (s != NATS_OK) return NatsError(s, jerr, "following the JetStream stream");
  return std::unique_ptr<Follower>(new Follower(sub));
}

NatsLink::Follower::~Follower() {
  natsSubscription_Unsubscribe(sub_);
  natsSubscription_Destroy(sub_);
}

absl::StatusOr<std::optional<NatsLink::Follower::Message>> NatsLink::Follower::Next(
    absl::Duration timeout) {
  natsMsg* msg = nullptr;
  // A zero timeout takes only what has already arrived.
  natsStatus s =
      natsSubscription_NextMsg(&msg, sub_, timeout <= absl::ZeroDuration() ? 0 : Millis(timeout));
  if (s == NATS_TIMEOUT) return std::nullopt;
  if (s != NATS_OK) return NatsError(s, static_cast<jsErrCode>(0), "reading the JetStream stream");
  jsMsgMetaData* meta = nullptr;
  s = natsMsg_GetMetaData(&meta, msg);
  if (s != NATS_OK) {
    natsMsg_Destroy(msg);
    return NatsError(s, static_cast<jsErrCode>(0), "reading a JetStream message's metadata");
  }
  Message m{meta->Sequence.Stream,
            std::string(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)))};
  jsMsgMetaData_Destroy(meta);
  natsMsg_Destroy(msg);
  return m;
}

}  // namespace rill::internal
