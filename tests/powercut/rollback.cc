#include "rollback.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "pc_journal.h"

namespace rill::powercut {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSector = 512;

struct Rec {
  PcRecord h;
  std::string p1, p2;
};

struct FileName {
  uint64_t dev = 0, ino = 0;
  std::string path;
  bool is_dir = false;
};

struct Journal {
  std::vector<Rec> recs;
  std::map<uint64_t, int64_t> done;  // seq -> result
  std::map<uint32_t, FileName> files;
  std::vector<std::string> unsupported;
};

// Fills j's maps (done, files, unsupported) from one record.
void Index(const Rec& r, Journal* j) {
  switch (r.h.type) {
    case PC_DONE:
      j->done[r.h.a] = static_cast<int64_t>(r.h.b);
      break;
    case PC_NAME:
      j->files[r.h.file] = FileName{r.h.a, r.h.b, r.p1, r.h.c == 1};
      break;
    case PC_UNSUPPORTED:
      j->unsupported.push_back(r.p1);
      break;
    default:
      break;
  }
}

absl::StatusOr<Journal> Parse(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the journal ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  Journal j;
  size_t at = 0;
  while (data.size() - at >= sizeof(PcRecord)) {
    Rec r;
    std::memcpy(&r.h, data.data() + at, sizeof(PcRecord));
    if (r.h.magic != PC_MAGIC) {
      return absl::DataLossError(absl::StrCat("journal ", path, ": bad record at byte ", at));
    }
    const uint64_t need = sizeof(PcRecord) + uint64_t{r.h.len1} + r.h.len2;
    if (data.size() - at < need) break;  // torn: the change was not started
    r.p1.assign(data, at + sizeof(PcRecord), r.h.len1);
    r.p2.assign(data, at + sizeof(PcRecord) + r.h.len1, r.h.len2);
    at += need;
    Index(r, &j);
    j.recs.push_back(std::move(r));
  }
  return j;
}

bool Counted(uint32_t type) {
  switch (type) {
    case PC_WRITE:
    case PC_SIZE:
    case PC_SYNC:
    case PC_CREATE:
    case PC_MKDIR:
    case PC_RENAME:
    case PC_UNLINK:
    case PC_RMDIR:
      return true;
    default:
      return false;
  }
}

std::string Parent(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

absl::StatusOr<std::string> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status WriteAll(const std::string& path, const std::string& data) {
  const int fd = open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot write ", path));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n <= 0) {
      close(fd);
      return absl::InternalError(absl::StrCat("writing ", path, " failed"));
    }
    done += static_cast<size_t>(n);
  }
  close(fd);
  return absl::OkStatus();
}

// Where each journaled file is now, found by its inode (renames and
// unlinks - the stash keeps unlinked files - move names, not inodes).
std::map<std::pair<uint64_t, uint64_t>, std::string> FilesByInode(const std::string& root,
                                                                  const std::string& stash) {
  std::map<std::pair<uint64_t, uint64_t>, std::string> out;
  for (const std::string& dir : {root, stash}) {
    std::error_code ec;
    for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      struct stat st;
      if (lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        out.emplace(std::make_pair(uint64_t{st.st_dev}, uint64_t{st.st_ino}), it->path().string());
      }
    }
  }
  return out;
}

// The changes to one file's contents and size, in journal order.
struct FileChanges {
  std::vector<const Rec*> changes;
  uint64_t durable_before = 0;  // changes with seq below this were synced
};

class Roller {
 public:
  Roller(const Journal& j, CutMode mode, uint64_t seed) : j_(j), mode_(mode), rng_(seed) {}

  bool Durable(const Rec& r, uint64_t barrier) const {
    if (r.h.seq < barrier) return true;
    // A write through an O_SYNC/O_DSYNC descriptor that returned.
    auto d = j_.done.find(r.h.seq);
    return r.h.type == PC_WRITE && r.h.c == 1 && d != j_.done.end() && d->second >= 0;
  }

