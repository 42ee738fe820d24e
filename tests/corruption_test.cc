// Corruption: damage the log file on disk the way a bad disk or a stray
// write would, and check that rill reports DataLoss (or another error) and
// never crashes or returns wrong bytes.
//   - One flipped byte in a stored payload (found by a unique marker string
//     written into it): every read that meets the event says DataLoss; reads
//     that do not meet it still work; scans deliver the events before it.
//   - A damaged stream record, idempotency record or meta record (FlatBuffers
//     without a checksum, verified before use): DataLoss, never a crash.
//   - data.mdb truncated: Open or the reads return an error, checked in a
//     forked child so that a crash (SIGBUS/SIGSEGV) fails the test instead of
//     killing it.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
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
using ::rill::testing::WaitUntil;

constexpr char kMarker[] = "RILL-CORRUPTION-MARKER-7f3a9c1e";
constexpr int kEvents = 20;
constexpr int kBadVersion = 10;                     // the corrupted event: stream version 10,
constexpr uint64_t kBadPosition = kBadVersion + 1;  // position 11

ReadOptions Limit(size_t limit) {
  ReadOptions options;
  options.limit = limit;
  return options;
}

ReadOptions Backward() {
  ReadOptions options;
  options.direction = Direction::kBackward;
  return options;
}

std::string DataFile(const std::string& store_dir) { return store_dir + "/log/data.mdb"; }

// Flips one bit inside every copy of kMarker in the file (LMDB's
// copy-on-write may leave stale copies in free pages; flipping those too does
// no harm). Returns how many copies were found.
int FlipMarkerBytes(const std::string& path) {
  const std::string data = ReadFileOrEmpty(path);
  const int fd = open(path.c_str(), O_WRONLY);
  if (fd < 0) return -1;
  int found = 0;
  for (size_t at = data.find(kMarker); at != std::string::npos; at = data.find(kMarker, at + 1)) {
    const size_t offset = at + 7;  // a byte in the middle of the marker
    const char flipped = static_cast<char>(data[offset] ^ 0x04);
    if (pwrite(fd, &flipped, 1, static_cast<off_t>(offset)) != 1) {
      close(fd);
      return -1;
    }
    ++found;
  }
  fsync(fd);
  close(fd);
  return found;
}

// Payload of version v of the test stream; version kBadVersion carries the
// marker in the middle of `size` bytes of padding.
std::string Payload(int v, size_t size) {
  if (v != kBadVersion) return absl::StrCat("{\"n\":", v, "}");
  const std::string pad((size - sizeof(kMarker)) / 2, 'p');
  return absl::StrCat("{\"pad1\":\"", pad, "\",\"m\":\"", kMarker, "\",\"pad2\":\"", pad, "\"}");
}

class PayloadCorruptionTest : public ::testing::TestWithParam<size_t> {
 protected:
  // Writes kEvents events to "acct" in one request, closes the store and
  // corrupts the payload of version kBadVersion on disk.
  void SetUp() override {
    store_dir_ = dir_.Sub("store");
    {
      RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir_));
      std::vector<EventData> events;
      for (int v = 0; v < kEvents; ++v) {
        EventData e;
        e.type = absl::StrCat("T", v % 2);
        e.payload = Payload(v, GetParam());
        events.push_back(std::move(e));
      }
      RILL_ASSERT_OK_AND_ASSIGN(const AppendResult r,
                                store->Append("acct", ExpectedVersion::NoStream(), events));
      ASSERT_EQ(r.first_position, 1u);
      // Before the damage the event reads back fine.
      RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> read,
                                store->ReadAll(kBadPosition, Limit(1)));
      ASSERT_EQ(read.size(), 1u);
      ASSERT_NE(read[0].payload.find(kMarker), std::string::npos);
    }
    const int copies = FlipMarkerBytes(DataFile(store_dir_));
    ASSERT_GE(copies, 1) << "marker not found in " << DataFile(store_dir_);
  }

  TempDir dir_;
  std::string store_dir_;
};

