#include "rill/expected_version.h"

#include "absl/strings/str_cat.h"

namespace rill {

std::string ExpectedVersion::ToString() const {
  switch (kind_) {
    case Kind::kAny:
      return "any";
    case Kind::kNoStream:
      return "no stream";
    case Kind::kStreamExists:
      return "stream exists";
    case Kind::kExact:
      return absl::StrCat(version_);
  }
  return "unknown";
}

}  // namespace rill
