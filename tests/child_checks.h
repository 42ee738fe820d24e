// Checks shared by the tests that run appending children
// (tests/children/append_child.cc) and check their acknowledgements against
// a store: starting a child and waiting for its "ready", waiting for a clean
// exit, and the whole log against every acknowledgement.
//
// Header-only, for test binaries (it uses GoogleTest assertions).
#ifndef RILL_TESTS_CHILD_CHECKS_H_
#define RILL_TESTS_CHILD_CHECKS_H_

#include <stdlib.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "child_protocol.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill::testing {

// How long a child may take to start; only turns a hang into a failure.
inline constexpr absl::Duration kChildHang = absl::Seconds(60);

// Starts a child and waits for its "ready" line.
inline std::unique_ptr<ChildProcess> StartReady(const TempDir& dir, const std::string& name,
                                                const std::vector<std::string>& args,
                                                const std::string& tag) {
  absl::StatusOr<std::unique_ptr<ChildProcess>> child =
      ChildProcess::Start(name, args, dir.Sub(tag + ".err"));
  if (!child.ok()) {
    ADD_FAILURE() << child.status();
    return nullptr;
  }
  absl::StatusOr<std::string> line = (*child)->ReadLine(kChildHang);
  if (!line.ok() || *line != "ready") {
    ADD_FAILURE() << tag << " did not start: " << (line.ok() ? *line : line.status().ToString())
                  << "\n"
                  << (*child)->Stderr();
    return nullptr;
  }
  return std::move(child).value();
}

// Waits for a child to exit 0 and returns its last stdout line.
inline std::string ExpectCleanExit(ChildProcess* child, const std::string& tag) {
  absl::StatusOr<std::string> line = child->ReadLine(absl::Seconds(120));
  const int status = child->Wait();
  EXPECT_TRUE(ExitedWithCode(status, 0)) << tag << " " << DescribeWaitStatus(status) << "\n"
                                         << child->Stderr();
  return line.ok() ? *line : "";
}

// The whole log against the acknowledgements of every writer: gapless,
// contiguous streams, each acknowledged event once where it was
// acknowledged, nothing that was not acknowledged.
inline void VerifyLog(Store* store, const std::vector<AckRecord>& acks, size_t max_pad) {
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> events, store->ReadAll(1));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store->HeadPosition());
  ASSERT_EQ(events.size(), head);
  std::map<std::string, int64_t> next_version;
  for (size_t i = 0; i < events.size(); ++i) {
    const RecordedEvent& e = events[i];
    ASSERT_EQ(e.position, i + 1);
    ASSERT_EQ(e.version, next_version[e.stream]++) << e.stream;
    ASSERT_EQ(e.payload.rfind(ChildPayloadPrefix(e.stream, e.version), 0), 0u);
  }
  std::set<uint64_t> claimed;
  for (const AckRecord& a : acks) {
    ASSERT_LE(a.last_position, head) << FormatAck(a);
    for (int64_t v = a.first_version; v <= a.last_version; ++v) {
      const uint64_t p = a.first_position + (v - a.first_version);
      ASSERT_TRUE(claimed.insert(p).second) << "acknowledged twice: " << FormatAck(a);
      const RecordedEvent& e = events[p - 1];
      ASSERT_EQ(e.stream, a.stream) << FormatAck(a);
      ASSERT_EQ(e.version, v) << FormatAck(a);
      ASSERT_EQ(e.payload, ChildEventPayload(a.stream, v, a.writer, max_pad)) << FormatAck(a);
    }
  }
  EXPECT_EQ(claimed.size(), events.size()) << "events nobody acknowledged";
}

// Pretends the machine rebooted (RILL_TEST_FAKE_BOOT_ID, read by a
// replicated node's replica marker) for this process and the children it
// starts, until destroyed, also when an assertion returns early.
class ScopedFakeBoot {
 public:
  explicit ScopedFakeBoot(const std::string& id) {
    EXPECT_EQ(setenv("RILL_TEST_FAKE_BOOT_ID", id.c_str(), 1), 0);
  }
  ~ScopedFakeBoot() { unsetenv("RILL_TEST_FAKE_BOOT_ID"); }
  ScopedFakeBoot(const ScopedFakeBoot&) = delete;
  ScopedFakeBoot& operator=(const ScopedFakeBoot&) = delete;
};

// After an append_child (mode=own) on a replicated node was SIGKILLed, the
// request each of its threads had in flight may be stored in JetStream
// without its acknowledgement reaching the ack file. Adds an ack for every
// event of `store` past the last acknowledged version of its stream, in
// streams "<tag>-t<t>-s<k>" of the killed children's `tags` (writer
// "<tag>-t<t>"), and returns how many each tag got: at most one request per
// thread, so the caller bounds it (threads x max_events). VerifyLog then
// checks those events like the others (payload, versions, once).
inline std::map<std::string, int> AdoptInFlightTails(Store* store,
                                                     const std::set<std::string>& tags,
                                                     std::vector<AckRecord>* acks) {
  std::map<std::string, int64_t> last_acked;
  for (const AckRecord& a : *acks) {
    auto [it, inserted] = last_acked.emplace(a.stream, a.last_version);
    if (!inserted) it->second = std::max(it->second, a.last_version);
  }
  std::map<std::string, int> adopted;
  absl::StatusOr<std::vector<RecordedEvent>> events = store->ReadAll(1);
  EXPECT_TRUE(events.ok()) << events.status();
  if (!events.ok()) return adopted;
  for (const RecordedEvent& e : *events) {
    const std::string tag = e.stream.substr(0, e.stream.find('-'));
    auto last = last_acked.find(e.stream);
    if (tags.count(tag) == 0 || (last != last_acked.end() && e.version <= last->second)) continue;
    ++adopted[tag];
    AckRecord a;
    a.stream = e.stream;
    a.writer = e.stream.substr(0, e.stream.rfind("-s"));
    a.first_version = a.last_version = e.version;
    a.first_position = a.last_position = e.position;
    acks->push_back(a);
  }
  return adopted;
}

}  // namespace rill::testing

#endif  // RILL_TESTS_CHILD_CHECKS_H_