TEST_P(PayloadCorruptionTest, ReadsThatMeetTheEventReturnDataLoss) {
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir_));

  // Whole-log reads over the event.
  EXPECT_EQ(store->ReadAll(1).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store->ReadAll(kBadPosition).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store->ReadAll(kLogEnd, Backward()).status().code(), absl::StatusCode::kDataLoss);
  // Stream reads over the event.
  EXPECT_EQ(store->ReadStream("acct", 0).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store->ReadStream("acct", kBadVersion).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store->ReadStream("acct", kStreamEnd, Backward()).status().code(),
            absl::StatusCode::kDataLoss);

  // Reads that stop before it, or start after it, are unaffected.
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> before,
                            store->ReadAll(1, Limit(kBadVersion)));
  ASSERT_EQ(before.size(), static_cast<size_t>(kBadVersion));
  for (int v = 0; v < kBadVersion; ++v) {
    EXPECT_EQ(before[v].position, static_cast<uint64_t>(v + 1));
    EXPECT_EQ(before[v].payload, Payload(v, GetParam()));
  }
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> stream_before,
                            store->ReadStream("acct", 0, Limit(kBadVersion)));
  ASSERT_EQ(stream_before.size(), static_cast<size_t>(kBadVersion));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> after, store->ReadAll(kBadPosition + 1));
  ASSERT_EQ(after.size(), static_cast<size_t>(kEvents - kBadVersion - 1));
  EXPECT_EQ(after.front().version, kBadVersion + 1);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> stream_after,
                            store->ReadStream("acct", kBadVersion + 1));
  ASSERT_EQ(stream_after.size(), static_cast<size_t>(kEvents - kBadVersion - 1));

  // Scans deliver everything before the event, then say DataLoss.
  std::vector<uint64_t> scanned;
  const absl::Status scan = store->ScanAll(1, ReadOptions(), [&](const EventView& e) {
    scanned.push_back(e.position());
    return true;
  });
  EXPECT_EQ(scan.code(), absl::StatusCode::kDataLoss) << scan;
  ASSERT_EQ(scanned.size(), static_cast<size_t>(kBadVersion));
  for (int v = 0; v < kBadVersion; ++v) EXPECT_EQ(scanned[v], static_cast<uint64_t>(v + 1));

  std::vector<int64_t> versions;
  const absl::Status scan_stream =
      store->ScanStream("acct", 0, ReadOptions(), [&](const EventView& e) {
        versions.push_back(e.version());
        return true;
      });
  EXPECT_EQ(scan_stream.code(), absl::StatusCode::kDataLoss) << scan_stream;
  ASSERT_EQ(versions.size(), static_cast<size_t>(kBadVersion));
  for (int v = 0; v < kBadVersion; ++v) EXPECT_EQ(versions[v], v);
}

TEST_P(PayloadCorruptionTest, SubscriptionEndsWithDataLoss) {
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir_));
  absl::Mutex mu;
  std::vector<uint64_t> delivered;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subscription> sub,
                            store->Subscribe(0, SubscriptionOptions(), [&](const EventView& e) {
                              absl::MutexLock lock(&mu);
                              delivered.push_back(e.position());
                              return absl::OkStatus();
                            }));
  ASSERT_TRUE(WaitUntil([&] { return !sub->running(); }, absl::Seconds(60)))
      << "the subscription went past a corrupt event";
  EXPECT_EQ(sub->status().code(), absl::StatusCode::kDataLoss) << sub->status();
  sub->Stop();
  absl::MutexLock lock(&mu);
  ASSERT_EQ(delivered.size(), static_cast<size_t>(kBadVersion));
  for (int v = 0; v < kBadVersion; ++v) EXPECT_EQ(delivered[v], static_cast<uint64_t>(v + 1));
}

