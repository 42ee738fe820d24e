// What every `rill` command shares: exit codes, error lines, opening the
// store, progress bars and table output. See docs/admin.md.
#ifndef RILL_TOOLS_COMMON_H_
#define RILL_TOOLS_COMMON_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "rill/store.h"

namespace CLI {
class App;
}

namespace rill::tool {

// Exit codes, the same for every command (docs/admin.md).
enum Exit : int {
  kExitOk = 0,
  kExitError = 1,      // anything not below
  kExitUsage = 2,      // bad usage or invalid input
  kExitConflict = 3,   // expected-version conflict
  kExitKeyReused = 4,  // idempotency key reused with a different request
  kExitNotFound = 5,   // store, stream or projection not found
  kExitCorrupt = 6,    // corruption found
  kExitFull = 7,       // disk or map full
};

// The exit code for a status, by its code.
int ExitCodeFor(const absl::Status& status);

// Prints "rill: <message>" (and a hint on what to do, chosen by the code, or
// `hint` when given) on one line to stderr; returns ExitCodeFor(status).
int Fail(const absl::Status& status, absl::string_view hint = "");

// A command to run once the command line has been parsed.
using Action = std::function<int()>;

// Each command group adds its subcommands to `app`; the one the user chose
// sets *action from its parse callback.
void AddInfoCommands(CLI::App& app, Action* action);
void AddReadCommands(CLI::App& app, Action* action);
void AddAppendCommands(CLI::App& app, Action* action);
void AddTransferCommands(CLI::App& app, Action* action);
void AddVerifyCommands(CLI::App& app, Action* action);
void AddProjectionCommands(CLI::App& app, Action* action);
void AddSnapshotCommands(CLI::App& app, Action* action);
void AddBenchCommands(CLI::App& app, Action* action);
void AddReplicateCommands(CLI::App& app, Action* action);
void AddMetricsCommands(CLI::App& app, Action* action);

enum class OpenMode {
  kRead,    // read-only; the store must exist
  kWrite,   // read-write; the store must exist
  kCreate,  // read-write; created when the directory does not exist yet
};

// Opens the store in `dir` with `options` (their read_only and
// create_if_missing are set from `mode`). A missing store is NotFound ("no
// rill store at DIR") and nothing is created, except with kCreate.
absl::StatusOr<std::unique_ptr<Store>> OpenStore(const std::string& dir, OpenMode mode,
                                                 StoreOptions options = {});

// A progress bar on stderr, drawn only when stderr is a terminal, at most
// ten times a second. Thread-safe.
class Progress {
 public:
  Progress(std::string label, uint64_t total);
  ~Progress();  // clears the bar
  void Update(uint64_t done);
  void SetTotal(uint64_t total);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// A plain text table, columns padded to their widest cell.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print() const;  // to stdout

 private:
  std::vector<std::vector<std::string>> rows_;
};

// "2026-11-26 12:00:01.123456Z", or "-" for InfinitePast.
std::string TimeText(absl::Time t);
// RFC 3339 with microseconds, UTC: "2026-11-26T12:00:01.123456Z".
std::string Rfc3339(absl::Time t);
// "1 event", "2 events".
std::string Count(uint64_t n, absl::string_view noun);
// "12.3 MiB"
std::string FormatBytes(uint64_t bytes);

// Writes `line` and a newline to stdout and flushes, so that a pipe reader
// (and a test) sees each event as it comes. False when stdout is closed.
bool PrintLine(absl::string_view line);

// Parses "any", "no-stream", "exists" or a version N >= 0.
absl::StatusOr<ExpectedVersion> ParseExpectedVersion(absl::string_view text);

}  // namespace rill::tool

#endif  // RILL_TOOLS_COMMON_H_
