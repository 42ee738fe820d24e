// Disk full: in a forked child, RLIMIT_FSIZE caps how far data.mdb may grow
// (the portable way to make writes fail like on a full disk). Appending until
// one fails must give ResourceExhausted, lose nothing acknowledged, write
// nothing of the failed append, keep serving reads, and recover as soon as
// there is room again. Optionally the same on a real, tiny tmpfs.
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::DescribeWaitStatus;
using ::rill::testing::ExitedWithCode;
using ::rill::testing::ReadFileOrEmpty;
using ::rill::testing::RunInForkedChild;
using ::rill::testing::TempDir;

constexpr int kEventsPerAppend = 4;
constexpr size_t kPayloadBytes = 4000;

// Payload of event `i` of append `n`: recognisable and checkable.
std::string FillPayload(int n, int i) {
  std::string p = absl::StrFormat("{\"n\":%d,\"i\":%d,\"pad\":\"", n, i);
  p.append(kPayloadBytes, static_cast<char>('a' + (n + i) % 26));
  p.append("\"}");
  return p;
}

std::vector<EventData> FillEvents(int n) {
  std::vector<EventData> events;
  for (int i = 0; i < kEventsPerAppend; ++i) {
    EventData e;
    e.type = "Fill";
    e.payload = FillPayload(n, i);
    events.push_back(std::move(e));
  }
  return events;
}

int Fail(const std::string& what) {
  fprintf(stderr, "disk full child: %s\n", what.c_str());
  return 3;
}

// Checks that the log holds exactly appends 0..acked-1, gapless.
int CheckLog(Store* store, int acked) {
  absl::StatusOr<std::vector<RecordedEvent>> events = store->ReadAll(1);
  if (!events.ok()) return Fail("ReadAll: " + events.status().ToString());
  if (events->size() != static_cast<size_t>(acked) * kEventsPerAppend) {
    return Fail(absl::StrCat("log holds ", events->size(), " events, ", acked,
                             " appends were acknowledged"));
  }
  for (size_t p = 0; p < events->size(); ++p) {
    const RecordedEvent& e = (*events)[p];
    const int n = static_cast<int>(p / kEventsPerAppend);
    const int i = static_cast<int>(p % kEventsPerAppend);
    if (e.position != p + 1 || e.payload != FillPayload(n, i) ||
        e.stream != absl::StrCat("fill-", n % 4)) {
      return Fail(absl::StrCat("wrong event at position ", p + 1));
    }
  }
  return 0;
}

// The whole scenario, in a forked child: returns 0 only when every check
// passed. With `limit_file`, RLIMIT_FSIZE lets data.mdb grow by `room` bytes
// past its size after 20 appends (without, the disk is a tmpfs that is small
// already). The number of acknowledged appends is written to `count_file`.
int FillUntilFull(const std::string& store_dir, bool limit_file, size_t room,
                  const std::string& count_file) {
  absl::StatusOr<std::unique_ptr<Store>> opened = Store::Open(store_dir);
  if (!opened.ok()) return Fail("Open: " + opened.status().ToString());
  std::unique_ptr<Store> store = std::move(opened).value();
  int acked = 0;
  auto append = [&](int n) {
    return store->Append(absl::StrCat("fill-", n % 4), ExpectedVersion::Any(), FillEvents(n));
  };
  for (; acked < 20; ++acked) {
    if (absl::Status s = append(acked).status(); !s.ok()) {
      return Fail("append before the limit: " + s.ToString());
    }
  }

  rlimit old_limit;
  if (getrlimit(RLIMIT_FSIZE, &old_limit) != 0) return Fail("getrlimit");
  if (limit_file) {
    struct stat st;
    if (stat((store_dir + "/log/data.mdb").c_str(), &st) != 0) return Fail("stat");
    signal(SIGXFSZ, SIG_IGN);
    rlimit limit = old_limit;
    limit.rlim_cur = static_cast<rlim_t>(st.st_size + room);
    if (setrlimit(RLIMIT_FSIZE, &limit) != 0) return Fail("setrlimit");
  }

  // Append until the disk is "full".
  absl::Status failure;
  for (int tries = 0; tries < 200000; ++tries) {
    absl::StatusOr<AppendResult> r = append(acked);
    if (!r.ok()) {
      failure = r.status();
      break;
    }
    if (r->first_position != static_cast<uint64_t>(acked) * kEventsPerAppend + 1) {
      return Fail(absl::StrCat("append ", acked, " got position ", r->first_position));
    }
    ++acked;
  }
  fprintf(stderr, "disk full child: %d appends acknowledged, then: %s\n", acked,
          failure.ToString().c_str());
  if (failure.ok()) return Fail("the disk never filled up");
  // A wrong code is reported at the end, after the other checks have run.
  const bool wrong_code = failure.code() != absl::StatusCode::kResourceExhausted;

  // Reads still work, everything acknowledged is there, the failed append
  // left nothing behind.
  absl::StatusOr<uint64_t> head = store->HeadPosition();
  if (!head.ok()) return Fail("HeadPosition: " + head.status().ToString());
  if (*head != static_cast<uint64_t>(acked) * kEventsPerAppend) {
    return Fail(absl::StrCat("head ", *head, " after ", acked, " acknowledged appends"));
  }
  if (int rc = CheckLog(store.get(), acked); rc != 0) return rc;
  absl::StatusOr<std::vector<RecordedEvent>> stream = store->ReadStream("fill-1", 0);
  if (!stream.ok()) return Fail("ReadStream: " + stream.status().ToString());
  absl::StatusOr<StoreStats> stats = store->Stats();
  if (!stats.ok()) return Fail("Stats: " + stats.status().ToString());

  // Still full: another attempt fails the same way (or fits in pages that
  // are free again); either way the store stays consistent.
  absl::StatusOr<AppendResult> again = append(acked);
  if (again.ok()) {
    ++acked;
  } else if (again.status().code() != failure.code()) {
    return Fail("second append on a full disk: " + again.status().ToString());
  }

  // Room again: the next append succeeds at the next position.
  if (limit_file) {
    if (setrlimit(RLIMIT_FSIZE, &old_limit) != 0) return Fail("setrlimit back");
  } else {
    // On tmpfs: make room by removing the filler file next to the store.
    unlink((store_dir + "/../filler").c_str());
  }
  absl::StatusOr<AppendResult> after = append(acked);
  if (!after.ok()) {
    return Fail("append after space was freed: " + after.status().ToString());
  }
  if (after->first_position != static_cast<uint64_t>(acked) * kEventsPerAppend + 1) {
    return Fail(absl::StrCat("append after recovery got position ", after->first_position));
  }
  ++acked;
  if (int rc = CheckLog(store.get(), acked); rc != 0) return rc;
  store.reset();
  std::ofstream(count_file) << acked;
  if (wrong_code) {
    fprintf(stderr,
            "disk full child: every other check passed, but a full disk must be "
            "ResourceExhausted, got %s\n",
            failure.ToString().c_str());
    return 5;
  }
  return 0;
}

