#include "replicated_store.h"

#include <algorithm>
#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "group_commit_wait.h"
#include "nats_link.h"
#include "repl_codec.h"
#include "replica.h"
#include "replica_marker.h"
#include "store_impl.h"
#include "writer.h"

namespace rill::internal {
namespace {

// Most messages the applier applies in one LMDB transaction (one commit).
constexpr size_t kMaxApplyMessages = 256;
// How long one publish attempt waits for JetStream's acknowledgement.
constexpr absl::Duration kPublishAttempt = absl::Seconds(2);
// How long the applier waits for a message before it checks whether it is
// stuck behind the stream.
constexpr absl::Duration kStallCheck = absl::Seconds(2);
// A transaction's encoding beyond its payload bytes: per event (envelope,
// id, type), per part and per request. Used to cut batches below
// max_message_bytes before encoding; an encoding that still comes out too
// big is split again.
constexpr size_t kEventOverhead = 96;
constexpr size_t kRequestOverhead = 128;

size_t EstimatedBytes(const AppendRequest& r) {
  size_t bytes = kRequestOverhead + r.idempotency_key.size() + r.bytes;
  for (const RequestPart& p : r.parts) {
    bytes += p.stream.size() + 32;
    for (const EventData& e : p.events) bytes += kEventOverhead + e.type.size();
  }
  return bytes;
}

std::string TxKey(const EventId& txid) {
  return std::string(reinterpret_cast<const char*>(txid.bytes().data()), txid.bytes().size());
}

class ReplicatedStore final : public Store {
 public:
  // `marker`: null when the replica fsyncs its commits.
  ReplicatedStore(std::unique_ptr<ReplicaMarker> marker, std::unique_ptr<StoreImpl> local,
                  std::unique_ptr<Replica> replica, std::unique_ptr<NatsLink> link,
                  ReplicationOptions repl, EventId node)
      : marker_(std::move(marker)),
        local_(std::move(local)),
        replica_(std::move(replica)),
        link_(std::move(link)),
        repl_(std::move(repl)),
        subject_(repl_.effective_subject()),
        node_(node),
        commit_wait_(repl_.group_commit_wait) {
    publisher_ = std::thread([this] { PublishLoop(); });
    applier_ = std::thread([this] { ApplyLoop(); });
  }

  ~ReplicatedStore() override {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    publisher_.join();
    applier_.join();
    if (marker_ != nullptr) {
      // The last process of the node makes the replica durable and marks it
      // clean: a reboot then keeps it.
      marker_->Release([this]() -> absl::Status {
        const int rc = mdb_env_sync(local_->core()->log_env()->env(), 1);
        if (rc != 0) return LmdbError(rc, "syncing the replica");
        return absl::OkStatus();
      });
    }
  }

  absl::StatusOr<AppendResult> Append(absl::string_view stream, ExpectedVersion expected,
                                      absl::Span<const EventData> events,
                                      const AppendOptions& options) override {
    std::vector<RequestPart> parts{RequestPart{stream, expected, events}};
    absl::StatusOr<std::vector<AppendResult>> results = Submit(std::move(parts), options);
    if (!results.ok()) return results.status();
    return std::move(results->front());
  }
  absl::StatusOr<std::vector<AppendResult>> AppendMulti(absl::Span<const StreamAppend> appends,
                                                        const AppendOptions& options) override {
    absl::StatusOr<std::vector<RequestPart>> parts = MultiParts(appends);
    if (!parts.ok()) return parts.status();
    return Submit(*std::move(parts), options);
  }

