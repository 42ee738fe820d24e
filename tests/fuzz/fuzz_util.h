// Shared by the fuzz targets in tests/fuzz: checks that abort (so libFuzzer
// and the replay tests report them) and the checksum prefix of stored values.
//
// A target is one file `<name>_fuzz.cc` defining LLVMFuzzerTestOneInput. It
// must never crash, leak or trip a sanitizer on any input; a broken promise
// (e.g. a decoder that accepts a record and then reads it differently) is
// reported with FUZZ_CHECK, which aborts.
#ifndef RILL_TESTS_FUZZ_FUZZ_UTIL_H_
#define RILL_TESTS_FUZZ_FUZZ_UTIL_H_

#include <xxhash.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"

#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

namespace rill::fuzz {

// `value` with its first 8 bytes replaced by the little-endian XXH3-64 of
// the rest: how a stored event or snapshot value carries its checksum. Lets
// mutated records get past the checksum to the FlatBuffers verifier.
// REQUIRES: value.size() >= 8.
inline std::string WithValidChecksum(absl::string_view value) {
  std::string fixed(value);
  const uint64_t sum = XXH3_64bits(fixed.data() + 8, fixed.size() - 8);
  for (int i = 0; i < 8; ++i) fixed[i] = static_cast<char>(sum >> (8 * i));
  return fixed;
}

// Keeps the compiler from dropping reads whose result is otherwise unused.
inline void Consume(size_t n) {
  static volatile size_t sink;
  sink = sink + n;
}

}  // namespace rill::fuzz

#endif  // RILL_TESTS_FUZZ_FUZZ_UTIL_H_