TEST_P(PayloadCorruptionTest, StoreStaysUsableForAppendsAndOtherReads) {
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir_));
  RILL_ASSERT_OK_AND_ASSIGN(const StreamInfo info, store->GetStreamInfo("acct"));
  EXPECT_EQ(info.last_version, kEvents - 1);
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store->HeadPosition());
  EXPECT_EQ(head, static_cast<uint64_t>(kEvents));
  // Appends need the stream record, not the damaged event.
  RILL_ASSERT_OK_AND_ASSIGN(
      const AppendResult r,
      store->Append("acct", ExpectedVersion::Exact(kEvents - 1), {testing::MakeEvent("Later", 1)}));
  EXPECT_EQ(r.first_position, static_cast<uint64_t>(kEvents + 1));
  RILL_ASSERT_OK_AND_ASSIGN(
      const AppendResult other,
      store->Append("other", ExpectedVersion::NoStream(), {testing::MakeEvent("Other", 2)}));
  EXPECT_EQ(other.first_position, static_cast<uint64_t>(kEvents + 2));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> tail, store->ReadAll(kBadPosition + 1));
  ASSERT_EQ(tail.size(), static_cast<size_t>(kEvents - kBadVersion + 1));
  EXPECT_EQ(tail.back().stream, "other");
  // A filtered read that skips the stream does not need the damaged record's
  // payload, but must still not return it as good data: either it is
  // skipped without error, or the read reports DataLoss.
  ReadOptions only_other;
  only_other.filter.stream_prefix = "other";
  absl::StatusOr<std::vector<RecordedEvent>> filtered = store->ReadAll(1, only_other);
  if (filtered.ok()) {
    ASSERT_EQ(filtered->size(), 1u);
    EXPECT_EQ((*filtered)[0].stream, "other");
  } else {
    EXPECT_EQ(filtered.status().code(), absl::StatusCode::kDataLoss) << filtered.status();
  }
}

// Small payloads live in the leaf pages; large ones in LMDB overflow pages.
INSTANTIATE_TEST_SUITE_P(PayloadSizes, PayloadCorruptionTest,
                         ::testing::Values(size_t{200}, size_t{20000}),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return info.param < 4096 ? std::string("InLeafPage")
                                                    : std::string("InOverflowPages");
                         });

// Offsets of the values stored under `key` in any LMDB database of the file
// `data`: each leaf node whose key is `key` (node header: data size lo/hi,
// flags, key size; then the key; then the value inline) and whose value has
// `min_size`..4096 bytes. Stale copies in free pages are found too; changing
// them does no harm.
std::vector<size_t> FindLeafValues(const std::string& data, const std::string& key,
                                   size_t min_size) {
  std::vector<size_t> offsets;
  auto u16 = [&data](size_t i) {
    return static_cast<unsigned>(static_cast<unsigned char>(data[i])) |
           static_cast<unsigned>(static_cast<unsigned char>(data[i + 1])) << 8;
  };
  for (size_t at = data.find(key); at != std::string::npos; at = data.find(key, at + 1)) {
    if (at < 8) continue;
    const size_t value_size = u16(at - 8) | u16(at - 6) << 16;
    if (u16(at - 2) != key.size() || u16(at - 4) != 0 || value_size < min_size ||
        value_size > 4096 || at + key.size() + value_size > data.size()) {
      continue;  // not an LMDB leaf node with an inline value
    }
    offsets.push_back(at + key.size());
  }
  return offsets;
}

bool PatchFile(const std::string& path, size_t offset, const std::string& bytes) {
  const int fd = open(path.c_str(), O_WRONLY);
  if (fd < 0) return false;
  const bool ok = pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)) ==
                  static_cast<ssize_t>(bytes.size());
  fsync(fd);
  close(fd);
  return ok;
}

// Points the FlatBuffers root offset of every value stored under `key` far
// outside the value, so that verification must fail. Returns how many.
int CorruptValueAfterKey(const std::string& path, const std::string& key) {
  const std::string data = ReadFileOrEmpty(path);
  int found = 0;
  for (size_t value : FindLeafValues(data, key, 8)) {
    const size_t offset = value + 3;  // high byte of the little-endian offset
    if (!PatchFile(path, offset, std::string(1, static_cast<char>(data[offset] ^ 0x40)))) {
      return -1;
    }
    ++found;
  }
  return found;
}

std::string BigEndian64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) out[i] = static_cast<char>(v & 0xff);
  return out;
}

TEST(RecordCorruptionTest, IndexEntryPointingAtAnotherStreamsEventIsDataLoss) {
  // A well-formed but wrong stream index entry must not make ReadStream
  // return another stream's event as if it were this one's.
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
    RILL_ASSERT_OK(store->Append("a", ExpectedVersion::NoStream(),
                                 testing::MakeEvents(3))
                       .status());  // positions 1..3
    RILL_ASSERT_OK(store->Append("b", ExpectedVersion::NoStream(),
                                 testing::MakeEvents(3))
                       .status());  // positions 4..6
  }
  // stream_index key of "a"@1 is (stream id 1, version 1); its value is
  // position 2. Make it say 5 ("b"@1).
  const std::string data_file = DataFile(store_dir);
  const std::vector<size_t> values =
      FindLeafValues(ReadFileOrEmpty(data_file), BigEndian64(1) + BigEndian64(1), 8);
  ASSERT_GE(values.size(), 1u) << "index entry not found";
  for (size_t value : values) ASSERT_TRUE(PatchFile(data_file, value, BigEndian64(5)));

  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
  EXPECT_EQ(store->ReadStream("a", 0).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store->ReadStream("a", 1).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store->ReadStream("a", kStreamEnd, Backward()).status().code(),
            absl::StatusCode::kDataLoss);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> b, store->ReadStream("b", 0));
  EXPECT_EQ(b.size(), 3u);
}

