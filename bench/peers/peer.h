// The systems bench/compare measures side by side, behind one small
// interface so that every workload drives rill (embedded and replicated),
// raw LMDB, SQLite and Message DB through exactly the same loop.
//
// A Peer owns one store at a time: an empty one for an append workload
// (OpenFresh), or the read log (LoadReadLog). Writers are per thread: for
// the client/server peer each has its own connection. Every method dies
// (bench::Die) on an unexpected error: a benchmark that silently measured a
// failure would be worse than none.
#ifndef RILL_BENCH_PEERS_PEER_H_
#define RILL_BENCH_PEERS_PEER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "rill/event.h"
#include "rill/expected_version.h"

namespace rill {
class Store;
}  // namespace rill

namespace rill::bench {

inline constexpr const char* kEventType = "OrderLinePlaced";

// The read log every peer loads the same way (see compare.cc): `events`
// events (a multiple of 1000) over kBigStream and kSmallStreams small streams
// named SmallStream(i), in one of two layouts (ReadLayout). A tenth of the
// events go to kBigStream in both.
inline constexpr int kReadBatch = 100;
inline constexpr int kSmallStreams = 999;
inline constexpr const char* kBigStream = "order-big";
std::string SmallStream(int i);
// The stream of read-log batch `b` (0-based) in the kRuns layout, as its
// index in [0, kSmallStreams] (kSmallStreams stands for kBigStream).
int StreamSlotOfBatch(uint64_t b);
std::string StreamOfSlot(int slot);

// How the read log spreads a stream's events over the log. kRuns: batches of
// kReadBatch consecutive positions, every 10th batch to kBigStream, the
// others round robin over the small streams (a stream reader steps from one
// event to the next). kInterleaved: event by event, as a live system writes
// its streams side by side.
enum class ReadLayout { kRuns, kInterleaved };
// The stream slot (see StreamOfSlot) of read-log event `i` (0-based) in `layout`.
// kRuns: StreamSlotOfBatch(i / kReadBatch). kInterleaved: every 10th event (i % 10 == 0)
// to kBigStream, the others round robin over the kSmallStreams small streams
// ((i - i / 10 - 1) % kSmallStreams), so order-big holds n/10 events ten positions apart,
// as many as in kRuns.
int StreamSlotOfEvent(uint64_t i, ReadLayout layout);

// What a reader touches of each event, so that no read is optimized away:
// the position, the payload size, the first and last payload byte.
inline uint64_t Touch(uint64_t position, absl::string_view payload) {
  return position + payload.size() +
         (payload.empty() ? 0
                          : static_cast<unsigned char>(payload.front()) +
                                static_cast<unsigned char>(payload.back()));
}

// The expected version of a workload's request: -1 (no stream yet) is
// NoStream, n is Exact(n).
inline ExpectedVersion ExpectedOf(int64_t last) {
  return last < 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(last);
}

// `events` becomes one kEventType event per payload (the rill-API peers'
// request; the vector is reused across calls).
inline void FillEvents(absl::Span<const std::string> payloads, std::vector<EventData>* events) {
  events->resize(payloads.size());
  for (size_t i = 0; i < payloads.size(); ++i) {
    (*events)[i].type = kEventType;
    (*events)[i].payload = payloads[i];
  }
}

class PeerWriter {
 public:
  virtual ~PeerWriter() = default;
  // Appends `payloads` (one event each, type kEventType) to `stream` in one
  // durable transaction, expecting the stream's last version to be
  // `expected` (-1: the stream does not exist yet). Dies on a conflict.
  virtual void Append(const std::string& stream, int64_t expected,
                      absl::Span<const std::string> payloads) = 0;
  // One event with an idempotency key: the first request with `key` writes;
  // a retry of the same request writes nothing and returns true
  // (deduplicated), even though the stream has moved on since.
  virtual bool AppendIdempotent(const std::string& stream, int64_t expected,
                                const std::string& payload, const std::string& key) = 0;
};

class Peer {
 public:
  virtual ~Peer() = default;
  virtual std::string name() const = 0;

  // Closes any store and opens a new, empty, durable one for an append
  // workload; `tag` names it.
  virtual void OpenFresh(const std::string& tag) = 0;
  // A writer with its own connection/handle, for one thread.
  virtual std::unique_ptr<PeerWriter> NewWriter() = 0;
  // The writer the workloads use for thread `thread` of `threads`: by
  // default NewWriter(); a peer of several nodes spreads them over its nodes.
  virtual std::unique_ptr<PeerWriter> NewThreadWriter(int /*thread*/, int /*threads*/) {
    return NewWriter();
  }
  // Replicated rill and JetStream alone: the plain append workloads
  // (append_b*, concurrent16) run on them, not `idempotent`.
  virtual bool replicated() const { return false; }
  // Whether the read workloads run on the peer (its LoadReadLog and read
  // methods die otherwise).
  virtual bool reads() const { return !replicated(); }

