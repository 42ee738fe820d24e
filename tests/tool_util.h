// Running the built `rill` admin tool as a user would, for the tool_*_test
// suites: argv in, exit code + stdout + stderr out.
#ifndef RILL_TESTS_TOOL_UTIL_H_
#define RILL_TESTS_TOOL_UTIL_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "process_util.h"

namespace rill::testing {

struct ToolRun {
  int exit_code = -1;  // -1: killed by a signal
  std::string out;
  std::string err;
  std::string Describe() const {
    return absl::StrCat("exit ", exit_code, "\n--- stdout:\n", out, "\n--- stderr:\n", err);
  }
};

struct ToolOptions {
  std::string stdin_path = "/dev/null";
  // RLIMIT_FSIZE for the tool (0: none), with SIGXFSZ ignored, so a write
  // past it fails with EFBIG as on a full disk.
  rlim_t file_size_limit = 0;
  std::vector<std::string> env;  // NAME=value entries, added or replacing the test's
};

inline std::string ToolBinary() { return RILL_TOOL_BINARY; }

// Runs `rill args...` to completion.
inline ToolRun RunTool(const std::vector<std::string>& args, const ToolOptions& options = {}) {
  static int counter = 0;
  const std::string base =
      absl::StrCat(::testing::TempDir(), "/rill-tool-", getpid(), "-", counter++);
  const std::string out_path = base + ".out", err_path = base + ".err";
  std::vector<std::string> argv_storage{ToolBinary()};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  // options.env first: it replaces the test's own entries of the same name.
  std::vector<std::string> env_storage = options.env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string var(*e);
    bool replaced = false;
    for (const std::string& mine : options.env) {
      replaced = replaced || mine.substr(0, mine.find('=') + 1) == var.substr(0, var.find('=') + 1);
    }
    if (!replaced) env_storage.push_back(var);
  }
  std::vector<char*> envp;
  for (std::string& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  fflush(stdout);
  fflush(stderr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int in = open(options.stdin_path.c_str(), O_RDONLY);
    const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || err < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) {
      _exit(126);
    }
    if (options.file_size_limit != 0) {
      signal(SIGXFSZ, SIG_IGN);
      rlimit lim{options.file_size_limit, options.file_size_limit};
      setrlimit(RLIMIT_FSIZE, &lim);
    }
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  ToolRun run;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) run.exit_code = WEXITSTATUS(status);
  run.out = ReadFileOrEmpty(out_path);
  run.err = ReadFileOrEmpty(err_path);
  unlink(out_path.c_str());
  unlink(err_path.c_str());
  return run;
}

inline void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

// Splits output into its lines (without the trailing empty one).
inline std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

}  // namespace rill::testing

#endif  // RILL_TESTS_TOOL_UTIL_H_