  // Rebuilds `content` from the state before the journal's first change to
  // it (found by undoing every change from the current contents), then
  // replaying the changes the mode keeps.
  void Replay(const FileChanges& fc, std::string* content, RollbackReport* report) {
    std::string& cur = *content;
    for (auto it = fc.changes.rbegin(); it != fc.changes.rend(); ++it) {
      const Rec& r = **it;
      cur.resize(r.h.b);  // the size before the change
      std::memcpy(cur.data() + r.h.a, r.p1.data(),
                  std::min<uint64_t>(r.p1.size(), r.h.b > r.h.a ? r.h.b - r.h.a : 0));
    }
    std::vector<const Rec*> volatile_changes;
    for (const Rec* r : fc.changes) {
      if (!Durable(*r, fc.durable_before)) volatile_changes.push_back(r);
    }
    report->changes += fc.changes.size();
    report->durable_changes += fc.changes.size() - volatile_changes.size();
    // Per volatile change: which of its sectors are kept, and whether its
    // size change is.
    std::map<const Rec*, std::set<uint64_t>> kept_sectors;
    std::set<const Rec*> kept_size;
    const size_t n = volatile_changes.size();
    if (mode_ == CutMode::kPrefix && n > 0) {
      const size_t k = rng_() % (n + 1);
      for (size_t i = 0; i < n && i <= k; ++i) {
        const Rec* r = volatile_changes[i];
        const bool torn = i == k;
        for (uint64_t s : Sectors(*r)) {
          if (!torn || rng_() % 2 == 0) kept_sectors[r].insert(s);
        }
        if (!torn || rng_() % 2 == 0) kept_size.insert(r);
      }
    } else if (mode_ == CutMode::kReorder && n > 0) {
      std::map<uint64_t, std::vector<const Rec*>> by_sector;
      std::vector<const Rec*> sizers;
      for (const Rec* r : volatile_changes) {
        for (uint64_t s : Sectors(*r)) by_sector[s].push_back(r);
        sizers.push_back(r);
      }
      for (const auto& [s, list] : by_sector) {
        const size_t cut = rng_() % (list.size() + 1);
        for (size_t i = 0; i < cut; ++i) kept_sectors[list[i]].insert(s);
      }
      const size_t cut = rng_() % (sizers.size() + 1);
      for (size_t i = 0; i < cut; ++i) kept_size.insert(sizers[i]);
    }
    // Forward, from the initial contents.
    uint64_t size = cur.size();
    for (const Rec* r : fc.changes) {
      const bool durable = Durable(*r, fc.durable_before);
      const auto ks = kept_sectors.find(r);
      const bool size_kept = durable || kept_size.count(r) > 0;
      if (!durable) {
        const size_t kept = ks == kept_sectors.end() ? 0 : ks->second.size();
        if (kept == 0 && !size_kept) {
          ++report->lost_changes;
        } else if (!size_kept || kept < Sectors(*r).size()) {
          ++report->torn_changes;
        }
      }
      if (r->h.type == PC_SIZE) {
        if (size_kept) {
          size = r->h.a;
          if (cur.size() > size) cur.resize(size);
        }
        continue;
      }
      // A write.
      const uint64_t end = r->h.a + r->p2.size();
      if (cur.size() < end) cur.resize(end);
      if (durable) {
        std::memcpy(cur.data() + r->h.a, r->p2.data(), r->p2.size());
      } else if (ks != kept_sectors.end()) {
        for (uint64_t s : ks->second) {
          const uint64_t from = std::max(r->h.a, s * kSector);
          const uint64_t to = std::min(end, (s + 1) * kSector);
          std::memcpy(cur.data() + from, r->p2.data() + (from - r->h.a), to - from);
        }
      }
      if (size_kept) size = std::max(size, end);
    }
    cur.resize(size);
  }

