// JetStream alone (jetstream_r3, jetstream_r1): the floor under any
// replicated store that acknowledges a request only once a JetStream quorum
// has it, rill's included. Each request is one synchronous js_Publish of a
// message about the size of rill's transaction for it (per event a 16-byte
// id, the type and the payload), with a Nats-Msg-Id and Nats-Expected-Stream
// as rill sends them, waiting for the stream leader's acknowledgement. No
// expected version is checked, nothing is applied or written locally:
// libnats straight to the servers, none of rill's code.
//
// A single writer (append_b*) sends its next request only after the last one
// returned, so each request costs at least one such round trip, whatever the
// store does around it: these figures bound a replicated store's from above.
// concurrent16's 16 threads publish one message per request each, in
// parallel on one connection (as a node's publishers share one); a store
// that batches several callers' requests into one message can pass that
// figure, so there it is a reference, not a bound.
//
// jetstream_r3_rx adds what a node with a local replica cannot skip: an
// ordered push consumer (as the node's applier uses) receives every message
// of the stream, and a request returns only once its own message has come
// back through it (its sequence delivered), not at the acknowledgement. That
// is the floor of rill's design without rill's apply: what separates the
// replicated store from it is rill's own work (encoding, the local LMDB
// commit, handing results back).
#include <nats/nats.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../bench_util.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "peer.h"

namespace rill::bench {
namespace {

constexpr absl::Duration kStreamReadyTimeout = absl::Seconds(30);
constexpr int64_t kPublishWaitMs = 10'000;

std::string NatsText(natsStatus s, jsErrCode jerr) {
  const char* detail = nats_GetLastError(nullptr);
  return absl::StrFormat("%s%s%s [JetStream error %d]", natsStatus_GetText(s),
                         detail != nullptr && *detail != '\0' ? ": " : "",
                         detail != nullptr ? detail : "", static_cast<int>(jerr));
}

// The sequences an ordered push consumer has delivered (jetstream_r3_rx).
class Delivered {
 public:
  void Set(uint64_t sequence) {
    absl::MutexLock lock(&mu_);
    last_ = std::max(last_, sequence);
  }
  void Await(uint64_t sequence) {
    absl::MutexLock lock(&mu_);
    auto arrived = [this, sequence]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return last_ >= sequence; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&arrived), absl::Seconds(10))) {
      Die(absl::StrFormat("jetstream: sequence %d not delivered within 10 s", sequence));
    }
  }

 private:
  absl::Mutex mu_;
  uint64_t last_ ABSL_GUARDED_BY(mu_) = 0;
};

void ConnectTo(const std::vector<std::string>& servers, natsConnection** nc, jsCtx** js) {
  natsOptions* opts = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  std::vector<const char*> urls;
  for (const std::string& u : servers) urls.push_back(u.c_str());
  if (s == NATS_OK) s = natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size()));
  if (s == NATS_OK) s = natsConnection_Connect(nc, opts);
  natsOptions_Destroy(opts);
  if (s == NATS_OK) s = natsConnection_JetStream(js, *nc, nullptr);
  if (s != NATS_OK) Die("jetstream connect: " + NatsText(s, static_cast<jsErrCode>(0)));
}

void DeleteStream(jsCtx* js, const std::string& stream) {
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_DeleteStream(js, stream.c_str(), nullptr, &jerr);
  // A stream left behind costs the rest of the run a little; not the run.
  if (s != NATS_OK) {
    std::fprintf(stderr, "bench: warning: jetstream js_DeleteStream %s: %s\n", stream.c_str(),
                 NatsText(s, jerr).c_str());
  }
}

class JsWriter : public PeerWriter {
 public:
  // `delivered`: null, or the consumer whose delivery of each message a
  // request waits for.
  JsWriter(jsCtx* js, std::string subject, std::string stream, uint64_t seed, Delivered* delivered)
      : js_(js),
        subject_(std::move(subject)),
        stream_(std::move(stream)),
        rng_(seed),
        delivered_(delivered) {}

  void Append(const std::string& stream, int64_t /*expected*/,
              absl::Span<const std::string> payloads) override {
    body_.assign(stream);
    for (const std::string& p : payloads) {
      for (int i = 0; i < 2; ++i) {
        const uint64_t r = rng_();
        body_.append(reinterpret_cast<const char*>(&r), sizeof(r));
      }
      body_.append(kEventType);
      body_.append(p);
    }
    const std::string msg_id = absl::StrFormat("%016x%016x", rng_(), rng_());
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id.c_str();
    po.ExpectStream = stream_.c_str();
    po.MaxWait = kPublishWaitMs;
    jsPubAck* ack = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_Publish(&ack, js_, subject_.c_str(), body_.data(),
                              static_cast<int>(body_.size()), &po, &jerr);
    if (s != NATS_OK) Die("jetstream js_Publish: " + NatsText(s, jerr));
    const uint64_t sequence = ack->Sequence;
    jsPubAck_Destroy(ack);
    if (delivered_ != nullptr) delivered_->Await(sequence);
  }

  bool AppendIdempotent(const std::string& /*stream*/, int64_t /*expected*/,
                        const std::string& /*payload*/, const std::string& /*key*/) override {
    Die("jetstream: no idempotent workload (append workloads only)");
  }

