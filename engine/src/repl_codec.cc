#include "repl_codec.h"

#include <xxhash.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "codec.h"
#include "rill/schema/replication_generated.h"

namespace rill::internal {
namespace {

absl::string_view View(const flatbuffers::String* s) {
  return s == nullptr ? absl::string_view() : absl::string_view(s->c_str(), s->size());
}

EventId IdOf(const flatbuffers::Vector<uint8_t>* bytes) {
  if (bytes == nullptr || bytes->size() != 16) return EventId();
  std::array<uint8_t, 16> id;
  std::memcpy(id.data(), bytes->data(), 16);
  return EventId(id);
}

std::string Finish(const flatbuffers::FlatBufferBuilder& fbb) {
  return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
}

}  // namespace

EventData ToEventData(const EventView& event) {
  RecordedEvent owned = event.ToOwned();
  EventData d;
  d.type = std::move(owned.type);
  d.payload = std::move(owned.payload);
  d.content_type = owned.content_type;
  d.schema_version = owned.schema_version;
  d.id = owned.id;
  d.metadata = std::move(owned.metadata);
  return d;
}

std::string EncodeTransaction(const EventId& txid, const EventId& node, int64_t recorded_us,
                              absl::Span<AppendRequest* const> requests) {
  flatbuffers::FlatBufferBuilder fbb(1024);
  std::vector<flatbuffers::Offset<schema::TxRequest>> reqs;
  reqs.reserve(requests.size());
  for (const AppendRequest* r : requests) {
    std::vector<flatbuffers::Offset<schema::TxPart>> parts;
    for (const RequestPart& p : r->parts) {
      std::vector<flatbuffers::Offset<schema::EventRecord>> events;
      events.reserve(p.events.size());
      for (const EventData& e : p.events) {
        events.push_back(AddEvent(e, e.id.IsNil() ? EventId::Random() : e.id,
                                  EventPlacement{"", 0, 0, 0}, &fbb));
      }
      auto stream = fbb.CreateString(p.stream.data(), p.stream.size());
      auto evs = fbb.CreateVector(events);
      parts.push_back(schema::CreateTxPart(fbb, stream, static_cast<uint8_t>(p.expected.kind()),
                                           p.expected.version(), evs));
    }
    flatbuffers::Offset<flatbuffers::String> key = 0;
    flatbuffers::Offset<flatbuffers::Vector<uint8_t>> fp = 0;
    if (!r->idempotency_key.empty()) {
      key = fbb.CreateString(r->idempotency_key);
      fp = fbb.CreateVector(reinterpret_cast<const uint8_t*>(r->fingerprint.data()),
                            r->fingerprint.size());
    }
    auto ps = fbb.CreateVector(parts);
    reqs.push_back(schema::CreateTxRequest(fbb, key, fp, ps, r->recorded_us));
  }
  auto id = fbb.CreateVector(txid.bytes().data(), txid.bytes().size());
  auto nd = fbb.CreateVector(node.bytes().data(), node.bytes().size());
  auto rs = fbb.CreateVector(reqs);
  fbb.Finish(schema::CreateTransaction(fbb, id, nd, recorded_us, rs),
             schema::TransactionIdentifier());
  std::string out(kChecksumBytes + fbb.GetSize(), '\0');
  const uint64_t checksum = XXH3_64bits(fbb.GetBufferPointer(), fbb.GetSize());
  for (size_t i = 0; i < kChecksumBytes; ++i) out[i] = static_cast<char>(checksum >> (8 * i));
  std::memcpy(out.data() + kChecksumBytes, fbb.GetBufferPointer(), fbb.GetSize());
  return out;
}

absl::StatusOr<std::unique_ptr<ReplTransaction>> DecodeTransaction(absl::string_view message) {
  if (message.size() < kChecksumBytes + 8) {
    return absl::DataLossError(
        absl::StrCat("transaction message is truncated (", message.size(), " bytes)"));
  }
  uint64_t stored = 0;
  for (size_t i = 0; i < kChecksumBytes; ++i) {
    stored |= uint64_t{static_cast<uint8_t>(message[i])} << (8 * i);
  }
  absl::string_view body = message.substr(kChecksumBytes);
  if (XXH3_64bits(body.data(), body.size()) != stored) {
    return absl::DataLossError("transaction message fails its checksum");
  }
  AlignedBuffer buf;
  const uint8_t* data = buf.Assign(body);
  flatbuffers::Verifier verifier(data, body.size());
  if (!verifier.VerifyBuffer<schema::Transaction>(schema::TransactionIdentifier())) {
    return absl::DataLossError("transaction message fails verification");
  }
  const schema::Transaction* tx = flatbuffers::GetRoot<schema::Transaction>(data);
  auto out = std::make_unique<ReplTransaction>();
  if (tx->txid()->size() != 16) return absl::DataLossError("transaction id is not 16 bytes");
  out->txid = IdOf(tx->txid());
  out->node = IdOf(tx->node());
  out->recorded_us = tx->recorded_us();
  out->requests.resize(tx->requests()->size());
  for (size_t i = 0; i < tx->requests()->size(); ++i) {
    const schema::TxRequest* req = tx->requests()->Get(i);
    AppendRequest& r = out->requests[i];
    r.recorded_us = req->recorded_us();
    if (req->idempotency_key() != nullptr) {
      r.idempotency_key = std::string(View(req->idempotency_key()));
      if (req->fingerprint() == nullptr) {
        return absl::DataLossError("transaction request has a key and no fingerprint");
      }
      r.fingerprint.assign(reinterpret_cast<const char*>(req->fingerprint()->data()),
                           req->fingerprint()->size());
    }
    for (const schema::TxPart* p : *req->parts()) {
      if (p->expected_kind() > static_cast<uint8_t>(ExpectedVersion::Kind::kExact)) {
        return absl::DataLossError("transaction part has an unknown expected-version kind");
      }
      const auto kind = static_cast<ExpectedVersion::Kind>(p->expected_kind());
      ExpectedVersion expected = kind == ExpectedVersion::Kind::kAny ? ExpectedVersion::Any()
                                 : kind == ExpectedVersion::Kind::kNoStream
                                     ? ExpectedVersion::NoStream()
                                 : kind == ExpectedVersion::Kind::kStreamExists
                                     ? ExpectedVersion::StreamExists()
                                     : ExpectedVersion::Exact(p->expected_version());
      std::vector<EventData>& events = out->events.emplace_back();
      if (p->events() != nullptr) {
        events.reserve(p->events()->size());
        for (const schema::EventRecord* e : *p->events()) {
          if (e->id() != nullptr && e->id()->size() != 16) {
            return absl::DataLossError("transaction event id is not 16 bytes");
          }
          r.bytes += events.emplace_back(ToEventData(EventViewAccess::Of(e))).payload.size();
        }
      }
      const std::string& stream = out->streams.emplace_back(View(p->stream()));
      r.parts.push_back(RequestPart{stream, expected, events});
    }
  }
  return out;
}

std::string EncodeOutcome(uint64_t sequence, absl::Span<const AppendRequest> requests) {
  flatbuffers::FlatBufferBuilder fbb(256);
  std::vector<flatbuffers::Offset<schema::TxRequestOutcome>> outs;
  for (const AppendRequest& r : requests) {
    if (!r.result.ok()) {
      auto msg =
          fbb.CreateString(r.result.status().message().data(), r.result.status().message().size());
      outs.push_back(schema::CreateTxRequestOutcome(fbb, static_cast<int>(r.result.status().code()),
                                                    msg, 0, false));
      continue;
    }
    std::vector<flatbuffers::Offset<schema::StreamResult>> results;
    bool deduplicated = false;
    for (const AppendResult& a : *r.result) {
      auto stream = fbb.CreateString(a.stream);
      results.push_back(schema::CreateStreamResult(fbb, stream, a.first_version, a.last_version,
                                                   a.first_position, a.last_position));
      deduplicated = a.deduplicated;
    }
    auto rs = fbb.CreateVector(results);
    outs.push_back(schema::CreateTxRequestOutcome(fbb, 0, 0, rs, deduplicated));
  }
  auto os = fbb.CreateVector(outs);
  fbb.Finish(schema::CreateTxOutcome(fbb, sequence, os));
  return Finish(fbb);
}

absl::StatusOr<ReplOutcome> DecodeOutcome(absl::string_view value) {
  AlignedBuffer buf;
  auto root = VerifiedRoot<schema::TxOutcome>(&buf, value, "a replicated transaction's outcome");
  if (!root.ok()) return root.status();
  ReplOutcome out;
  out.sequence = (*root)->sequence();
  if ((*root)->requests() == nullptr) return out;
  for (const schema::TxRequestOutcome* o : *(*root)->requests()) {
    if (o->code() != 0) {
      out.results.push_back(
          absl::Status(static_cast<absl::StatusCode>(o->code()), View(o->message())));
      continue;
    }
    std::vector<AppendResult> results;
    if (o->results() != nullptr) {
      for (const schema::StreamResult* s : *o->results()) {
        AppendResult a;
        a.stream = std::string(View(s->stream()));
        a.first_version = s->first_version();
        a.last_version = s->last_version();
        a.first_position = s->first_position();
        a.last_position = s->last_position();
        a.deduplicated = o->deduplicated();
        results.push_back(std::move(a));
      }
    }
    out.results.push_back(std::move(results));
  }
  return out;
}

}  // namespace rill::internal