  // Closes any store and loads the read log of `events` events in `layout`
  // (the fastest way the peer offers; durability does not matter for reads),
  // then makes it the open store. Event i (the i-th position of the log) goes
  // to StreamOfSlot(StreamSlotOfEvent(i, layout)); each stream's versions are
  // 0, 1, 2, ... in position order.
  virtual void LoadReadLog(uint64_t events, ReadLayout layout) = 0;
  // Reads the whole log forwards; returns the number of events read and adds
  // Touch() of each to *sum.
  virtual uint64_t ReadAll(uint64_t* sum) = 0;
  // raw LMDB only (a diagnostic): ReadAll that also hashes every value with
  // XXH3-64, what verifying a checksum per record costs on its own; 0 for
  // the other peers.
  virtual uint64_t ReadAllHashed(uint64_t* /*sum*/) { return 0; }
  // Reads one whole stream forwards (number of events read).
  virtual uint64_t ReadStream(const std::string& stream, uint64_t* sum) = 0;
  // Reads `count` events of `stream` from version `from`.
  virtual uint64_t ReadSlice(const std::string& stream, int64_t from, int count, uint64_t* sum) = 0;
  // Bytes the read log takes at rest, per event (data and indexes; no WAL).
  virtual double BytesPerEvent() = 0;
  // rill only (embedded, and a replicated node that reads()): seconds a new
  // projection with a trivial Apply takes to catch up with the read log.
  virtual bool projections() const { return false; }
  virtual double ProjectionCatchUpSeconds() { return -1; }
  // rill only: closes the store opened by the last OpenFresh and returns
  // `events` (appended since) per write transaction it committed; negative
  // for the other peers.
  virtual double CloseAndCountEventsPerCommit(uint64_t /*events*/) { return -1; }
  // Frees the store (end of the run).
  virtual void Close() = 0;
};

std::unique_ptr<Peer> NewRillPeer(const std::string& dir);
// The read side of both rill peers (rill_peer.cc), through the public API on
// an open store: LoadReadLog's log appended to `store` (one request per
// kReadBatch events or per run of a stream, AppendMulti for interleaved
// runs), and the reads of Peer.
void LoadRillReadLog(Store* store, uint64_t events, ReadLayout layout);
uint64_t RillReadAll(Store* store, uint64_t* sum);
// `limit` 0: to the end of the stream.
uint64_t RillScanStream(Store* store, const std::string& stream, int64_t from, int limit,
                        uint64_t* sum);
double RillBytesPerEvent(Store* store);
// A new projection `name` with a trivial Apply over the store's `events`.
double RillProjectionCatchUpSeconds(Store* store, uint64_t events, const std::string& name);
// rill replicated over NATS JetStream (repl_peer.cc): `nodes` (1 or 2) node
// directories under `dir` of one fresh stream per OpenFresh, with `replicas`
// replicas, on the cluster of `servers` (nats:// URLs). `name` is the
// system's name in the results.
std::unique_ptr<Peer> NewReplicatedRillPeer(const std::string& name, const std::string& dir,
                                            const std::vector<std::string>& servers, int replicas,
                                            int nodes);
// JetStream alone (jetstream_peer.cc): one synchronous publish per request
// to a fresh stream of `replicas` replicas per OpenFresh, no rill: the floor
// under the replicated store's append figures. `receive`: an ordered push
// consumer follows the stream and a request also waits for its message to
// come back through it, as a node's must.
std::unique_ptr<Peer> NewJetStreamPeer(const std::string& name,
                                       const std::vector<std::string>& servers, int replicas,
                                       bool receive);
// Deletes JetStream stream `stream` on the cluster of `servers` (both
// replicated peers, when a workload is done with its fresh stream): a real
// node has one stream, and the dozens a run makes would otherwise all keep
// their Raft groups (heartbeats, leader checks) busy on the same two CPUs
// for the rest of the run. Warns when it cannot.
void DeleteJetStream(const std::vector<std::string>& servers, const std::string& stream);
std::unique_ptr<Peer> NewLmdbPeer(const std::string& dir);
// The segment-log prototype of issue 15 (bench/seglog, docs/segment-log.md).
std::unique_ptr<Peer> NewSeglogPeer(const std::string& dir);
std::unique_ptr<Peer> NewSqlitePeer(const std::string& dir);
// libpq connection strings of the message_store database: as the
// message_store role (the application's) and as a superuser (for loading,
// truncating and CHECKPOINT).
std::unique_ptr<Peer> NewMessageDbPeer(const std::string& app_conninfo,
                                       const std::string& admin_conninfo);

}  // namespace rill::bench

#endif  // RILL_BENCH_PEERS_PEER_H_
