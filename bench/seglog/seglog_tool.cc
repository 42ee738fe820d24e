// seglog_tool: loads a segment-log prototype (seglog.h) and times its
// recovery, for docs/segment-log.md.
//
//   seglog_tool load DIR EVENTS [--crash]
//       appends EVENTS events of 256 bytes, 100 per request to 1000 streams
//       round robin (without a sync per request: a loader), then closes
//       cleanly, or with --crash exits without closing: the index is left
//       "dirty", as a process that died leaves it
//   seglog_tool recover DIR [--boot-id ID]
//       opens the log (with --boot-id standing for the machine's, e.g. to
//       play a reboot after --crash, which makes Open rebuild the index from
//       the segments), verifies positions and versions by reading it all,
//       and prints what recovery did as one JSON line
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "seglog.h"

namespace {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "seglog_tool: %s\n", msg.c_str());
  return 1;
}

int Load(const std::string& dir, uint64_t events, bool crash) {
  rill::seglog::Options o;
  o.dir = dir;
  o.sync = false;
  auto log = rill::seglog::Log::Open(o);
  if (!log.ok()) return Fail(log.status().ToString());
  std::vector<rill::EventData> batch(100);
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i].type = "OrderLinePlaced";
    batch[i].payload = std::string(256, static_cast<char>('a' + i % 26));
  }
  std::vector<int64_t> last(1000, -1);
  for (uint64_t done = 0, r = 0; done < events; done += batch.size(), ++r) {
    const int s = static_cast<int>(r % last.size());
    auto res = (*log)->Append(
        absl::StrFormat("order-%04d", s),
        last[s] < 0 ? rill::ExpectedVersion::NoStream() : rill::ExpectedVersion::Exact(last[s]),
        batch);
    if (!res.ok()) return Fail(res.status().ToString());
    last[s] = res->last_version;
  }
  if (crash) _exit(0);  // no Close: the index stays "dirty"
  if (absl::Status s = (*log)->Close(); !s.ok()) return Fail(s.ToString());
  std::printf("{\"events\": %llu, \"bytes\": %llu}\n",
              static_cast<unsigned long long>((*log)->last_position()),
              static_cast<unsigned long long>((*log)->bytes_used()));
  return 0;
}

int Recover(const std::string& dir, const std::string& boot_id) {
  rill::seglog::Options o;
  o.dir = dir;
  o.boot_id = boot_id;
  auto log = rill::seglog::Log::Open(o);
  if (!log.ok()) return Fail(log.status().ToString());
  const rill::seglog::RecoveryInfo r = (*log)->recovery();
  uint64_t expect = 1;
  absl::flat_hash_map<std::string, int64_t> versions;
  bool ok = true;
  auto n = (*log)->ReadAll(1, [&](const rill::seglog::EventRef& e) {
    int64_t& v = versions.try_emplace(std::string(e.stream), -1).first->second;
    ok = ok && e.position == expect++ && e.version == v + 1;
    v = e.version;
    return ok;
  });
  if (!n.ok()) return Fail(n.status().ToString());
  if (!ok || *n != r.last_position) return Fail("the recovered log is not gapless");
  std::printf(
      "{\"rebuilt\": %s, \"indexed_before\": %llu, \"reindexed\": %llu, \"last_position\": %llu, "
      "\"cut_bytes\": %llu, \"seconds\": %.3f}\n",
      r.rebuilt ? "true" : "false", static_cast<unsigned long long>(r.indexed_before),
      static_cast<unsigned long long>(r.reindexed),
      static_cast<unsigned long long>(r.last_position),
      static_cast<unsigned long long>(r.cut_bytes), r.seconds);
  return (*log)->Close().ok() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() >= 3 && a[0] == "load") {
    return Load(a[1], std::strtoull(a[2].c_str(), nullptr, 10), a.size() > 3 && a[3] == "--crash");
  }
  if (a.size() >= 2 && a[0] == "recover") {
    return Recover(a[1], a.size() > 3 && a[2] == "--boot-id" ? a[3] : "");
  }
  std::fprintf(stderr,
               "usage: seglog_tool load DIR EVENTS [--crash] | recover DIR [--boot-id ID]\n");
  return 2;
}
