// rill export, rill import: the log as JSON lines (event_json.h).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common.h"
#include "event_json.h"

namespace rill::tool {
namespace {

namespace fs = std::filesystem;

struct ExportArgs {
  std::string store;
  uint64_t from = 1;
  uint64_t to = 0;  // 0: the head when the export starts
  std::string prefix;
  std::string output;
};

absl::Status WriteErrno(int err, const std::string& path) {
  if (err == ENOSPC || err == EDQUOT || err == EFBIG) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot write ", path, ": disk full"));
  }
  return absl::UnknownError(absl::StrCat("cannot write ", path, ": ", std::strerror(err)));
}

int RunExport(const ExportArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kRead);
  if (!store.ok()) return Fail(store.status());
  absl::StatusOr<uint64_t> head = (*store)->HeadPosition();
  if (!head.ok()) return Fail(head.status());
  const uint64_t from = std::max<uint64_t>(args.from, 1);
  const uint64_t to = args.to == 0 ? *head : std::min(args.to, *head);
  const bool to_file = !args.output.empty() && args.output != "-";
  FILE* out = stdout;
  if (to_file) {
    out = std::fopen(args.output.c_str(), "w");
    if (out == nullptr) return Fail(WriteErrno(errno, args.output));
  }
  const std::string out_name = to_file ? args.output : "stdout";
  Progress progress("export", to >= from ? to - from + 1 : 0);
  uint64_t exported = 0, first = 0, last = 0;
  int write_error = 0;
  // Unfiltered, with a limit: the scan reads no record past `to` (a damaged
  // record after the range must not fail the export of the range).
  ReadOptions options;
  options.limit = to >= from ? to - from + 1 : 0;
  absl::Status s;
  if (from <= to) {
    s = (*store)->ScanAll(from, options, [&](const EventView& e) {
      if (e.position() > to) return false;
      if (!absl::StartsWith(e.stream(), args.prefix)) return true;
      std::string line = EventJsonLine(e);
      line.push_back('\n');
      if (std::fwrite(line.data(), 1, line.size(), out) != line.size()) {
        write_error = errno != 0 ? errno : EIO;
        return false;
      }
      if (first == 0) first = e.position();
      last = e.position();
      ++exported;
      progress.Update(e.position() - from + 1);
      return true;
    });
  }
  if (write_error == 0 && std::fflush(out) != 0) write_error = errno;
  if (to_file) {
    if (write_error == 0 && fsync(fileno(out)) != 0) write_error = errno;
    if (std::fclose(out) != 0 && write_error == 0) write_error = errno;
  }
  if (write_error != 0 || !s.ok()) {
    if (to_file) {
      std::error_code ec;
      fs::remove(args.output, ec);
    }
    if (write_error != 0) {
      return Fail(WriteErrno(write_error, out_name), "free disk space and export again");
    }
    return Fail(s);
  }
  const std::string summary =
      exported == 0 ? absl::StrCat("exported 0 events to ", out_name)
                    : absl::StrCat("exported ", Count(exported, "event"), " (positions ", first,
                                   "..", last, ") to ", out_name);
  if (to_file) {
    PrintLine(summary);
  } else {
    std::fprintf(stderr, "%s\n", summary.c_str());
  }
  return kExitOk;
}

struct ImportArgs {
  std::string store;
  std::string file;
  size_t batch = 1000;
  bool json = false;
};

struct Line {
  size_t number;
  ParsedEvent event;
};

// Pass 1: every line parses, names a stream, carries no event id twice, and
// gives each stream's versions without gaps. Returns the number of events.
absl::StatusOr<uint64_t> CheckFile(const std::string& path) {
  absl::flat_hash_map<std::string, int64_t> versions;
  absl::flat_hash_map<std::string, size_t> ids;  // id bytes -> line
  uint64_t events = 0;
  absl::Status s = ForEachEventLine(path, [&](size_t n, ParsedEvent e) -> absl::Status {
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(path, " line ", n, ": ", why));
    };
    if (e.stream.empty()) return bad("the field \"stream\" is missing");
    if (!e.event.id.IsNil()) {
      const auto& b = e.event.id.bytes();
      auto [it, inserted] = ids.try_emplace(std::string(b.begin(), b.end()), n);
      if (!inserted) {
        return bad(absl::StrCat("event id ", e.event.id.ToString(), " repeats line ", it->second));
      }
    }
    if (e.version.has_value()) {
      auto it = versions.find(e.stream);
      if (it != versions.end() && *e.version != it->second + 1) {
        return bad(absl::StrCat("stream \"", e.stream, "\" jumps from version ", it->second, " to ",
                                *e.version));
      }
      versions[e.stream] = *e.version;
    }
    ++events;
    return absl::OkStatus();
  });
  if (s.code() == absl::StatusCode::kInvalidArgument) {
    return absl::InvalidArgumentError(absl::StrCat(s.message(), "; nothing was imported"));
  }
  if (!s.ok()) return s;
  return events;
}