 private:
  jsCtx* const js_;
  const std::string subject_, stream_;
  std::mt19937_64 rng_;
  Delivered* const delivered_;
  std::string body_;
};

class JetStreamPeer : public Peer {
 public:
  JetStreamPeer(std::string name, std::vector<std::string> servers, int replicas, bool receive)
      : name_(std::move(name)),
        servers_(std::move(servers)),
        replicas_(replicas),
        receive_(receive) {}
  ~JetStreamPeer() override { Close(); }

  std::string name() const override { return name_; }
  bool replicated() const override { return true; }

  void OpenFresh(const std::string& tag) override {
    Close();
    Connect();
    ++count_;
    stream_ = absl::StrFormat("%s_%s_%d", name_, tag, count_);
    subject_ = "bench." + stream_;
    AddStream();
    if (receive_) Follow();
    // Untimed: the new stream's first message waits for its leader.
    NewWriter()->Append("warmup", -1, {Payload(0)});
  }

  std::unique_ptr<PeerWriter> NewWriter() override {
    return std::make_unique<JsWriter>(js_, subject_, stream_, ++seed_,
                                      receive_ ? delivered_.get() : nullptr);
  }

  void LoadReadLog(uint64_t /*events*/, ReadLayout /*layout*/) override { NoReads(); }
  uint64_t ReadAll(uint64_t* /*sum*/) override { NoReads(); }
  uint64_t ReadStream(const std::string& /*stream*/, uint64_t* /*sum*/) override { NoReads(); }
  uint64_t ReadSlice(const std::string& /*stream*/, int64_t /*from*/, int /*count*/,
                     uint64_t* /*sum*/) override {
    NoReads();
  }
  double BytesPerEvent() override { return -1; }
  void Close() override {
    Unfollow();
    if (!stream_.empty() && js_ != nullptr) DeleteStream(js_, stream_);
    stream_.clear();
    Disconnect();
  }

 private:
  [[noreturn]] void NoReads() const { Die(name_ + ": append workloads only"); }

  void Connect() { ConnectTo(servers_, &nc_, &js_); }

  // A new ordered push consumer of the stream from its start, as the
  // node's applier follows it (replica's heartbeat included); each message
  // delivered marks its sequence and is dropped.
  void Follow() {
    Unfollow();
    delivered_ = std::make_unique<Delivered>();
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream_.c_str();
    so.Ordered = true;
    so.Config.Heartbeat = 1'000'000'000;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_Subscribe(
        &sub_, js_, subject_.c_str(),
        [](natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
          jsMsgMetaData* meta = nullptr;
          if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
            static_cast<Delivered*>(closure)->Set(meta->Sequence.Stream);
            jsMsgMetaData_Destroy(meta);
          }
          natsMsg_Destroy(msg);
        },
        delivered_.get(), nullptr, &so, &jerr);
    if (s != NATS_OK) Die("jetstream js_Subscribe: " + NatsText(s, jerr));
  }

  void Unfollow() {
    if (sub_ == nullptr) return;
    natsSubscription_Unsubscribe(sub_);
    natsSubscription_Destroy(sub_);
    sub_ = nullptr;
  }

  void Disconnect() {
    Unfollow();
    if (js_ != nullptr) jsCtx_Destroy(js_);
    if (nc_ != nullptr) natsConnection_Destroy(nc_);
    js_ = nullptr;
    nc_ = nullptr;
  }

  // The stream as rill's EnsureStream makes it (file storage, R replicas),
  // tried again until kStreamReadyTimeout: right after the servers start,
  // JetStream may not be able to place R replicas yet.
  void AddStream() {
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = stream_.c_str();
    const char* subjects[] = {subject_.c_str()};
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = replicas_;
    cfg.DenyDelete = true;
    cfg.DenyPurge = true;
    const absl::Time deadline = absl::Now() + kStreamReadyTimeout;
    for (;;) {
      jsStreamInfo* si = nullptr;
      jsErrCode jerr = static_cast<jsErrCode>(0);
      natsStatus s = js_AddStream(&si, js_, &cfg, nullptr, &jerr);
      if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return;
      }
      if (absl::Now() > deadline) Die("jetstream js_AddStream: " + NatsText(s, jerr));
      absl::SleepFor(absl::Milliseconds(200));
    }
  }

  const std::string name_;
  const std::vector<std::string> servers_;
  const int replicas_;
  const bool receive_;
  natsConnection* nc_ = nullptr;
  natsSubscription* sub_ = nullptr;
  std::unique_ptr<Delivered> delivered_;
  jsCtx* js_ = nullptr;
  int count_ = 0;
  uint64_t seed_ = 0;
  std::string stream_, subject_;
};

}  // namespace

void DeleteJetStream(const std::vector<std::string>& servers, const std::string& stream) {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  ConnectTo(servers, &nc, &js);
  DeleteStream(js, stream);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
}

std::unique_ptr<Peer> NewJetStreamPeer(const std::string& name,
                                       const std::vector<std::string>& servers, int replicas,
                                       bool receive) {
  return std::make_unique<JetStreamPeer>(name, servers, replicas, receive);
}

}  // namespace rill::bench