TEST(RecordCorruptionTest, CorruptStreamRecordIsDataLossNotACrash) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  const std::string stream = "stream-RILL-MARKER-5e2b";
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
    RILL_ASSERT_OK(
        store->Append(stream, ExpectedVersion::NoStream(), testing::MakeEvents(3)).status());
    RILL_ASSERT_OK(
        store->Append("other", ExpectedVersion::NoStream(), testing::MakeEvents(2)).status());
  }
  ASSERT_GE(CorruptValueAfterKey(DataFile(store_dir), stream), 1);

  const int status = RunInForkedChild([&] {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(store_dir);
    if (!store.ok()) {
      fprintf(stderr, "Open: %s\n", store.status().ToString().c_str());
      return 2;
    }
    int bad = 0;
    auto expect_data_loss = [&bad](const char* what, const absl::Status& s) {
      if (s.code() != absl::StatusCode::kDataLoss) {
        fprintf(stderr, "%s: expected DataLoss, got %s\n", what, s.ToString().c_str());
        ++bad;
      }
    };
    expect_data_loss("GetStreamInfo", (*store)->GetStreamInfo(stream).status());
    expect_data_loss("ReadStream", (*store)->ReadStream(stream, 0).status());
    expect_data_loss(
        "Append Exact(2)",
        (*store)->Append(stream, ExpectedVersion::Exact(2), {testing::MakeEvent("E", 3)}).status());
    expect_data_loss(
        "Append Any",
        (*store)->Append(stream, ExpectedVersion::Any(), {testing::MakeEvent("E", 3)}).status());
    (void)(*store)->ListStreams("").status();  // must not crash
    // Nothing else depends on that record.
    absl::Status other =
        (*store)->Append("other", ExpectedVersion::Exact(1), {testing::MakeEvent("E", 2)}).status();
    absl::StatusOr<std::vector<RecordedEvent>> all = (*store)->ReadAll(1);
    if (!other.ok() || !all.ok() || all->size() != 6) {
      fprintf(stderr, "other stream / ReadAll: %s %s\n", other.ToString().c_str(),
              all.status().ToString().c_str());
      ++bad;
    }
    return bad == 0 ? 0 : 3;
  });
  EXPECT_TRUE(ExitedWithCode(status, 0))
      << "the child " << DescribeWaitStatus(status) << " (its stderr is above)";
}

TEST(RecordCorruptionTest, CorruptIdempotencyRecordIsDataLossOnRetry) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  const std::string key = "key-RILL-MARKER-a17c";
  const std::vector<EventData> events = testing::MakeEvents(2);
  AppendOptions options;
  options.idempotency_key = key;
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
    RILL_ASSERT_OK(store->Append("s", ExpectedVersion::NoStream(), events, options).status());
  }
  ASSERT_GE(CorruptValueAfterKey(DataFile(store_dir), key), 1);

  const int status = RunInForkedChild([&] {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(store_dir);
    if (!store.ok()) return 2;
    absl::StatusOr<AppendResult> retry =
        (*store)->Append("s", ExpectedVersion::NoStream(), events, options);
    if (retry.status().code() != absl::StatusCode::kDataLoss) {
      fprintf(stderr, "retry with the damaged key: expected DataLoss, got %s\n",
              retry.status().ToString().c_str());
      return 3;
    }
    absl::StatusOr<uint64_t> head = (*store)->HeadPosition();
    if (!head.ok() || *head != 2) {
      fprintf(stderr, "the failed retry wrote events\n");
      return 4;
    }
    AppendOptions other;
    other.idempotency_key = "another-key";
    absl::Status s =
        (*store)
            ->Append("s", ExpectedVersion::Exact(1), {testing::MakeEvent("E", 2)}, other)
            .status();
    if (!s.ok()) {
      fprintf(stderr, "append with another key: %s\n", s.ToString().c_str());
      return 5;
    }
    return 0;
  });
  EXPECT_TRUE(ExitedWithCode(status, 0))
      << "the child " << DescribeWaitStatus(status) << " (its stderr is above)";
}

