// The segment-log prototype of issue 15 (bench/seglog, docs/segment-log.md)
// as a peer: durable (one fdatasync per group commit, 64 MiB zero-filled
// segments prepared by a background thread), with rill's append checks
// (expected versions, idempotency records). Reads verify every record's
// checksum, as rill verifies its records. The read log is loaded without
// syncs and reopened durable.
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "../bench_util.h"
#include "absl/strings/str_format.h"
#include "peer.h"
#include "seglog.h"

namespace rill::bench {
namespace {

std::unique_ptr<seglog::Log> OpenOrDie(const std::string& dir, bool sync) {
  seglog::Options o;
  o.dir = dir;
  o.sync = sync;
  // An experiment (docs/segment-log.md): SEGLOG_PREALLOC=fallocate|none
  // instead of zero-filled segments.
  if (const char* p = getenv("SEGLOG_PREALLOC"); p != nullptr) {
    o.prealloc = std::string(p) == "fallocate" ? seglog::Prealloc::kFallocate
                 : std::string(p) == "none"    ? seglog::Prealloc::kNone
                                               : seglog::Prealloc::kZeroFill;
  }
  absl::StatusOr<std::unique_ptr<seglog::Log>> log = seglog::Log::Open(o);
  if (!log.ok()) Die("seglog Open: " + log.status().ToString());
  return *std::move(log);
}

class SeglogWriter : public PeerWriter {
 public:
  explicit SeglogWriter(seglog::Log* log) : log_(log) {}

  void Append(const std::string& stream, int64_t expected,
              absl::Span<const std::string> payloads) override {
    FillEvents(payloads, &events_);
    absl::StatusOr<AppendResult> r = log_->Append(stream, ExpectedOf(expected), events_);
    if (!r.ok()) Die("seglog Append: " + r.status().ToString());
  }

  bool AppendIdempotent(const std::string& stream, int64_t expected, const std::string& payload,
                        const std::string& key) override {
    FillEvents(absl::MakeConstSpan(&payload, 1), &events_);
    absl::StatusOr<AppendResult> r = log_->Append(stream, ExpectedOf(expected), events_, key);
    if (!r.ok()) Die("seglog Append (idempotent): " + r.status().ToString());
    return r->deduplicated;
  }

 private:
  seglog::Log* const log_;
  std::vector<EventData> events_;
};

class SeglogPeer : public Peer {
 public:
  explicit SeglogPeer(std::string dir) : dir_(std::move(dir)) {}
  std::string name() const override { return "seglog"; }

  void OpenFresh(const std::string& tag) override {
    Close();
    log_ = OpenOrDie(absl::StrFormat("%s/%s-%d", dir_, tag, ++count_), true);
  }
  std::unique_ptr<PeerWriter> NewWriter() override {
    return std::make_unique<SeglogWriter>(log_.get());
  }
  double CloseAndCountEventsPerCommit(uint64_t events) override {
    if (log_ == nullptr) return -1;
    const uint64_t commits = log_->commits();
    Close();
    return commits > 0 ? static_cast<double>(events) / commits : -1;
  }

  void LoadReadLog(uint64_t events, ReadLayout layout) override {
    Close();
    const std::string dir = absl::StrFormat("%s/read-%d", dir_, ++count_);
    {
      std::unique_ptr<seglog::Log> log = OpenOrDie(dir, false);
      std::vector<EventData> batch;
      // Consecutive events of one stream go in one request.
      auto flush = [&](int slot) {
        if (batch.empty()) return;
        absl::StatusOr<AppendResult> r =
            log->Append(StreamOfSlot(slot), ExpectedVersion::Any(), batch);
        if (!r.ok()) Die("seglog read log Append: " + r.status().ToString());
        batch.clear();
      };
      int slot = -1;
      for (uint64_t i = 0; i < events; ++i) {
        const int s = StreamSlotOfEvent(i, layout);
        if (s != slot || batch.size() == static_cast<size_t>(kReadBatch)) {
          flush(slot);
          slot = s;
        }
        EventData e;
        e.type = kEventType;
        e.payload = Payload(static_cast<int>(i % kReadBatch));
        batch.push_back(std::move(e));
      }
      flush(slot);
      if (absl::Status s = log->Close(); !s.ok()) Die("seglog Close: " + s.ToString());
    }
    log_ = OpenOrDie(dir, true);
    events_ = events;
  }

  uint64_t ReadAll(uint64_t* sum) override {
    absl::StatusOr<uint64_t> n = log_->ReadAll(1, [&](const seglog::EventRef& e) {
      *sum += Touch(e.position, e.payload);
      return true;
    });
    if (!n.ok()) Die("seglog ReadAll: " + n.status().ToString());
    return *n;
  }
  uint64_t ReadStream(const std::string& stream, uint64_t* sum) override {
    return ReadSlice(stream, 0, -1, sum);
  }
  uint64_t ReadSlice(const std::string& stream, int64_t from, int count, uint64_t* sum) override {
    absl::StatusOr<uint64_t> n =
        log_->ReadStream(stream, from, count, [&](const seglog::EventRef& e) {
          *sum += Touch(e.position, e.payload);
          return true;
        });
    if (!n.ok()) Die("seglog ReadStream: " + n.status().ToString());
    return *n;
  }
  double BytesPerEvent() override {
    return events_ == 0 ? 0 : static_cast<double>(log_->bytes_used()) / events_;
  }
  void Close() override {
    if (log_ != nullptr) {
      if (absl::Status s = log_->Close(); !s.ok()) Die("seglog Close: " + s.ToString());
    }
    log_.reset();
  }

 private:
  const std::string dir_;
  int count_ = 0;
  uint64_t events_ = 0;
  std::unique_ptr<seglog::Log> log_;
};

}  // namespace

std::unique_ptr<Peer> NewSeglogPeer(const std::string& dir) {
  return std::make_unique<SeglogPeer>(dir);
}

}  // namespace rill::bench