  // Everything else is the local replica's.
  absl::StatusOr<std::vector<RecordedEvent>> ReadStream(absl::string_view stream,
                                                        int64_t from_version,
                                                        const ReadOptions& options) override {
    return local_->ReadStream(stream, from_version, options);
  }
  absl::StatusOr<std::vector<RecordedEvent>> ReadAll(uint64_t from_position,
                                                     const ReadOptions& options) override {
    return local_->ReadAll(from_position, options);
  }
  absl::Status ScanAll(uint64_t from_position, const ReadOptions& options,
                       absl::FunctionRef<bool(const EventView&)> fn) override {
    return local_->ScanAll(from_position, options, fn);
  }
  absl::Status ScanStream(absl::string_view stream, int64_t from_version,
                          const ReadOptions& options,
                          absl::FunctionRef<bool(const EventView&)> fn) override {
    return local_->ScanStream(stream, from_version, options, fn);
  }
  absl::StatusOr<StreamInfo> GetStreamInfo(absl::string_view stream) override {
    return local_->GetStreamInfo(stream);
  }
  absl::StatusOr<std::vector<StreamInfo>> ListStreams(absl::string_view prefix, size_t limit,
                                                      absl::string_view start_after) override {
    return local_->ListStreams(prefix, limit, start_after);
  }
  absl::StatusOr<uint64_t> HeadPosition() override { return local_->HeadPosition(); }
  absl::StatusOr<uint64_t> WaitForHead(uint64_t known_head, absl::Duration timeout,
                                       absl::Duration poll_interval) override {
    return local_->WaitForHead(known_head, timeout, poll_interval);
  }
  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(uint64_t after_position,
                                                          SubscriptionOptions options,
                                                          SubscriptionHandler handler) override {
    return local_->Subscribe(after_position, std::move(options), std::move(handler));
  }
  absl::StatusOr<StoreStats> Stats() override { return local_->Stats(); }
  absl::StatusOr<unsigned> ClearStaleReaders() override { return local_->ClearStaleReaders(); }
  const std::string& dir() const override { return local_->dir(); }
  const std::string& store_id() const override { return local_->store_id(); }
  StoreCore* core() override { return local_->core(); }

 private:
  // One caller's request, shared by the caller (who may give up waiting)
  // and the threads that complete it.
  struct Pending {
    AppendRequest request;
    size_t estimated_bytes = 0;
    enum class Stage { kQueued, kPublishing, kStored } stage = Stage::kQueued;
    uint64_t sequence = 0;  // kStored: the JetStream sequence
    // Under mu_: the publisher is encoding the request, which reads the
    // caller's events (RequestPart points into them): a caller that gives
    // up waits until it is done before it returns.
    bool encoding = false;
    bool done = false;  // under mu_; then `result` is set, for good
    absl::StatusOr<std::vector<AppendResult>> result;
    // Notified when `done` is set: the caller waits on this alone, so a
    // completed batch wakes its callers at once, not through mu_.
    absl::Notification completed;
  };
  using Batch = std::vector<std::shared_ptr<Pending>>;

  absl::StatusOr<std::vector<AppendResult>> Submit(std::vector<RequestPart> parts,
                                                   const AppendOptions& options);
  // Submit's work for a prepared request: its outcome.
  absl::StatusOr<std::vector<AppendResult>> Outcome(const std::shared_ptr<Pending>& pending);
  void PublishLoop();
  void ApplyLoop();
  void CompleteLocked(Pending* p, absl::StatusOr<std::vector<AppendResult>> result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (p->done) return;
    p->done = true;
    p->result = std::move(result);
    p->completed.Notify();
  }
  // Fails the registered transactions stored at sequences in
  // [first, last] whose outcome is still missing: the replica could not
  // apply them.
  void FailStored(uint64_t first, uint64_t last, const absl::Status& why) ABSL_LOCKS_EXCLUDED(mu_);

  const std::unique_ptr<ReplicaMarker> marker_;
  const std::unique_ptr<StoreImpl> local_;
  const std::unique_ptr<Replica> replica_;
  const std::unique_ptr<NatsLink> link_;
  const ReplicationOptions repl_;
  const std::string subject_;
  const EventId node_;

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // estimated, of queue_
  GroupCommitWait commit_wait_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<Pending>> queue_ ABSL_GUARDED_BY(mu_);
  // Published (or being published) transactions by txid, until the applier
  // has their outcome or the publish failed.
  absl::flat_hash_map<std::string, Batch> in_flight_ ABSL_GUARDED_BY(mu_);

