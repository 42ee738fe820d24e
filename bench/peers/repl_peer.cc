// rill replicated over NATS JetStream (rill/replication.h), through the same
// public Store API as the embedded peer: one or two nodes of one JetStream
// stream, each node a directory opened as its own Store in this process
// (its own NATS connection, publisher and applier).
//
// An append returns once JetStream has stored its message (acknowledged by
// the stream leader after a quorum of the stream's R replicas has it) and
// the appending node's replica has applied it (Durability::kDurable with the
// default ReplicationOptions: the replica does not fsync and is rebuilt from
// JetStream after an OS crash). nats-server 2.9 syncs its file store to disk
// only every 2 minutes (an internal SyncInterval, not a server option in
// 2.9), so a replicated append's durability is the quorum's.
//
// Every OpenFresh makes a new stream (and new node directories), waits until
// JetStream can place it (the cluster may still be forming on the first
// one), and appends one untimed event per node to a stream of its own and
// waits until every node has applied it, so no figure includes the stream's
// leader election.
//
// Two nodes: concurrent16's threads alternate between the nodes (threads 0,
// 2, ... on the first); a single writer (append_b*) alternates its requests
// between them. Every request names its expected version, checked when its
// message is applied, in JetStream's order; a writer sends a request only
// after its previous one returned and no two writers share a stream, so
// these workloads have no conflicts (one would die, as in every peer).
#include <memory>
#include <string>
#include <vector>

#include "../bench_util.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "peer.h"
#include "rill/replication.h"
#include "rill/store.h"

namespace rill::bench {
namespace {

constexpr absl::Duration kStreamReadyTimeout = absl::Seconds(30);

// A writer of one thread: its requests go to `stores` in turn (one store:
// always that one).
class ReplWriter : public PeerWriter {
 public:
  explicit ReplWriter(std::vector<Store*> stores) : stores_(std::move(stores)) {}

  void Append(const std::string& stream, int64_t expected,
              absl::Span<const std::string> payloads) override {
    FillEvents(payloads, &events_);
    absl::StatusOr<AppendResult> r = Next()->Append(stream, ExpectedOf(expected), events_);
    if (!r.ok()) Die("rill replicated Append: " + r.status().ToString());
  }

  bool AppendIdempotent(const std::string& stream, int64_t expected, const std::string& payload,
                        const std::string& key) override {
    FillEvents(absl::MakeConstSpan(&payload, 1), &events_);
    AppendOptions options;
    options.idempotency_key = key;
    absl::StatusOr<AppendResult> r = Next()->Append(stream, ExpectedOf(expected), events_, options);
    if (!r.ok()) Die("rill replicated Append (idempotent): " + r.status().ToString());
    return r->deduplicated;
  }

 private:
  Store* Next() {
    Store* s = stores_[next_];
    next_ = (next_ + 1) % stores_.size();
    return s;
  }

  const std::vector<Store*> stores_;
  size_t next_ = 0;
  std::vector<EventData> events_;
};

class ReplicatedRillPeer : public Peer {
 public:
  ReplicatedRillPeer(std::string name, std::string dir, std::vector<std::string> servers,
                     int replicas, int nodes)
      : name_(std::move(name)),
        dir_(std::move(dir)),
        servers_(std::move(servers)),
        replicas_(replicas),
        nodes_(nodes) {}
  ~ReplicatedRillPeer() override { Close(); }

  std::string name() const override { return name_; }
  bool replicated() const override { return true; }

  // Reads run on one of the configurations (R=3, one node): a node reads
  // its local replica with embedded rill's code, and this shows what that
  // costs next to embedded rill.
  bool reads() const override { return nodes_ == 1 && replicas_ == 3; }
  bool projections() const override { return reads(); }

  void OpenFresh(const std::string& tag) override { OpenNodes(tag); }

  std::unique_ptr<PeerWriter> NewWriter() override { return NewThreadWriter(0, 1); }
  std::unique_ptr<PeerWriter> NewThreadWriter(int thread, int threads) override {
    std::vector<Store*> stores;
    if (threads == 1) {
      for (auto& s : stores_) stores.push_back(s.get());
    } else {
      stores.push_back(stores_[thread % stores_.size()].get());
    }
    return std::make_unique<ReplWriter>(std::move(stores));
  }

  // Events per JetStream message (one message per group-commit batch of a
  // node) since OpenFresh.
  double CloseAndCountEventsPerCommit(uint64_t events) override {
    if (stores_.empty()) return -1;
    const uint64_t messages = StreamLastSequence() - base_sequence_;
    Close();
    return messages > 0 ? static_cast<double>(events) / messages : -1;
  }

