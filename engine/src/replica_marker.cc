#include "replica_marker.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/random/distributions.h"
#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "store_open.h"

namespace rill::internal {
namespace {

namespace fs = std::filesystem;

constexpr char kMarkerFile[] = "replica.boot";
constexpr absl::string_view kClean = "clean";
constexpr absl::string_view kDirty = "dirty ";

absl::Status Errno(int err, absl::string_view what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", strerror(err)));
}

std::string MarkerPath(const std::string& dir) { return absl::StrCat(dir, "/", kMarkerFile); }

// The marker's text (empty when the file is new or was never written).
absl::StatusOr<std::string> ReadMarker(int fd, const std::string& path) {
  char buf[128];
  const ssize_t n = pread(fd, buf, sizeof(buf), 0);
  if (n < 0) return Errno(errno, absl::StrCat("cannot read ", path));
  return std::string(absl::StripAsciiWhitespace(absl::string_view(buf, static_cast<size_t>(n))));
}

absl::Status WriteMarker(int fd, const std::string& path, absl::string_view text) {
  const std::string line = absl::StrCat(text, "\n");
  // One write of a few bytes at offset 0, then the length: a reader sees the
  // old text or the new one (both fit in one page).
  if (pwrite(fd, line.data(), line.size(), 0) != static_cast<ssize_t>(line.size()) ||
      ftruncate(fd, static_cast<off_t>(line.size())) != 0 || fdatasync(fd) != 0) {
    return Errno(errno, absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

// Whether the marker's `text` says another boot left the replica in use.
bool LeftInUseByAnotherBoot(absl::string_view text, absl::string_view boot) {
  return absl::StartsWith(text, kDirty) && text.substr(kDirty.size()) != boot;
}

}  // namespace

std::string BootId() {
  if (const char* fake = std::getenv("RILL_TEST_FAKE_BOOT_ID"); fake != nullptr && *fake != '\0') {
    return fake;
  }
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return std::string(absl::StripAsciiWhitespace(id));
}

bool HasReplicaMarker(const std::string& dir) {
  std::error_code ec;
  return fs::exists(MarkerPath(dir), ec);
}

absl::StatusOr<std::unique_ptr<ReplicaMarker>> ReplicaMarker::Acquire(const std::string& dir,
                                                                      bool* rebuilt) {
  *rebuilt = false;
  const std::string boot = BootId();
  if (boot.empty()) {
    return absl::FailedPreconditionError(
        "cannot read this machine's boot id (/proc/sys/kernel/random/boot_id), which tells a "
        "replicated node whether its unsynced replica survived; make the node with "
        "--sync-replica (sync_replica = true) where /proc/sys is hidden");
  }
  const std::string dirty = absl::StrCat(kDirty, boot);
  const std::string path = MarkerPath(dir);
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Errno(errno, absl::StrCat("cannot open ", path));
  std::unique_ptr<ReplicaMarker> marker(new ReplicaMarker(path, fd));
  if (flock(fd, LOCK_SH) != 0) return Errno(errno, absl::StrCat("cannot lock ", path));
  absl::BitGen bitgen;
  bool paused = false;
  for (;;) {
    absl::StatusOr<std::string> text = ReadMarker(fd, path);
    if (!text.ok()) return text.status();
    if (LeftInUseByAnotherBoot(*text, boot)) {
      // No process of that boot is alive; the first opener of this one to
      // get the lock to itself deletes the replica. Never waiting for it: an
      // opener that got it first holds its shared lock for as long as it
      // has the node open (days, for a service), and has rewritten the
      // marker. So an opener that cannot have the lock at once (a failed
      // conversion lets go of the shared lock too) pauses a few random
      // milliseconds, so that two openers trying together do not keep
      // failing together, takes the shared lock again and reads again.
      // A closer may slip in between too: hence the loop, which reads the
      // marker again under each lock it holds.
      if (const char* pause = std::getenv("RILL_TEST_MARKER_PAUSE_MS");
          pause != nullptr && !paused) {
        absl::SleepFor(absl::Milliseconds(std::atoi(pause)));  // tests: openers meet here, once
        paused = true;
      }
      if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK) return Errno(errno, absl::StrCat("cannot lock ", path));
        absl::SleepFor(absl::Microseconds(absl::Uniform(bitgen, 1000, 10000)));
        if (flock(fd, LOCK_SH) != 0) return Errno(errno, absl::StrCat("cannot lock ", path));
        continue;
      }
      text = ReadMarker(fd, path);
      if (!text.ok()) return text.status();
      if (LeftInUseByAnotherBoot(*text, boot)) {
        std::error_code ec;
        for (const char* sub : {"log", "derived"}) {
          fs::remove_all(absl::StrCat(dir, "/", sub), ec);
          if (ec) {
            return absl::UnavailableError(
                absl::StrCat("cannot delete the replica's ", dir, "/", sub, ": ", ec.message()));
          }
        }
        if (absl::Status s = SyncPath(dir, O_RDONLY | O_DIRECTORY); !s.ok()) return s;
        *rebuilt = true;
        if (absl::Status s = WriteMarker(fd, path, dirty); !s.ok()) return s;
        // Kept exclusive until the new replica exists (Opened): an opener
        // let in now would find a node with no replica half made.
        marker->exclusive_ = true;
        return marker;
      }
      if (flock(fd, LOCK_SH) != 0) return Errno(errno, absl::StrCat("cannot lock ", path));
      continue;
    }
    if (*text == dirty) return marker;
    // Clean, or new. Openers holding the lock together all write the same.
    if (absl::Status s = WriteMarker(fd, path, dirty); !s.ok()) return s;
    if (text->empty()) {
      // A new marker's directory entry must be as durable as its text
      // before anything unsynced follows: missing, a marker reads "clean".
      if (absl::Status s = SyncPath(dir, O_RDONLY | O_DIRECTORY); !s.ok()) return s;
    }
  }
}

absl::Status ReplicaMarker::Opened() {
  if (!exclusive_) return absl::OkStatus();
  if (flock(fd_, LOCK_SH) != 0) return Errno(errno, absl::StrCat("cannot lock ", path_));
  exclusive_ = false;
  return absl::OkStatus();
}

void ReplicaMarker::Release(absl::FunctionRef<absl::Status()> sync) {
  if (fd_ < 0) return;
  // Only the last process of the node gets the lock to itself; the others
  // leave the marker dirty for it. A failed conversion may have let go of
  // the shared lock too: harmless, as this process commits nothing more
  // (the store's threads have stopped).
  if (flock(fd_, LOCK_EX | LOCK_NB) == 0 && sync().ok()) {
    (void)WriteMarker(fd_, path_, kClean);
  }
  close(fd_);
  fd_ = -1;
}

ReplicaMarker::~ReplicaMarker() {
  if (fd_ >= 0) close(fd_);
}

absl::Status CheckReplicaReadable(const std::string& dir) {
  const std::string path = MarkerPath(dir);
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::OkStatus();  // no marker: a replica that always synced
  absl::StatusOr<std::string> text = ReadMarker(fd, path);
  close(fd);
  if (!text.ok()) return text.status();
  const std::string boot = BootId();
  if (boot.empty() || LeftInUseByAnotherBoot(*text, boot)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the replica of node ", dir,
        " was open when the machine went down and may be damaged (it is not fsync'd); open the "
        "node writable (the service, or any command that appends) to rebuild it from JetStream"));
  }
  return absl::OkStatus();
}

}  // namespace rill::internal