 private:
  static std::vector<uint64_t> Sectors(const Rec& r) {
    std::vector<uint64_t> out;
    if (r.h.type != PC_WRITE || r.p2.empty()) return out;
    for (uint64_t s = r.h.a / kSector; s <= (r.h.a + r.p2.size() - 1) / kSector; ++s) {
      out.push_back(s);
    }
    return out;
  }

  const Journal& j_;
  const CutMode mode_;
  std::mt19937_64 rng_;
};

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

}  // namespace

const char* CutModeName(CutMode mode) {
  switch (mode) {
    case CutMode::kDropUnsynced:
      return "drop-unsynced";
    case CutMode::kPrefix:
      return "prefix";
    case CutMode::kReorder:
      return "reorder";
  }
  return "?";
}

absl::StatusOr<uint64_t> CountChanges(const std::string& journal) {
  absl::StatusOr<Journal> j = Parse(journal);
  if (!j.ok()) return j.status();
  uint64_t n = 0;
  for (const Rec& r : j->recs) n += Counted(r.h.type) ? 1 : 0;
  return n;
}

// The journals of processes that ran one after another, as one: each
// process numbers its records and files from 1, so a later journal's
// sequence numbers follow the earlier ones', and its file ids are the
// earlier ids of the same inode (or new ones).
absl::StatusOr<Journal> ParseAll(const std::vector<std::string>& paths) {
  Journal out;
  uint64_t seq_base = 0;
  std::map<std::pair<uint64_t, uint64_t>, uint32_t> by_inode;
  uint32_t next_id = 1;
  for (const std::string& path : paths) {
    absl::StatusOr<Journal> j = Parse(path);
    if (!j.ok()) return j.status();
    std::map<uint32_t, uint32_t> ids;  // this journal's -> the merged one's
    uint64_t last_seq = 0;
    for (Rec& r : j->recs) {
      last_seq = std::max(last_seq, r.h.seq);
      if (r.h.type == PC_NAME) {
        auto [it, added] = by_inode.emplace(std::make_pair(r.h.a, r.h.b), next_id);
        if (added) ++next_id;
        ids[r.h.file] = it->second;
      }
      r.h.seq += seq_base;
      if (r.h.type == PC_DONE) r.h.a += seq_base;
      if (r.h.file != 0 && r.h.file != PC_ALL_FILES) {
        auto m = ids.find(r.h.file);
        if (m == ids.end()) return absl::DataLossError("a change to a file never named");
        r.h.file = m->second;
      }
      Index(r, &out);
      out.recs.push_back(std::move(r));
    }
    seq_base += last_seq;
  }
  return out;
}

absl::StatusOr<RollbackReport> RollBack(const std::string& journal, const std::string& root,
                                        const std::string& stash, CutMode mode, uint64_t seed) {
  return RollBack(std::vector<std::string>{journal}, root, stash, mode, seed);
}