TEST(RecordCorruptionTest, CorruptMetaRecordIsDataLossOnOpen) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
    RILL_ASSERT_OK(
        store->Append("s", ExpectedVersion::NoStream(), testing::MakeEvents(2)).status());
  }
  ASSERT_GE(CorruptValueAfterKey(DataFile(store_dir), "store"), 1);
  const int status = RunInForkedChild([&] {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(store_dir);
    if (store.status().code() != absl::StatusCode::kDataLoss) {
      fprintf(stderr, "Open with a damaged meta record: expected DataLoss, got %s\n",
              store.status().ToString().c_str());
      return 3;
    }
    return 0;
  });
  EXPECT_TRUE(ExitedWithCode(status, 0))
      << "the child " << DescribeWaitStatus(status) << " (its stderr is above)";
}

// Opens the store and reads everything; returns 0 when some call reported
// an error, 10 when every call claimed success (silent loss). Runs in a
// forked child: no GoogleTest assertions here.
int OpenAndReadEverything(const std::string& store_dir) {
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(store_dir);
  if (!store.ok()) {
    fprintf(stderr, "Open: %s\n", store.status().ToString().c_str());
    return 0;
  }
  bool error = false;
  auto note = [&error](const char* what, const absl::Status& s) {
    if (!s.ok()) {
      fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
      error = true;
    }
  };
  note("HeadPosition", (*store)->HeadPosition().status());
  note("Stats", (*store)->Stats().status());
  note("ReadAll", (*store)->ReadAll(1).status());
  note("ReadAll backward", (*store)->ReadAll(kLogEnd, Backward()).status());
  note("ScanAll", (*store)->ScanAll(1, ReadOptions(),
                                    [](const EventView& e) { return !e.payload().empty(); }));
  for (int s = 0; s < 4; ++s) {
    note("ReadStream", (*store)->ReadStream(absl::StrCat("s-", s), 0).status());
  }
  note("ListStreams", (*store)->ListStreams("").status());
  note("Append",
       (*store)->Append("s-0", ExpectedVersion::Any(), {testing::MakeEvent("X", 1)}).status());
  return error ? 0 : 10;
}

class TruncationTest : public ::testing::TestWithParam<double> {};

TEST_P(TruncationTest, TruncatedDataFileIsAnErrorNotACrash) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
    for (int batch = 0; batch < 40; ++batch) {
      std::vector<EventData> events;
      for (int i = 0; i < 50; ++i) {
        EventData e = testing::MakeEvent("Filler", batch * 50 + i);
        e.payload.append(1000, 'f');
        events.push_back(std::move(e));
      }
      RILL_ASSERT_OK(
          store->Append(absl::StrCat("s-", batch % 4), ExpectedVersion::Any(), events).status());
    }
  }
  const std::string data_file = DataFile(store_dir);
  struct stat st;
  ASSERT_EQ(stat(data_file.c_str(), &st), 0);
  ASSERT_GT(st.st_size, 2 << 20);
  const off_t cut = static_cast<off_t>(st.st_size * GetParam()) & ~off_t{4095};
  ASSERT_EQ(truncate(data_file.c_str(), cut), 0);

  const int status = RunInForkedChild([&] { return OpenAndReadEverything(store_dir); });
  EXPECT_TRUE(ExitedWithCode(status, 0))
      << "with data.mdb cut from " << st.st_size << " to " << cut << " bytes, the child "
      << DescribeWaitStatus(status)
      << (ExitedWithCode(status, 10) ? ": every call returned OK although the file lost its second "
                                       "half"
                                     : ": it crashed (a sanitizer report exits with code 1)");
}

INSTANTIATE_TEST_SUITE_P(Fractions, TruncationTest, ::testing::Values(0.5, 0.25),
                         [](const ::testing::TestParamInfo<double>& info) {
                           return absl::StrCat("Keep", static_cast<int>(info.param * 100),
                                               "Percent");
                         });

}  // namespace
}  // namespace rill
