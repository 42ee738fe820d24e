// The power cut itself: after the process under test was killed (SIGKILL,
// so the page cache still holds everything it wrote), RollBack puts the
// files under the journaled directory back into a state the disk could hold
// had the power failed at that moment, by the rules of fsync:
//
//   - a change to a file's contents or size journaled before an fsync or
//     fdatasync of that file began, which then returned success, is kept
//     (so is a write through an O_SYNC/O_DSYNC descriptor that returned);
//   - a change to a directory's entries (create, mkdir, rename, unlink,
//     rmdir) is kept when the directory was fsync'd after it the same way;
//   - everything else may be lost, in whole or in part, as the mode says.
//
// Modes, for the changes that may be lost:
//   kDropUnsynced  all of them are lost: the state at the last sync.
//   kPrefix        per file, the first k of them (k random) are kept, the
//                  next one torn at 512-byte sectors, the rest lost;
//                  namespace changes likewise, in order (as a journaling
//                  file system keeps them).
//   kReorder       per 512-byte sector, the sector holds what it held after
//                  a random number of the changes that touched it (out of
//                  order across sectors and files); each file's size after
//                  a random number of its size changes; namespace changes
//                  as in kPrefix.
//
// docs/reliability.md ("Power cuts") explains the model and its limits.
#ifndef RILL_TESTS_POWERCUT_ROLLBACK_H_
#define RILL_TESTS_POWERCUT_ROLLBACK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace rill::powercut {

enum class CutMode { kDropUnsynced = 0, kPrefix = 1, kReorder = 2 };

const char* CutModeName(CutMode mode);

struct RollbackReport {
  uint64_t records = 0;           // complete journal records
  uint64_t changes = 0;           // content and size changes journaled
  uint64_t durable_changes = 0;   // of those, synced (kept whatever the mode)
  uint64_t lost_changes = 0;      // not synced and not kept (wholly lost)
  uint64_t torn_changes = 0;      // not synced and kept in part
  uint64_t namespace_undone = 0;  // directory entries changes undone
  uint64_t syncs = 0;             // completed syncs
};

// Rolls the files back per `mode` (random choices from `seed`). `root` is
// the journaled directory (PC_ROOT), `stash` the PC_STASH directory.
// FailedPrecondition when the journal holds a change the harness cannot
// undo (PC_UNSUPPORTED), DataLoss when it is malformed.
absl::StatusOr<RollbackReport> RollBack(const std::string& journal, const std::string& root,
                                        const std::string& stash, CutMode mode, uint64_t seed);
// The same for processes that ran one after another on the same files,
// each with its own journal (PC_JOURNAL) and the same stash: `journals` in
// the order the processes ran, merged into one history (a sync by a later
// process makes an earlier one's writes to that file durable; files are
// matched by inode). This is a process crash followed by a power cut.
absl::StatusOr<RollbackReport> RollBack(const std::vector<std::string>& journals,
                                        const std::string& root, const std::string& stash,
                                        CutMode mode, uint64_t seed);

// The number of changes (PC_KILL_AT units) in a journal: a complete run
// measured this way tells where its cuts can land.
absl::StatusOr<uint64_t> CountChanges(const std::string& journal);

}  // namespace rill::powercut

#endif  // RILL_TESTS_POWERCUT_ROLLBACK_H_