// In the parent: the store, reopened, holds exactly the child's appends.
void VerifyAfterChild(const std::string& store_dir, const std::string& count_file) {
  int acked = 0;
  ASSERT_TRUE(absl::SimpleAtoi(ReadFileOrEmpty(count_file), &acked));
  ASSERT_GT(acked, 20);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> events, store->ReadAll(1));
  ASSERT_EQ(events.size(), static_cast<size_t>(acked) * kEventsPerAppend);
  for (size_t p = 0; p < events.size(); ++p) {
    ASSERT_EQ(events[p].position, p + 1);
    ASSERT_EQ(events[p].payload, FillPayload(static_cast<int>(p / kEventsPerAppend),
                                             static_cast<int>(p % kEventsPerAppend)));
  }
  for (int s = 0; s < 4; ++s) {
    RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> stream,
                              store->ReadStream(absl::StrCat("fill-", s), 0));
    for (size_t v = 0; v < stream.size(); ++v) {
      ASSERT_EQ(stream[v].version, static_cast<int64_t>(v));
    }
  }
}

// The limit falls at different offsets, so that LMDB's last write before it
// may end exactly at the limit (the kernel says EFBIG) or straddle it (the
// kernel writes part of it: a short write).
class FileSizeLimitTest : public ::testing::TestWithParam<size_t> {};

TEST_P(FileSizeLimitTest, FullIsResourceExhaustedAndRecoverable) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  const std::string count_file = dir.Sub("count");
  const int status =
      RunInForkedChild([&] { return FillUntilFull(store_dir, true, GetParam(), count_file); });
  EXPECT_TRUE(ExitedWithCode(status, 0))
      << "the child " << DescribeWaitStatus(status) << " (its stderr is above)";
  // Exit code 5: only the status code was wrong; the log must still be right.
  if (ExitedWithCode(status, 0) || ExitedWithCode(status, 5)) {
    VerifyAfterChild(store_dir, count_file);
  }
}

INSTANTIATE_TEST_SUITE_P(Room, FileSizeLimitTest,
                         ::testing::Values(size_t{256} << 10, (size_t{256} << 10) + 4096,
                                           (size_t{256} << 10) + 8192, (size_t{256} << 10) + 12288,
                                           (size_t{256} << 10) + 100),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return absl::StrCat("Bytes", info.param);
                         });

TEST(DiskFullTest, FullTmpfsIsResourceExhaustedAndRecoverable) {
  TempDir dir;
  const std::string mount_point = dir.Sub("tmpfs");
  ASSERT_EQ(mkdir(mount_point.c_str(), 0755), 0);
  if (mount("tmpfs", mount_point.c_str(), "tmpfs", 0, "size=4m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN)";
  }
  struct Unmount {
    ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
    std::string path;
  } unmount{mount_point};
  const std::string store_dir = mount_point + "/store";
  const std::string count_file = dir.Sub("count");
  {
    // The store exists before the filler takes most of what is left.
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
  }
  {
    std::ofstream filler(mount_point + "/filler", std::ios::binary);
    filler << std::string(size_t{2} << 20, 'z');
  }
  const int status =
      RunInForkedChild([&] { return FillUntilFull(store_dir, false, 0, count_file); });
  EXPECT_TRUE(ExitedWithCode(status, 0))
      << "the child " << DescribeWaitStatus(status) << " (its stderr is above)";
  if (ExitedWithCode(status, 0) || ExitedWithCode(status, 5)) {
    VerifyAfterChild(store_dir, count_file);
  }
}

}  // namespace
}  // namespace rill
