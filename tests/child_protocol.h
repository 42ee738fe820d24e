// What the child programs (tests/children/) and the tests that start them
// agree on: the events a child writes and the acknowledgement lines it
// prints. Header-only so that the children, which do not link GoogleTest or
// rill_test_util, can share it.
//
// Every event a child writes is a pure function of (stream, version, writer):
// a test can rebuild the exact request behind an acknowledgement (to retry it
// with its idempotency key) and can check any stored event for
// self-consistency, acknowledged or not.
#ifndef RILL_TESTS_CHILD_PROTOCOL_H_
#define RILL_TESTS_CHILD_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "rill/event.h"
#include "rill/expected_version.h"

namespace rill::testing {

// FNV-1a over `stream` and `version`: decides how much padding an event gets,
// so payload sizes vary but stay reproducible.
inline uint64_t ChildEventHash(absl::string_view stream, int64_t version) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](unsigned char c) {
    h ^= c;
    h *= 1099511628211ull;
  };
  for (char c : stream) mix(static_cast<unsigned char>(c));
  for (int i = 0; i < 8; ++i) mix(static_cast<unsigned char>(version >> (8 * i)));
  return h;
}

// The start of every child payload: what a test checks on events that were
// stored but never acknowledged (the child was killed first).
inline std::string ChildPayloadPrefix(absl::string_view stream, int64_t version) {
  return absl::StrCat("{\"s\":\"", stream, "\",\"v\":", version, ",");
}

// The payload of version `version` of `stream` written by `writer`, with
// 0..max_pad-1 bytes of padding.
inline std::string ChildEventPayload(absl::string_view stream, int64_t version,
                                     absl::string_view writer, size_t max_pad) {
  const size_t pad =
      max_pad == 0 ? 0 : static_cast<size_t>(ChildEventHash(stream, version) % max_pad);
  return absl::StrCat(ChildPayloadPrefix(stream, version), "\"w\":\"", writer, "\",\"pad\":\"",
                      std::string(pad, 'x'), "\"}");
}

inline std::string ChildEventType(int64_t version) {
  return absl::StrCat("ChildEvent", version % 3);
}

// The events of one child append request: versions first..last of `stream`.
inline std::vector<EventData> ChildEvents(absl::string_view stream, int64_t first_version,
                                          int64_t last_version, absl::string_view writer,
                                          size_t max_pad) {
  std::vector<EventData> events;
  for (int64_t v = first_version; v <= last_version; ++v) {
    EventData e;
    e.type = ChildEventType(v);
    e.payload = ChildEventPayload(stream, v, writer, max_pad);
    events.push_back(std::move(e));
  }
  return events;
}

// The expected version a child uses to append `first_version` next.
inline ExpectedVersion ChildExpected(int64_t first_version) {
  return first_version == 0 ? ExpectedVersion::NoStream()
                            : ExpectedVersion::Exact(first_version - 1);
}

// One acknowledged append, as a child prints it after Append returned OK:
//   "ack <key> <stream> <writer> <first_version> <last_version>
//        <first_position> <last_position> <deduplicated 0|1>\n"
// `key` is "-" when the append had no idempotency key.
struct AckRecord {
  std::string key;
  std::string stream;
  std::string writer;
  int64_t first_version = 0;
  int64_t last_version = 0;
  uint64_t first_position = 0;
  uint64_t last_position = 0;
  bool deduplicated = false;
};

inline std::string FormatAck(const AckRecord& a) {
  return absl::StrCat("ack ", a.key.empty() ? "-" : a.key, " ", a.stream, " ", a.writer, " ",
                      a.first_version, " ", a.last_version, " ", a.first_position, " ",
                      a.last_position, " ", a.deduplicated ? 1 : 0, "\n");
}

// Parses one line (without its '\n') printed by FormatAck.
inline bool ParseAck(absl::string_view line, AckRecord* out) {
  std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
  if (f.size() != 9 || f[0] != "ack") return false;
  out->key = f[1] == "-" ? "" : std::string(f[1]);
  out->stream = std::string(f[2]);
  out->writer = std::string(f[3]);
  int dedup = 0;
  if (!absl::SimpleAtoi(f[4], &out->first_version) || !absl::SimpleAtoi(f[5], &out->last_version) ||
      !absl::SimpleAtoi(f[6], &out->first_position) ||
      !absl::SimpleAtoi(f[7], &out->last_position) || !absl::SimpleAtoi(f[8], &dedup)) {
    return false;
  }
  out->deduplicated = dedup != 0;
  return true;
}

// Parses every complete line of an acknowledgement file. A last line without
// its '\n' (the child was killed while writing it) is not an acknowledgement
// and is skipped. Returns false on a malformed complete line.
inline bool ParseAckFile(absl::string_view contents, std::vector<AckRecord>* out) {
  while (!contents.empty()) {
    const size_t nl = contents.find('\n');
    if (nl == absl::string_view::npos) break;  // torn last line
    AckRecord a;
    if (!ParseAck(contents.substr(0, nl), &a)) return false;
    out->push_back(std::move(a));
    contents.remove_prefix(nl + 1);
  }
  return true;
}

}  // namespace rill::testing

#endif  // RILL_TESTS_CHILD_PROTOCOL_H_
