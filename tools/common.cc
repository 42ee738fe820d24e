#include "common.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace rill::tool {
namespace fs = std::filesystem;

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return kExitUsage;
    case absl::StatusCode::kAborted:
      return kExitConflict;
    case absl::StatusCode::kAlreadyExists:
      return kExitKeyReused;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kDataLoss:
      return kExitCorrupt;
    case absl::StatusCode::kResourceExhausted:
      return kExitFull;
    default:
      return kExitError;
  }
}

int Fail(const absl::Status& status, absl::string_view hint) {
  std::string what;
  if (!hint.empty()) {
    what = std::string(hint);
  } else {
    switch (status.code()) {
      case absl::StatusCode::kAborted:
        what = "read the stream and retry with its current version";
        break;
      case absl::StatusCode::kAlreadyExists:
        what = "use a new idempotency key for a different request";
        break;
      case absl::StatusCode::kDataLoss:
        what = "run `rill verify STORE` and restore from a backup if it reports damage";
        break;
      case absl::StatusCode::kResourceExhausted:
        what = "free disk space (nothing acknowledged was lost) and retry";
        break;
      case absl::StatusCode::kPermissionDenied:
        what = "run as a user who may write the store's files";
        break;
      default:
        break;
    }
  }
  std::fprintf(stderr, "rill: %s%s%s\n", std::string(status.message()).c_str(),
               what.empty() ? "" : "; ", what.c_str());
  return ExitCodeFor(status);
}

absl::StatusOr<std::unique_ptr<Store>> OpenStore(const std::string& dir, OpenMode mode,
                                                 StoreOptions options) {
  std::error_code ec;
  // A replicated node (replication.conf) may have no replica at the moment:
  // deleted, or to be rebuilt after an OS crash; a writable open rebuilds it.
  const bool node = fs::exists(fs::path(dir) / "replication.conf", ec);
  if (mode != OpenMode::kCreate && !(node && mode == OpenMode::kWrite) &&
      !fs::exists(fs::path(dir) / "log" / "data.mdb", ec)) {
    return absl::NotFoundError(absl::StrCat(
        "no rill store at ", dir,
        fs::exists(dir, ec) ? " (the directory holds no log/data.mdb)" : " (no such directory)"));
  }
  options.read_only = mode == OpenMode::kRead;
  options.create_if_missing = mode == OpenMode::kCreate;
  return Store::Open(dir, options);
}

struct Progress::State {
  std::string label;
  absl::Mutex mu;
  uint64_t total ABSL_GUARDED_BY(mu) = 0;
  absl::Time last_draw ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  absl::Time start = absl::Now();
  bool drawn ABSL_GUARDED_BY(mu) = false;
  bool tty = isatty(STDERR_FILENO) == 1;
};

Progress::Progress(std::string label, uint64_t total) : state_(std::make_unique<State>()) {
  state_->label = std::move(label);
  absl::MutexLock lock(&state_->mu);
  state_->total = total;
}

Progress::~Progress() {
  absl::MutexLock lock(&state_->mu);
  if (state_->drawn) std::fprintf(stderr, "\r\033[K");
}

void Progress::SetTotal(uint64_t total) {
  absl::MutexLock lock(&state_->mu);
  state_->total = total;
}

void Progress::Update(uint64_t done) {
  if (!state_->tty) return;
  absl::MutexLock lock(&state_->mu);
  const absl::Time now = absl::Now();
  if (now - state_->last_draw < absl::Milliseconds(100)) return;
  // Nothing for quick jobs: a bar only once the work has taken a second.
  if (now - state_->start < absl::Seconds(1)) return;
  state_->last_draw = now;
  state_->drawn = true;
  const uint64_t total = std::max<uint64_t>(state_->total, 1);
  const double frac = std::min(1.0, static_cast<double>(done) / total);
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(frac * kWidth);
  std::fprintf(stderr, "\r%s [%s%s] %3d%% %llu/%llu", state_->label.c_str(),
               std::string(filled, '#').c_str(), std::string(kWidth - filled, ' ').c_str(),
               static_cast<int>(frac * 100), static_cast<unsigned long long>(done),
               static_cast<unsigned long long>(state_->total));
  std::fflush(stderr);
}

void Table::Print() const {
  std::vector<size_t> widths;
  for (const auto& row : rows_) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    PrintLine(line);
  }
}

std::string TimeText(absl::Time t) {
  if (t == absl::InfinitePast()) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%E6SZ", t, absl::UTCTimeZone());
}

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", t, absl::UTCTimeZone());
}

std::string Count(uint64_t n, absl::string_view noun) {
  if (n == 1) return absl::StrCat(n, " ", noun);
  if (absl::EndsWith(noun, "y"))
    return absl::StrCat(n, " ", noun.substr(0, noun.size() - 1), "ies");
  return absl::StrCat(n, " ", noun, "s");
}

std::string FormatBytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrCat(bytes, " B") : absl::StrFormat("%.1f %s", v, units[u]);
}

bool PrintLine(absl::string_view line) {
  if (std::fwrite(line.data(), 1, line.size(), stdout) != line.size()) return false;
  if (std::fputc('\n', stdout) == EOF) return false;
  return std::fflush(stdout) == 0;
}

absl::StatusOr<ExpectedVersion> ParseExpectedVersion(absl::string_view text) {
  if (text == "any") return ExpectedVersion::Any();
  if (text == "no-stream") return ExpectedVersion::NoStream();
  if (text == "exists") return ExpectedVersion::StreamExists();
  int64_t n;
  if (!absl::SimpleAtoi(text, &n) || n < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--expected-version must be any, no-stream, exists or a version >= 0, not \"", text, "\""));
  }
  return ExpectedVersion::Exact(n);
}

}  // namespace rill::tool
