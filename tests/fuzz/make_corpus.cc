// Writes the seed corpus of the fuzz targets: real stored values, made by
// the same encoders the engine and the projections write with.
//
// Usage: cmake --build build --target fuzz_make_corpus &&
//        build/tests/fuzz/fuzz_make_corpus tests/fuzz/corpus
// Writes <dir>/event_record/*, <dir>/snapshot_record/*, <dir>/log_records/*
// (the latter prefixed with the byte that selects the decoder, see
// log_records_fuzz.cc). Rerun it after a schema change and commit the files.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "catalog.h"
#include "codec.h"
#include "rill/event.h"
#include "snapshot_records.h"

namespace rill::fuzz {
namespace {

namespace fs = std::filesystem;

void Write(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

std::string EventValue(const EventData& e, const EventId& id, absl::string_view stream,
                       int64_t version, uint64_t position) {
  flatbuffers::FlatBufferBuilder fbb;
  internal::BuildEvent(e, id, internal::EventPlacement{stream, version, position, 1700000000000000},
                       &fbb);
  std::string value(internal::EventValueSize(fbb), '\0');
  internal::WriteEventValue(fbb, value.data());
  return value;
}

void Events(const fs::path& dir) {
  std::array<uint8_t, 16> id_bytes;
  for (int i = 0; i < 16; ++i) id_bytes[i] = static_cast<uint8_t>(i * 17);
  const EventId id(id_bytes);
  EventData minimal;
  minimal.type = "E";
  minimal.payload = "";
  minimal.content_type = ContentType::kBinary;
  Write(dir, "minimal", EventValue(minimal, EventId(), "s", 0, 1));

  EventData json;
  json.type = "OrderCreated";
  json.payload = R"({"order":"o-1","amount":42})";
  Write(dir, "json", EventValue(json, id, "order-o-1", 3, 17));

  EventData full = json;
  full.content_type = ContentType::kFlatBuffers;
  full.schema_version = 7;
  full.metadata.correlation_id = "corr-1";
  full.metadata.causation_id = "cause-1";
  full.metadata.headers = {{"tenant", "t1"}, {"trace", "abc"}, {"empty", ""}};
  Write(dir, "metadata", EventValue(full, id, "order-\xc3\xa9", 1, 1000000));

  EventData big = json;
  big.payload = std::string(3000, 'x');
  Write(dir, "payload3000", EventValue(big, id, "big", 0, 2));
}

void Snapshots(const fs::path& dir) {
  Write(dir, "small",
        internal::EncodeSnapshot("account-42", 9, 1, absl::FromUnixMicros(5), "balance=100"));
  Write(dir, "empty", internal::EncodeSnapshot("s", 0, 3, absl::FromUnixMicros(0), ""));
  Write(dir, "binary",
        internal::EncodeSnapshot("order-o-1", 1234, 2, absl::FromUnixMicros(1700000000000000),
                                 std::string("\0\1\2\3\xff", 5)));
}

std::string Tagged(char tag, const std::string& value) { return std::string(1, tag) + value; }

void LogRecords(const fs::path& dir) {
  internal::StreamState st{17, 40, 9, 1700000000000000};
  Write(dir, "stream", Tagged(0, internal::EncodeStreamState(st)));

  internal::IdempotencyEntry one;
  one.fingerprint = std::string(16, '\x5a');
  one.results.push_back(AppendResult{"order-o-1", 3, 5, 17, 19, false});
  one.created_us = 1700000000000000;
  Write(dir, "idempotency", Tagged(1, internal::EncodeIdempotency(one)));
  internal::IdempotencyEntry multi = one;
  multi.results.push_back(AppendResult{"order-o-2", 0, 0, 20, 20, false});
  Write(dir, "idempotency_multi", Tagged(1, internal::EncodeIdempotency(multi)));

  std::array<uint8_t, 16> id_bytes{};
  id_bytes[0] = 0x42;
  internal::StoreMetaData meta{1, EventId(id_bytes), 1700000000000000};
  Write(dir, "meta", Tagged(2, internal::EncodeStoreMeta(meta)));

  internal::CatalogRec cat;
  cat.name = "ledger";
  cat.active = {3, 2, 1000};
  cat.building = internal::GenerationRec{5, 3, 10};
  cat.retired = {1, 2};
  Write(dir, "catalog", Tagged(3, internal::EncodeCatalog(cat)));

  internal::DeadLetterRec dead{"acct-1", "Opened", "poison at 13", 2, 1700000000000000, 3};
  Write(dir, "dead_letter", Tagged(4, internal::EncodeDeadLetter(dead)));
  Write(dir, "asof", Tagged(5, internal::EncodeAsOf(internal::GenerationRec{4, 1, 0}, 99)));
}

}  // namespace
}  // namespace rill::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_corpus <tests/fuzz/corpus>\n");
    return 2;
  }
  const std::filesystem::path root(argv[1]);
  rill::fuzz::Events(root / "event_record");
  rill::fuzz::Snapshots(root / "snapshot_record");
  rill::fuzz::LogRecords(root / "log_records");
  return 0;
}