  std::thread publisher_;
  std::thread applier_;
};

absl::StatusOr<std::vector<AppendResult>> ReplicatedStore::Submit(std::vector<RequestPart> parts,
                                                                  const AppendOptions& options) {
  auto pending = std::make_shared<Pending>();
  if (absl::Status s = PrepareRequest(std::move(parts), options, &pending->request); !s.ok()) {
    return s;
  }
  // Counted as the embedded writer counts a request it checked (only the
  // publishing node counts it; every node's applier counts its commits).
  pending->request.result = Outcome(pending);
  CountRequestOutcome(&local_->core()->metrics(), pending->request);
  return std::move(pending->request.result);
}

absl::StatusOr<std::vector<AppendResult>> ReplicatedStore::Outcome(
    const std::shared_ptr<Pending>& pending) {
  // A key the replica already holds is answered here: any later message
  // with it would be deduplicated (or refused) the same way on every node,
  // so this is the answer JetStream's order would give, without a round
  // trip, and also while NATS is unreachable.
  if (!pending->request.idempotency_key.empty()) {
    absl::StatusOr<Txn> txn = local_->core()->log_env()->BeginRead();
    if (!txn.ok()) return txn.status();
    bool found = false;
    if (absl::Status s = LookUpIdempotencyKey(txn->get(), local_->core()->dbs().idempotency,
                                              &pending->request, &found);
        !s.ok()) {
      return s;
    }
    if (found) return std::move(pending->request.result);
  }
  pending->estimated_bytes = EstimatedBytes(pending->request);
  if (pending->estimated_bytes > repl_.max_message_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the append request needs about ", pending->estimated_bytes,
                     " bytes as a JetStream message, above the node's max_message_bytes (",
                     repl_.max_message_bytes, ")"));
  }
  const absl::Time deadline = absl::Now() + repl_.append_timeout;
  Pending* p = pending.get();
  p->request.caller = std::this_thread::get_id();
  {
    absl::MutexLock lock(&mu_);
    commit_wait_.Returned(p->request.caller);
    queued_bytes_ += p->estimated_bytes;
    queue_.push_back(pending);
  }
  // The publisher and the applier give up on their own at the deadline; the
  // slack covers the hand-over.
  // (WithTimeout, not WithDeadline: the one tests/tsan annotates.)
  if (p->completed.WaitForNotificationWithTimeout(deadline + absl::Seconds(1) - absl::Now())) {
    return std::move(p->result);
  }
  absl::MutexLock lock(&mu_);
  auto encoded = [p]() { return !p->encoding; };
  mu_.Await(absl::Condition(&encoded));      // microseconds: see Pending::encoding
  if (p->done) return std::move(p->result);  // completed just now
  switch (p->stage) {
    case Pending::Stage::kQueued:
      queue_.erase(std::find(queue_.begin(), queue_.end(), pending));
      queued_bytes_ -= p->estimated_bytes;
      p->done = true;
      return absl::UnavailableError(absl::StrCat("NATS JetStream did not take the append within ",
                                                 absl::FormatDuration(repl_.append_timeout),
                                                 "; it was not published"));
    case Pending::Stage::kPublishing:
      p->done = true;
      return absl::UnavailableError(
          "the append's outcome is unknown: it was published but JetStream has not acknowledged "
          "it; a retry with the same idempotency key is safe");
    case Pending::Stage::kStored:
      p->done = true;
      return absl::UnavailableError(absl::StrCat(
          "the append is stored in JetStream (sequence ", p->sequence,
          ") but this node's replica has not applied it yet; it will be, and a retry with the same "
          "idempotency key is safe"));
  }
  return absl::InternalError("unreachable");
}