  // The read log appended through JetStream to a node of a new stream
  // (untimed; each append returns once the node's replica applied it), then
  // read from the replica.
  void LoadReadLog(uint64_t events, ReadLayout layout) override {
    OpenNodes("read", /*warm_up=*/false);
    LoadRillReadLog(Reader(), events, layout);
    events_ = events;
  }
  uint64_t ReadAll(uint64_t* sum) override { return RillReadAll(Reader(), sum); }
  uint64_t ReadStream(const std::string& stream, uint64_t* sum) override {
    return RillScanStream(Reader(), stream, 0, 0, sum);
  }
  uint64_t ReadSlice(const std::string& stream, int64_t from, int count, uint64_t* sum) override {
    return RillScanStream(Reader(), stream, from, count, sum);
  }
  double BytesPerEvent() override { return RillBytesPerEvent(Reader()); }
  double ProjectionCatchUpSeconds() override {
    return RillProjectionCatchUpSeconds(Reader(), events_,
                                        absl::StrFormat("catchup-%d", ++projections_));
  }

  void Close() override {
    stores_.clear();
    if (!stream_.empty()) DeleteJetStream(servers_, stream_);
    stream_.clear();
  }

 private:
  // A new stream (tagged `tag`) and `nodes_` new node directories of it,
  // open. `warm_up`: each node appends an untimed event to a stream of its
  // own and waits until every node has applied them.
  void OpenNodes(const std::string& tag, bool warm_up = true) {
    Close();
    ++count_;
    ReplicationOptions repl;
    repl.servers = servers_;
    repl.replicas = replicas_;
    repl.stream = absl::StrFormat("%s_%s_%d", name_, tag, count_);  // [A-Za-z0-9_-]
    stream_ = repl.stream;
    StoreOptions options;
    options.durability = Durability::kDurable;
    for (int n = 0; n < nodes_; ++n) {
      const std::string dir = absl::StrFormat("%s/%s-%d/node%d", dir_, tag, count_, n);
      InitNode(dir, repl);
      absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir, options);
      if (!store.ok()) Die("rill replicated Store::Open: " + store.status().ToString());
      stores_.push_back(*std::move(store));
    }
    if (!warm_up) return;
    // Untimed: the new stream's first message waits for its leader.
    std::vector<EventData> warm(1);
    warm[0].type = kEventType;
    warm[0].payload = Payload(0);
    for (int n = 0; n < nodes_; ++n) {
      absl::StatusOr<AppendResult> r =
          stores_[n]->Append(absl::StrFormat("warmup-%d", n), ExpectedVersion::Any(), warm);
      if (!r.ok()) Die("rill replicated warm-up Append: " + r.status().ToString());
    }
    for (auto& store : stores_) {
      absl::Status s = WaitForReplica(store.get(), absl::Seconds(30));
      if (!s.ok()) Die("rill replicated WaitForReplica: " + s.ToString());
    }
    base_sequence_ = StreamLastSequence();
  }

  // InitReplicatedNode, tried again until kStreamReadyTimeout: right after
  // the servers start, JetStream may have no meta leader yet, or one that
  // cannot place R replicas yet. Nothing is created on disk when the
  // stream cannot be.
  void InitNode(const std::string& dir, const ReplicationOptions& repl) {
    const absl::Time deadline = absl::Now() + kStreamReadyTimeout;
    for (;;) {
      absl::Status s = InitReplicatedNode(dir, repl);
      if (s.ok()) return;
      if (absl::Now() > deadline) Die("rill InitReplicatedNode " + dir + ": " + s.ToString());
      absl::SleepFor(absl::Milliseconds(200));
    }
  }

  Store* Reader() {
    if (stores_.empty()) Die(name_ + ": no read log loaded");
    return stores_.front().get();
  }

  uint64_t StreamLastSequence() {
    absl::StatusOr<ReplicationStatus> st = GetReplicationStatus(stores_.front().get());
    if (!st.ok() || !st->reachable) {
      Die("rill GetReplicationStatus: " + (st.ok() ? st->error : st.status().ToString()));
    }
    return st->stream_last_sequence;
  }

  const std::string name_, dir_;
  const std::vector<std::string> servers_;
  const int replicas_, nodes_;
  int count_ = 0;
  uint64_t events_ = 0;  // of the read log
  int projections_ = 0;  // made on it, each named anew
  uint64_t base_sequence_ = 0;
  std::string stream_;  // the open one's, deleted at Close
  std::vector<std::unique_ptr<Store>> stores_;
};

}  // namespace

std::unique_ptr<Peer> NewReplicatedRillPeer(const std::string& name, const std::string& dir,
                                            const std::vector<std::string>& servers, int replicas,
                                            int nodes) {
  return std::make_unique<ReplicatedRillPeer>(name, dir, servers, replicas, nodes);
}

}  // namespace rill::bench
