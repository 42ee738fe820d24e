// What the crash torture's child (torture_child.cc) and driver
// (torture_test.cc) agree on: the multi-stream acknowledgement line and the
// projections the child runs, with independent folds of the log.
//
// Single-stream appends use child_protocol.h's events and "ack" lines. An
// AppendMulti is acknowledged with one line
//   "mack <key> <writer> <n> (<stream> <first_v> <last_v> <first_p> <last_p>)*n\n"
// written after AppendMulti returned. Its events are ChildEvents(stream,
// first_v, last_v, writer, max_pad) per stream and its expected versions
// ChildExpected(first_v), so the driver can rebuild the exact request.
//
// Header-only: the child links neither GoogleTest nor rill_test_util.
#ifndef RILL_TESTS_CRASH_TORTURE_PROTOCOL_H_
#define RILL_TESTS_CRASH_TORTURE_PROTOCOL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "child_protocol.h"
#include "projector_defs.h"
#include "rill/projection.h"
#include "rill/store.h"

namespace rill::testing {

// Streams of the child's AppendMulti thread start with this.
inline constexpr char kMultiPrefix[] = "tort-m-";

struct MultiAck {
  std::string key;
  std::string writer;
  std::vector<AppendResult> parts;
};

inline std::string FormatMultiAck(const MultiAck& m) {
  std::string line = absl::StrCat("mack ", m.key, " ", m.writer, " ", m.parts.size());
  for (const AppendResult& r : m.parts) {
    absl::StrAppend(&line, " ", r.stream, " ", r.first_version, " ", r.last_version, " ",
                    r.first_position, " ", r.last_position);
  }
  line.push_back('\n');
  return line;
}

inline bool ParseMultiAck(absl::string_view line, MultiAck* out) {
  std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
  size_t n = 0;
  if (f.size() < 4 || f[0] != "mack" || !absl::SimpleAtoi(f[3], &n) || f.size() != 4 + 5 * n ||
      n == 0) {
    return false;
  }
  out->key = std::string(f[1]);
  out->writer = std::string(f[2]);
  for (size_t i = 0; i < n; ++i) {
    AppendResult r;
    r.stream = std::string(f[4 + 5 * i]);
    if (!absl::SimpleAtoi(f[5 + 5 * i], &r.first_version) ||
        !absl::SimpleAtoi(f[6 + 5 * i], &r.last_version) ||
        !absl::SimpleAtoi(f[7 + 5 * i], &r.first_position) ||
        !absl::SimpleAtoi(f[8 + 5 * i], &r.last_position)) {
      return false;
    }
    out->parts.push_back(std::move(r));
  }
  return true;
}

// The request behind a multi acknowledgement.
inline std::vector<StreamAppend> MultiRequest(const MultiAck& m, size_t max_pad) {
  std::vector<StreamAppend> request;
  for (const AppendResult& r : m.parts) {
    request.push_back(
        StreamAppend{r.stream, ChildExpected(r.first_version),
                     ChildEvents(r.stream, r.first_version, r.last_version, m.writer, max_pad)});
  }
  return request;
}

// Every complete line of an acknowledgement file ("ack" and "mack"). A torn
// last line (the child was killed while writing it) is skipped. False on a
// malformed complete line.
inline bool ParseTortureAcks(absl::string_view contents, std::vector<AckRecord>* acks,
                             std::vector<MultiAck>* multis) {
  while (!contents.empty()) {
    const size_t nl = contents.find('\n');
    if (nl == absl::string_view::npos) break;
    const absl::string_view line = contents.substr(0, nl);
    if (absl::StartsWith(line, "mack ")) {
      MultiAck m;
      if (!ParseMultiAck(line, &m)) return false;
      multis->push_back(std::move(m));
    } else {
      AckRecord a;
      if (!ParseAck(line, &a)) return false;
      acks->push_back(std::move(a));
    }
    contents.remove_prefix(nl + 1);
  }
  return true;
}

// --- mstreams: the AppendMulti streams only (a prefix filter) --------------
// last/<stream>  last version applied
// count/<stream> events applied
// seen/<pos>     times the event at pos was applied (must be 1)
inline constexpr char kMStreams[] = "mstreams";

inline ProjectionDef MStreamsProjection() {
  ProjectionDef def;
  def.name = kMStreams;
  def.filter.stream_prefix = kMultiPrefix;
  def.tables = {"last", "count", "seen"};
  def.apply = [](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    if (absl::Status s = txn.Put("last", e.stream(), absl::StrCat(e.version())); !s.ok()) {
      return s;
    }
    if (absl::Status s = AddInt(txn, "count", e.stream(), 1); !s.ok()) return s;
    return AddInt(txn, "seen", PosKey(e.position()), 1);
  };
  return def;
}

inline ModelDump FoldMStreams(const std::vector<RecordedEvent>& log) {
  ModelDump m;
  m["last"];
  m["count"];
  m["seen"];
  std::map<std::string, int64_t> count;
  for (const RecordedEvent& e : log) {
    if (e.stream.rfind(kMultiPrefix, 0) != 0) continue;
    m["last"][e.stream] = absl::StrCat(e.version);
    ++count[e.stream];
    m["seen"][PosKey(e.position)] = "1";
  }
  for (const auto& [s, n] : count) m["count"][s] = absl::StrCat(n);
  return m;
}

// --- snapshots: the torture's snapshot thread saves, for a stream of its
// first appender, this digest of the stream's events 0..version; after a
// crash every snapshot must still equal the digest of the log's events.
inline constexpr uint32_t kSnapshotSchema = 1;

inline std::string SnapshotDigest(const std::vector<RecordedEvent>& events) {
  size_t bytes = 0;
  for (const RecordedEvent& e : events) bytes += e.payload.size();
  return absl::StrCat(events.size(), ":", bytes, ":",
                      events.empty() ? "" : events.back().payload.substr(0, 48));
}

// The child's projections: the ledger (every event, read-modify-write of
// shared rows, projector_defs.h) and mstreams.
inline std::vector<ProjectionDef> TortureProjections() {
  return {LedgerProjection(1), MStreamsProjection()};
}

}  // namespace rill::testing

#endif  // RILL_TESTS_CRASH_TORTURE_PROTOCOL_H_