void ReplicatedStore::PublishLoop() {
  for (;;) {
    Batch batch;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (stop_) {
        for (auto& p : queue_) {
          CompleteLocked(p.get(), absl::CancelledError("the store is closing"));
        }
        queue_.clear();
        queued_bytes_ = 0;
        return;
      }
      // The callers of the last message are on their way back with their
      // next requests: waiting for them makes one full message instead of
      // two, which a JetStream cluster stores in about the same time
      // (docs/replication.md).
      commit_wait_.Await(mu_, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || queued_bytes_ >= repl_.max_message_bytes;
      });
      // (Callers that gave up meanwhile took their requests back.)
      if (stop_ || queue_.empty()) continue;
      size_t bytes = 0;
      while (!queue_.empty() && (batch.empty() || bytes + queue_.front()->estimated_bytes <=
                                                      repl_.max_message_bytes)) {
        bytes += queue_.front()->estimated_bytes;
        queue_.front()->stage = Pending::Stage::kPublishing;
        queue_.front()->encoding = true;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      queued_bytes_ -= bytes;
      // Requests of one caller are one at a time: none of these callers
      // can be back before its request is answered.
      commit_wait_.Took();
      for (const auto& p : batch) commit_wait_.Carried(p->request.caller);
    }
    std::vector<AppendRequest*> requests;
    for (auto& p : batch) requests.push_back(&p->request);
    const EventId txid = EventId::Random();
    std::string data = EncodeTransaction(txid, node_, absl::ToUnixMicros(absl::Now()), requests);
    while (data.size() > repl_.max_message_bytes && batch.size() > 1) {
      // The estimate was short: put the second half back and try again.
      absl::MutexLock lock(&mu_);
      const size_t keep = batch.size() / 2;
      for (size_t i = batch.size(); i-- > keep;) {
        batch[i]->stage = Pending::Stage::kQueued;
        batch[i]->encoding = false;
        queued_bytes_ += batch[i]->estimated_bytes;
        commit_wait_.Returned(batch[i]->request.caller);  // queued again: not awaited
        queue_.push_front(std::move(batch[i]));
      }
      batch.resize(keep);
      requests.resize(keep);
      data = EncodeTransaction(txid, node_, absl::ToUnixMicros(absl::Now()), requests);
    }
    if (data.size() > repl_.max_message_bytes) {
      absl::MutexLock lock(&mu_);
      batch.front()->encoding = false;
      CompleteLocked(batch.front().get(),
                     absl::InvalidArgumentError(absl::StrCat(
                         "the append request is ", data.size(),
                         " bytes as a JetStream message, above the node's max_message_bytes (",
                         repl_.max_message_bytes, ")")));
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      for (auto& p : batch) p->encoding = false;
      in_flight_[TxKey(txid)] = batch;
    }
    absl::StatusOr<uint64_t> sequence =
        link_->PublishRetrying(subject_, repl_.stream, txid.ToString(), data, repl_.append_timeout,
                               kPublishAttempt, [this] {
                                 absl::MutexLock lock(&mu_);
                                 return stop_;
                               });
    absl::MutexLock lock(&mu_);
    if (sequence.ok()) {
      for (auto& p : batch) {
        p->stage = Pending::Stage::kStored;
        p->sequence = *sequence;
      }
      continue;  // the applier completes them
    }
    in_flight_.erase(TxKey(txid));
    for (auto& p : batch) CompleteLocked(p.get(), sequence.status());
  }
}

void ReplicatedStore::FailStored(uint64_t first, uint64_t last, const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  for (auto it = in_flight_.begin(); it != in_flight_.end();) {
    const Batch& batch = it->second;
    const bool stored = !batch.empty() && batch.front()->stage == Pending::Stage::kStored &&
                        batch.front()->sequence >= first && batch.front()->sequence <= last;
    if (!stored) {
      ++it;
      continue;
    }
    for (const auto& p : batch) {
      CompleteLocked(p.get(), absl::UnavailableError(absl::StrCat(
                                  "the append is stored in JetStream (sequence ", p->sequence,
                                  ") but this node's replica could not apply it (", why.message(),
                                  "); a retry with the same idempotency key is safe")));
    }
    in_flight_.erase(it++);
  }
}

