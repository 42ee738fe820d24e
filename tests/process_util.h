// Helpers for tests that run real processes: child programs started with
// fork + execv (tests/children/), code run in a forked copy of the test
// (for checks that might crash, or that change process-wide limits), and a
// bounded wait for a condition (a hang detector, never a speed assertion).
//
// Header-only: tests/CMakeLists.txt builds only test_util.cc into the test
// library.
#ifndef RILL_TESTS_PROCESS_UTIL_H_
#define RILL_TESTS_PROCESS_UTIL_H_

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "test_util.h"

namespace rill::testing {

// "exited with code N" / "killed by signal N (name)".
inline std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)),
                        ")");
  }
  return absl::StrCat("wait status ", status);
}

inline bool ExitedWithCode(int status, int code) {
  return WIFEXITED(status) && WEXITSTATUS(status) == code;
}

inline std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Polls `cond` every millisecond until it holds (true) or `timeout` passed
// (false). Tests use generous timeouts only to turn a hang into a failure.
inline bool WaitUntil(const std::function<bool()>& cond, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!cond()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

// Runs `body` in a forked copy of this process and returns the child's wait
// status; the child exits with body's return value. Fork only while this
// process runs no other threads (no Store open). Inside `body` use no
// GoogleTest assertions: report to stderr and return non-zero. A crash (or a
// sanitizer report, which exits with code 1) never looks like exit code 0.
inline int RunInForkedChild(const std::function<int()>& body) {
  fflush(stdout);
  fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    const int rc = body();
    fflush(stdout);
    fflush(stderr);
    _exit(rc);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// Runs `command` with /bin/sh; its output (stdout and stderr), then
// "exit=N" with its exit status.
inline std::string RunShell(const std::string& command) {
  FILE* p = popen(absl::StrCat(command, " 2>&1; echo exit=$?").c_str(), "r");
  if (p == nullptr) return "popen failed";
  std::string out;
  char buf[512];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

// A child program (tests/children/<name>.cc) started with fork + execve. Its
// stdin and stdout are pipes to the test; its stderr goes to a file, shown on
// failure. `env` ("NAME=value") is added to (or replaces in) the test's
// environment.
// The destructor kills (SIGKILL) and reaps a child that is still running, so
// a failed ASSERT never leaves a process behind.
class ChildProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(
      const std::string& name, const std::vector<std::string>& args, const std::string& stderr_path,
      const std::vector<std::string>& env = {}) {
    const std::string binary = ChildBinary(name);
    std::vector<std::string> env_storage = env;
    for (char** e = environ; *e != nullptr; ++e) {
      const absl::string_view var(*e);
      bool replaced = false;
      for (const std::string& mine : env) {
        replaced =
            replaced || mine.substr(0, mine.find('=') + 1) == var.substr(0, var.find('=') + 1);
      }
      if (!replaced) env_storage.push_back(*e);
    }
    std::vector<char*> envp;
    for (std::string& e : env_storage) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_storage;
    argv_storage.push_back(binary);
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);

    int in_pipe[2], out_pipe[2];
    if (pipe2(in_pipe, O_CLOEXEC) != 0) return absl::InternalError("pipe2");
    if (pipe2(out_pipe, O_CLOEXEC) != 0) {
      close(in_pipe[0]);
      close(in_pipe[1]);
      return absl::InternalError("pipe2");
    }
    fflush(stdout);
    fflush(stderr);
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError("fork");
    if (pid == 0) {
      // Only async-signal-safe calls until execv.
      const int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (err < 0 || dup2(err, 2) < 0 || dup2(in_pipe[0], 0) < 0 || dup2(out_pipe[1], 1) < 0) {
        _exit(126);
      }
      execve(binary.c_str(), argv.data(), envp.data());
      _exit(127);
    }
    close(in_pipe[0]);
    close(out_pipe[1]);
    auto child = std::unique_ptr<ChildProcess>(new ChildProcess());
    child->pid_ = pid;
    child->stdin_fd_ = in_pipe[1];
    child->stdout_fd_ = out_pipe[0];
    child->stderr_path_ = stderr_path;
    return child;
  }

  ~ChildProcess() {
    if (!reaped_) {
      kill(pid_, SIGKILL);
      Wait();
    }
    CloseStdin();
    if (stdout_fd_ >= 0) close(stdout_fd_);
  }

  pid_t pid() const { return pid_; }

  // Reads one line (without its '\n') from the child's stdout. DeadlineExceeded
  // after `timeout`; Unavailable when the child closed its stdout.
  absl::StatusOr<std::string> ReadLine(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    std::string line;
    for (;;) {
      const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (left_ms <= 0) return absl::DeadlineExceededError("no line from child");
      pollfd p{stdout_fd_, POLLIN, 0};
      const int n = poll(&p, 1, static_cast<int>(left_ms));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) continue;
      char c;
      const ssize_t r = read(stdout_fd_, &c, 1);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return absl::UnavailableError(absl::StrCat("child stdout closed: ", line));
      if (c == '\n') return line;
      line.push_back(c);
    }
  }

  // Closing the child's stdin is how tests tell a waiting child to go on.
  void CloseStdin() {
    if (stdin_fd_ >= 0) close(stdin_fd_);
    stdin_fd_ = -1;
  }

  void Kill(int sig) {
    if (!reaped_) kill(pid_, sig);
  }

  // True once the child has ended (reaps it without blocking).
  bool Exited() {
    if (!reaped_ && waitpid(pid_, &status_, WNOHANG) == pid_) reaped_ = true;
    return reaped_;
  }

  // Waits for the child to end and returns its wait status (idempotent).
  int Wait() {
    if (!reaped_) {
      while (waitpid(pid_, &status_, 0) < 0 && errno == EINTR) {
      }
      reaped_ = true;
    }
    return status_;
  }

  // What the child wrote to its stderr so far.
  std::string Stderr() const { return ReadFileOrEmpty(stderr_path_); }

 private:
  ChildProcess() = default;

  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  std::string stderr_path_;
  bool reaped_ = false;
  int status_ = 0;
};

}  // namespace rill::testing

#endif  // RILL_TESTS_PROCESS_UTIL_H_