absl::StatusOr<RollbackReport> RollBack(const std::vector<std::string>& journals,
                                        const std::string& root, const std::string& stash,
                                        CutMode mode, uint64_t seed) {
  absl::StatusOr<Journal> parsed =
      journals.size() == 1 ? Parse(journals.front()) : ParseAll(journals);
  if (!parsed.ok()) return parsed.status();
  const Journal& j = *parsed;
  if (!j.unsupported.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the process made a change the harness cannot undo: ", j.unsupported.front()));
  }
  RollbackReport report;
  report.records = j.recs.size();

  // Completed syncs: the barrier of each file (by id) and of each directory
  // (by path); PC_ALL_FILES covers everything.
  std::map<uint32_t, uint64_t> file_barrier;
  std::map<std::string, uint64_t> dir_barrier;
  uint64_t all_barrier = 0;
  for (const Rec& r : j.recs) {
    if (r.h.type != PC_SYNC) continue;
    auto d = j.done.find(r.h.seq);
    if (d == j.done.end() || d->second < 0) continue;
    ++report.syncs;
    if (r.h.file == PC_ALL_FILES) {
      all_barrier = std::max(all_barrier, r.h.seq);
      continue;
    }
    file_barrier[r.h.file] = std::max(file_barrier[r.h.file], r.h.seq);
    auto f = j.files.find(r.h.file);
    if (f != j.files.end() && f->second.is_dir) {
      dir_barrier[f->second.path] = std::max(dir_barrier[f->second.path], r.h.seq);
    }
  }

  // Contents and sizes, file by file, where each file is now.
  std::map<uint32_t, FileChanges> changes;
  for (const Rec& r : j.recs) {
    if (r.h.type == PC_WRITE || r.h.type == PC_SIZE) changes[r.h.file].changes.push_back(&r);
  }
  const auto by_inode = FilesByInode(root, stash);
  Roller roller(j, mode, seed);
  for (auto& [id, fc] : changes) {
    fc.durable_before = std::max(file_barrier[id], all_barrier);
    auto name = j.files.find(id);
    if (name == j.files.end()) return absl::DataLossError("a change to a file never named");
    auto now = by_inode.find({name->second.dev, name->second.ino});
    if (now == by_inode.end()) continue;  // gone, with no way back: nothing to restore
    absl::StatusOr<std::string> content = ReadAll(now->second);
    if (!content.ok()) return content.status();
    roller.Replay(fc, &*content, &report);
    if (absl::Status s = WriteAll(now->second, *content); !s.ok()) return s;
  }

  // Directory entries: undo, newest first, the changes the mode loses.
  std::vector<const Rec*> volatile_ns;
  for (const Rec& r : j.recs) {
    const uint32_t t = r.h.type;
    if (t != PC_CREATE && t != PC_MKDIR && t != PC_RENAME && t != PC_UNLINK && t != PC_RMDIR) {
      continue;
    }
    auto d = j.done.find(r.h.seq);
    if (d != j.done.end() && d->second < 0) continue;  // it failed: nothing changed
    auto synced = [&](const std::string& path) {
      auto b = dir_barrier.find(Parent(path));
      return r.h.seq < all_barrier || (b != dir_barrier.end() && r.h.seq < b->second);
    };
    const bool durable = synced(r.p1) && (t != PC_RENAME || synced(r.p2));
    if (!durable) volatile_ns.push_back(&r);
  }
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  const size_t keep = mode == CutMode::kDropUnsynced ? 0 : rng() % (volatile_ns.size() + 1);
  for (size_t i = volatile_ns.size(); i-- > keep;) {
    const Rec& r = *volatile_ns[i];
    const bool completed = j.done.count(r.h.seq) > 0;
    std::error_code ec;
    switch (r.h.type) {
      case PC_CREATE:
        if (Exists(r.p1)) fs::remove(r.p1, ec);
        break;
      case PC_MKDIR:
        if (Exists(r.p1)) fs::remove_all(r.p1, ec);
        break;
      case PC_RENAME:
        if (Exists(r.p2) && (completed || !Exists(r.p1))) {
          fs::rename(r.p2, r.p1, ec);
          if (r.h.a != 0) fs::create_hard_link(absl::StrCat(stash, "/", r.h.a), r.p2, ec);
        }
        break;
      case PC_UNLINK:
        if (!Exists(r.p1) && r.h.a != 0) {
          fs::create_hard_link(absl::StrCat(stash, "/", r.h.a), r.p1, ec);
        }
        break;
      case PC_RMDIR:
        if (!Exists(r.p1)) fs::create_directory(r.p1, ec);
        break;
    }
    if (ec) {
      return absl::InternalError(absl::StrCat("undoing a change to ", r.p1, ": ", ec.message()));
    }
    ++report.namespace_undone;
  }
  return report;
}

}  // namespace rill::powercut