void ReplicatedStore::ApplyLoop() {
  std::unique_ptr<NatsLink::Follower> follower;
  auto stopping = [this]() {
    absl::MutexLock lock(&mu_);
    return stop_;
  };
  absl::Duration backoff = absl::Milliseconds(50);
  auto pause = [&]() {
    absl::MutexLock lock(&mu_);
    auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
    mu_.AwaitWithTimeout(absl::Condition(&stop), backoff);
    backoff = std::min(backoff * 2, absl::Seconds(1));
  };
  // When nothing arrives for a while, the applier asks JetStream whether
  // the stream has moved past the replica, and if so follows it anew: a
  // backstop for a consumer that libnats could not recreate after its
  // server died (during a leader election) and that now waits forever.
  absl::Time last_progress = absl::Now();
  while (!stopping()) {
    if (follower == nullptr) {
      absl::StatusOr<uint64_t> applied = replica_->AppliedSequence();
      absl::StatusOr<std::unique_ptr<NatsLink::Follower>> f =
          applied.ok() ? link_->Follow(subject_, repl_.stream, *applied + 1)
                       : absl::StatusOr<std::unique_ptr<NatsLink::Follower>>(applied.status());
      if (!f.ok()) {
        pause();
        continue;
      }
      follower = *std::move(f);
    }
    absl::StatusOr<std::optional<NatsLink::Follower::Message>> first =
        follower->Next(absl::Milliseconds(100));
    if (!first.ok()) {
      follower.reset();
      pause();
      continue;
    }
    if (!first->has_value()) {
      if (absl::Now() - last_progress < kStallCheck) continue;
      last_progress = absl::Now();
      absl::StatusOr<uint64_t> applied = replica_->AppliedSequence();
      absl::StatusOr<NatsLink::StreamState> stream = link_->GetStream(repl_.stream, kStallCheck);
      if (applied.ok() && stream.ok() && stream->last_sequence > *applied) follower.reset();
      continue;
    }
    last_progress = absl::Now();
    std::vector<Replica::Message> messages;
    size_t bytes = (*first)->data.size();
    messages.push_back(Replica::Message{(*first)->sequence, std::move((*first)->data)});
    // Whatever else has arrived goes into the same commit.
    while (messages.size() < kMaxApplyMessages && bytes < (size_t{8} << 20)) {
      absl::StatusOr<std::optional<NatsLink::Follower::Message>> more =
          follower->Next(absl::ZeroDuration());
      if (!more.ok() || !more->has_value()) break;
      bytes += (*more)->data.size();
      messages.push_back(Replica::Message{(*more)->sequence, std::move((*more)->data)});
    }
    absl::StatusOr<std::vector<Replica::Applied>> applied = replica_->Apply(messages);
    if (!applied.ok()) {
      // Nothing of these messages was applied. The callers waiting for them
      // learn why; the follower starts again from the replica's sequence.
      FailStored(messages.front().sequence, messages.back().sequence, applied.status());
      follower.reset();
      pause();
      continue;
    }
    backoff = absl::Milliseconds(50);
    absl::MutexLock lock(&mu_);
    for (Replica::Applied& a : *applied) {
      auto it = in_flight_.find(TxKey(a.txid));
      if (it == in_flight_.end()) continue;
      Batch& batch = it->second;
      for (size_t i = 0; i < batch.size(); ++i) {
        CompleteLocked(batch[i].get(),
                       i < a.outcome.results.size()
                           ? std::move(a.outcome.results[i])
                           : absl::StatusOr<std::vector<AppendResult>>(absl::InternalError(
                                 "a replicated transaction's outcome lacks a request")));
      }
      in_flight_.erase(it);
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> OpenReplicatedStore(const std::string& dir,
                                                           const ReplicationOptions& replication,
                                                           const StoreOptions& options) {
  // A replica without fsync (ReplicationOptions::sync_replica off, or
  // kNoSyncUnsafe) is checked, and deleted when an OS crash may have damaged
  // it, before it is opened; so is one that has a marker from such a time
  // (sync_replica set on a node that had been without), whatever this
  // process does: one unsynced writer is enough to damage it.
  std::unique_ptr<ReplicaMarker> marker;
  const bool unsynced = !replication.sync_replica && options.durability == Durability::kDurable;
  if (unsynced || options.durability == Durability::kNoSyncUnsafe || HasReplicaMarker(dir)) {
    bool rebuilt = false;
    absl::StatusOr<std::unique_ptr<ReplicaMarker>> m = ReplicaMarker::Acquire(dir, &rebuilt);
    if (!m.ok()) return m.status();
    marker = *std::move(m);
  }
  // The replica is the node's to create: deleted (by hand, or above), it is
  // rebuilt from JetStream whatever the caller's create_if_missing says.
  StoreOptions local_options = options;
  local_options.create_if_missing = true;
  absl::StatusOr<std::unique_ptr<StoreImpl>> local = StoreImpl::OpenLocal(dir, local_options);
  if (!local.ok()) return local.status();
  if (unsynced) {
    const int rc = mdb_env_set_flags((*local)->core()->log_env()->env(), MDB_NOSYNC, 1);
    if (rc != 0) return LmdbError(rc, "opening the replica without fsync");
  }
  absl::StatusOr<EventId> node = EventId::Parse((*local)->store_id());
  if (!node.ok()) return node.status();
  absl::StatusOr<std::unique_ptr<Replica>> replica = Replica::Open(local->get());
  if (!replica.ok()) return replica.status();
  if (marker != nullptr) {
    if (absl::Status s = marker->Opened(); !s.ok()) return s;
  }
  absl::StatusOr<std::unique_ptr<NatsLink>> link =
      NatsLink::Connect(replication, /*must_connect=*/false);
  if (!link.ok()) return link.status();
  return std::unique_ptr<Store>(new ReplicatedStore(std::move(marker), *std::move(local),
                                                    *std::move(replica), *std::move(link),
                                                    replication, *node));
}

}  // namespace rill::internal
