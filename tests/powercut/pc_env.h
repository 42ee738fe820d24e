// The environment that runs a child under the power-cut journal
// (pc_intercept.c): the preloaded library, the journaled root, the journal
// and the stash, optionally PC_KILL_AT. For tests compiled with
// RILL_PC_INTERCEPT (the library's path).
#ifndef RILL_TESTS_POWERCUT_PC_ENV_H_
#define RILL_TESTS_POWERCUT_PC_ENV_H_

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace rill::powercut {

inline std::vector<std::string> PreloadEnv(const std::string& root, const std::string& journal,
                                           const std::string& stash, uint64_t kill_at = 0) {
  std::vector<std::string> env = {absl::StrCat("LD_PRELOAD=", RILL_PC_INTERCEPT), "PC_ROOT=" + root,
                                  "PC_JOURNAL=" + journal, "PC_STASH=" + stash};
  if (kill_at != 0) env.push_back(absl::StrCat("PC_KILL_AT=", kill_at));
  // The preloaded library comes before the sanitizer runtime.
  const char* asan = getenv("ASAN_OPTIONS");
  env.push_back(
      absl::StrCat("ASAN_OPTIONS=", asan ? asan : "", asan ? ":" : "", "verify_asan_link_order=0"));
  return env;
}

}  // namespace rill::powercut

#endif  // RILL_TESTS_POWERCUT_PC_ENV_H_