// Appends a batch of lines: consecutive events of a stream go in one part,
// parts of distinct streams in one AppendMulti; a stream seen again starts
// the next request (so events keep their order, and positions match the
// file's when the store was empty).
absl::Status ImportBatch(Store* store, const std::string& file, const std::vector<Line>& lines,
                         uint64_t* imported) {
  std::vector<StreamAppend> request;
  std::vector<size_t> first_lines;
  absl::flat_hash_set<std::string> in_request;
  auto submit = [&]() -> absl::Status {
    if (request.empty()) return absl::OkStatus();
    absl::StatusOr<std::vector<AppendResult>> r = store->AppendMulti(request);
    if (!r.ok()) {
      return absl::Status(
          r.status().code(),
          absl::StrCat(file, " line ", first_lines.front(), ": ", r.status().message(), "; the ",
                       Count(*imported, "event"), " before it were imported"));
    }
    for (const StreamAppend& a : request) *imported += a.events.size();
    request.clear();
    first_lines.clear();
    in_request.clear();
    return absl::OkStatus();
  };
  for (const Line& line : lines) {
    const ParsedEvent& e = line.event;
    if (request.empty() || request.back().stream != e.stream) {
      if (in_request.contains(e.stream)) {
        if (absl::Status s = submit(); !s.ok()) return s;
      }
      StreamAppend part;
      part.stream = e.stream;
      if (e.version.has_value()) {
        part.expected =
            *e.version == 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(*e.version - 1);
      }
      request.push_back(std::move(part));
      first_lines.push_back(line.number);
      in_request.insert(e.stream);
    }
    request.back().events.push_back(e.event);
  }
  return submit();
}

int ImportInto(const ImportArgs& args, uint64_t total, Store* store, uint64_t* imported);

int RunImport(const ImportArgs& args) {
  absl::StatusOr<uint64_t> total = CheckFile(args.file);
  if (!total.ok()) return Fail(total.status());
  std::error_code ec;
  const bool existed = fs::exists(args.store, ec);
  uint64_t imported = 0;
  int code;
  {
    absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kCreate);
    if (!store.ok()) return Fail(store.status());
    code = ImportInto(args, *total, store->get(), &imported);
  }
  // A store this import created and could not put anything into goes away.
  if (code != kExitOk && imported == 0 && !existed) fs::remove_all(args.store, ec);
  return code;
}

int ImportInto(const ImportArgs& args, uint64_t total, Store* store, uint64_t* imported_out) {
  Progress progress("import", total);
  uint64_t& imported = *imported_out;
  std::vector<Line> batch;
  const size_t batch_size = std::max<size_t>(args.batch, 1);
  bool appending_failed = false;
  absl::Status s = ForEachEventLine(args.file, [&](size_t n, ParsedEvent e) -> absl::Status {
    batch.push_back(Line{n, std::move(e)});
    if (batch.size() < batch_size) return absl::OkStatus();
    absl::Status appended = ImportBatch(store, args.file, batch, &imported);
    appending_failed = !appended.ok();
    batch.clear();
    progress.Update(imported);
    return appended;
  });
  if (!s.ok() && !appending_failed && s.code() == absl::StatusCode::kInvalidArgument) {
    // The file changed since it was checked.
    return Fail(absl::InvalidArgumentError(
        absl::StrCat(s.message(), "; ", imported, " events before this batch were imported")));
  }
  if (!s.ok()) return Fail(s);
  if (absl::Status last = ImportBatch(store, args.file, batch, &imported); !last.ok()) {
    return Fail(last);
  }
  absl::StatusOr<uint64_t> head = store->HeadPosition();
  if (!head.ok()) return Fail(head.status());
  if (args.json) {
    PrintLine(absl::StrCat(R"({"imported":)", imported, R"(,"head_position":)", *head, "}"));
  } else {
    PrintLine(absl::StrCat("imported ", Count(imported, "event"), " from ", args.file,
                           "; head position ", *head));
  }
  return kExitOk;
}

}  // namespace

void AddTransferCommands(CLI::App& app, Action* action) {
  auto e = std::make_shared<ExportArgs>();
  CLI::App* exp = app.add_subcommand(
      "export", "Write events as JSON lines with every envelope field (for `rill import`)");
  exp->add_option("STORE", e->store, "store directory")->required();
  exp->add_option("--from", e->from, "first position (default 1)");
  exp->add_option("--to", e->to, "last position (default: the head when the export starts)");
  exp->add_option("--prefix", e->prefix, "only streams whose names start with P");
  exp->add_option("-o,--output", e->output, "write to FILE (default: stdout)");
  exp->footer(
      "Example:\n  rill export /var/lib/orders -o orders.jsonl\n"
      "  rill export /var/lib/orders --from 1000 --prefix order- | gzip > part.jsonl.gz");
  exp->callback([e, action] { *action = [e] { return RunExport(*e); }; });

  auto i = std::make_shared<ImportArgs>();
  CLI::App* imp = app.add_subcommand(
      "import",
      "Append the events of a JSON-lines file (as written by `rill export`); creates "
      "the store when its directory does not exist");
  imp->add_option("STORE", i->store, "store directory")->required();
  imp->add_option("FILE", i->file, "JSON lines, one event per line")->required();
  imp->add_option("--batch", i->batch, "events per atomic append (default 1000)");
  imp->add_flag("--json", i->json, "print the result as JSON");
  imp->footer(
      "The whole file is checked first: a malformed line (named by its number), a repeated "
      "event id or a gap in a stream's versions imports nothing. Lines carrying \"version\" "
      "are appended with that expected version, so importing into a store that already "
      "holds those streams stops with exit code 3.\n"
      "Example:\n  rill import /var/lib/orders-copy orders.jsonl");
  imp->callback([i, action] { *action = [i] { return RunImport(*i); }; });
}

}  // namespace rill::tool
