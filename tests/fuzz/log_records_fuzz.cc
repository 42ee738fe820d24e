// Fuzz target: any bytes as one of the FlatBuffers records without a
// checksum, which are verified before use (docs/format.md): the first input
// byte picks the decoder, the rest is the stored value.
//   0 stream record (`streams`)          3 projection catalog (`proj.catalog`)
//   1 idempotency record (`idempotency`) 4 dead letter (`proj.dead`)
//   2 store meta record (`meta`)         5 as-of set (`proj.asof`)
// Promises: no crash, no sanitizer report; failures are DataLoss (and
// FailedPrecondition for a meta record without the magic); an accepted
// record encodes and decodes again to the same value.
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "catalog.h"
#include "codec.h"
#include "fuzz_util.h"

namespace rill::fuzz {
namespace {

bool DataLossCode(const absl::Status& s) { return s.code() == absl::StatusCode::kDataLoss; }

bool SameResults(const std::vector<AppendResult>& a, const std::vector<AppendResult>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].stream != b[i].stream || a[i].first_version != b[i].first_version ||
        a[i].last_version != b[i].last_version || a[i].first_position != b[i].first_position ||
        a[i].last_position != b[i].last_position) {
      return false;
    }
  }
  return true;
}

bool SameGeneration(const internal::GenerationRec& a, const internal::GenerationRec& b) {
  return a.id == b.id && a.version == b.version && a.checkpoint == b.checkpoint;
}

void Stream(absl::string_view value) {
  absl::StatusOr<internal::StreamState> s = internal::DecodeStreamState(value, "s");
  if (!s.ok()) {
    FUZZ_CHECK(DataLossCode(s.status()));
    return;
  }
  absl::StatusOr<internal::StreamState> again =
      internal::DecodeStreamState(internal::EncodeStreamState(*s), "s");
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->first_position == s->first_position &&
             again->last_position == s->last_position && again->last_version == s->last_version &&
             again->last_recorded_us == s->last_recorded_us);
}

void Idempotency(absl::string_view value) {
  absl::StatusOr<internal::IdempotencyEntry> e = internal::DecodeIdempotency(value, "k");
  if (!e.ok()) {
    FUZZ_CHECK(DataLossCode(e.status()));
    return;
  }
  Consume(e->fingerprint.size() + e->results.size());
  absl::StatusOr<internal::IdempotencyEntry> again =
      internal::DecodeIdempotency(internal::EncodeIdempotency(*e), "k");
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->fingerprint == e->fingerprint && again->created_us == e->created_us &&
             SameResults(again->results, e->results));
}

void Meta(absl::string_view value) {
  absl::StatusOr<internal::StoreMetaData> m = internal::DecodeStoreMeta(value);
  if (!m.ok()) {
    {
      FUZZ_CHECK(DataLossCode(m.status()) ||
                 m.status().code() == absl::StatusCode::kFailedPrecondition);
      return;
    }
  }
  absl::StatusOr<internal::StoreMetaData> again =
      internal::DecodeStoreMeta(internal::EncodeStoreMeta(*m));
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->format_version == m->format_version && again->store_id == m->store_id &&
             again->created_us == m->created_us);
}

void Catalog(absl::string_view value) {
  absl::StatusOr<internal::CatalogRec> c = internal::DecodeCatalog(value);
  if (!c.ok()) {
    FUZZ_CHECK(DataLossCode(c.status()));
    return;
  }
  absl::StatusOr<internal::CatalogRec> again = internal::DecodeCatalog(internal::EncodeCatalog(*c));
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->name == c->name && SameGeneration(again->active, c->active) &&
             again->building.has_value() == c->building.has_value() &&
             (!c->building || SameGeneration(*again->building, *c->building)) &&
             again->retired == c->retired);
}

void DeadLetter(absl::string_view value) {
  absl::StatusOr<internal::DeadLetterRec> d = internal::DecodeDeadLetter(value);
  if (!d.ok()) {
    FUZZ_CHECK(DataLossCode(d.status()));
    return;
  }
  absl::StatusOr<internal::DeadLetterRec> again =
      internal::DecodeDeadLetter(internal::EncodeDeadLetter(*d));
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->stream == d->stream && again->type == d->type && again->error == d->error &&
             again->attempts == d->attempts && again->parked_us == d->parked_us &&
             again->generation == d->generation);
}

void AsOf(absl::string_view value) {
  auto a = internal::DecodeAsOf(value);
  if (!a.ok()) {
    FUZZ_CHECK(DataLossCode(a.status()));
    return;
  }
  auto again = internal::DecodeAsOf(internal::EncodeAsOf(a->first, a->second));
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(SameGeneration(again->first, a->first) && again->second == a->second);
}

}  // namespace
}  // namespace rill::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const absl::string_view value(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 6) {
    case 0:
      rill::fuzz::Stream(value);
      break;
    case 1:
      rill::fuzz::Idempotency(value);
      break;
    case 2:
      rill::fuzz::Meta(value);
      break;
    case 3:
      rill::fuzz::Catalog(value);
      break;
    case 4:
      rill::fuzz::DeadLetter(value);
      break;
    case 5:
      rill::fuzz::AsOf(value);
      break;
  }
  return 0;
}
