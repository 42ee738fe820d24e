// ExpectedVersion: the optimistic-concurrency condition of an append.
//
// Semantics follow EventStoreDB:
//   Any()          the append never fails on the stream's version;
//   NoStream()     the stream must not exist yet (it has no events);
//   StreamExists() the stream must have at least one event;
//   Exact(n)       the stream's last version must be n (versions are 0-based,
//                  so Exact(0) means "exactly one event so far").
// A mismatch fails the whole append with absl::StatusCode::kAborted and a
// message naming the expected and the actual version.
//
// Thread-safety: a plain value type.
#ifndef RILL_EXPECTED_VERSION_H_
#define RILL_EXPECTED_VERSION_H_

#include <cstdint>
#include <string>

namespace rill {

class ExpectedVersion {
 public:
  enum class Kind : uint8_t { kAny = 0, kNoStream = 1, kStreamExists = 2, kExact = 3 };

  static constexpr ExpectedVersion Any() { return ExpectedVersion(Kind::kAny, -1); }
  static constexpr ExpectedVersion NoStream() { return ExpectedVersion(Kind::kNoStream, -1); }
  static constexpr ExpectedVersion StreamExists() {
    return ExpectedVersion(Kind::kStreamExists, -1);
  }
  // REQUIRES: version >= 0 (a negative n is rejected by Append as
  // InvalidArgument).
  static constexpr ExpectedVersion Exact(int64_t version) {
    return ExpectedVersion(Kind::kExact, version);
  }

  constexpr Kind kind() const { return kind_; }
  // Meaningful only for kind() == kExact.
  constexpr int64_t version() const { return version_; }

  // "any", "no stream", "stream exists" or the number, for messages.
  std::string ToString() const;

  friend constexpr bool operator==(ExpectedVersion a, ExpectedVersion b) {
    return a.kind_ == b.kind_ && a.version_ == b.version_;
  }

 private:
  constexpr ExpectedVersion(Kind kind, int64_t version) : kind_(kind), version_(version) {}
  Kind kind_;
  int64_t version_;
};

}  // namespace rill

#endif  // RILL_EXPECTED_VERSION_H_
