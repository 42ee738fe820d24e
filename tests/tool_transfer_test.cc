// The `rill` admin tool moving data: export/import round trips, bad import
// files, verify finding corruption, hot backups during appends, full disks.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "rill/projection.h"
#include "rill/projection_admin.h"
#include "rill/store.h"
#include "test_util.h"
#include "tool_util.h"

namespace rill::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::testing::HasSubstr;

// Events of every shape the envelope holds, over interleaved streams.
std::vector<std::pair<std::string, EventData>> VariedEvents() {
  std::vector<std::pair<std::string, EventData>> out;
  auto add = [&](const std::string& stream, EventData e) {
    out.emplace_back(stream, std::move(e));
  };
  EventData spaced;
  spaced.type = "Spaced";
  spaced.payload = R"({ "b": 1.50,  "a": [1e3, "x\u00e9"], "z": null })";  // exact bytes kept
  add("order-1", spaced);
  EventData pretty;
  pretty.type = "Pretty";
  pretty.payload = "{\n  \"multi\": \"line\"\n}";  // JSON, but not on one line
  pretty.schema_version = 7;
  add("order-2", pretty);
  EventData binary;
  binary.type = "Blob";
  binary.content_type = ContentType::kBinary;
  binary.payload = std::string("\x00\xff\x10\n\"{", 6);
  add("order-1", binary);
  EventData fb;
  fb.type = "Flat";
  fb.content_type = ContentType::kFlatBuffers;
  fb.payload = std::string("\x08\x00\x00\x00RLEV", 8);
  add("other-1", fb);
  EventData meta;
  meta.type = "WithMeta";
  meta.payload = R"("just a string")";
  meta.metadata.correlation_id = "corr-1";
  meta.metadata.causation_id = "cause-1";
  meta.metadata.headers = {{"tenant", "acme"}, {"tenant", "acme-2"}, {"k", "v"}};
  add("order-2", meta);
  EventData invalid_json;
  invalid_json.type = "NotJson";
  invalid_json.payload = "{oops";  // content type json, bytes that are not
  add("order-1", invalid_json);
  EventData empty;
  empty.type = "Empty";
  empty.content_type = ContentType::kBinary;
  add("order-3", empty);
  for (int i = 0; i < 40; ++i) add(absl::StrCat("bulk-", i % 7), MakeEvent("Bulk", i));
  return out;
}

void Fill(Store* store, const std::vector<std::pair<std::string, EventData>>& events) {
  for (const auto& [stream, e] : events) {
    RILL_ASSERT_OK(store->Append(stream, ExpectedVersion::Any(), {e}).status());
  }
}

TEST(ToolTransferTest, ExportThenImportReproducesEveryEvent) {
  TempDir dir;
  const std::string src = dir.Sub("src"), dst = dir.Sub("dst"), file = dir.Sub("all.jsonl");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> s, Store::Open(src));
  Fill(s.get(), VariedEvents());

  ToolRun exp = RunTool({"export", src, "-o", file});
  ASSERT_EQ(exp.exit_code, 0) << exp.Describe();
  EXPECT_THAT(exp.out, HasSubstr("exported 47 events"));
  // Each line is JSON; JSON payloads on one line are JSON values, not strings.
  std::vector<std::string> lines = Lines(ReadFileOrEmpty(file));
  ASSERT_EQ(lines.size(), 47u);
  Json first = Json::parse(lines[0]);
  EXPECT_TRUE(first["data"].is_object());
  EXPECT_FALSE(first.contains("data_encoding"));
  EXPECT_EQ(Json::parse(lines[1])["data_encoding"], "base64");  // the multi-line one

  ToolRun imp = RunTool({"import", dst, file, "--json"});
  ASSERT_EQ(imp.exit_code, 0) << imp.Describe();
  EXPECT_EQ(Json::parse(imp.out), Json::parse(R"({"imported":47,"head_position":47})"));

  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> d, Store::Open(dst));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> want, s->ReadAll(1));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> got, d->ReadAll(1));
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(DescribeEvent(want[i]));
    EXPECT_EQ(got[i].stream, want[i].stream);
    EXPECT_EQ(got[i].version, want[i].version);
    EXPECT_EQ(got[i].position, want[i].position);
    EXPECT_EQ(got[i].id, want[i].id);
    EXPECT_EQ(got[i].type, want[i].type);
    EXPECT_EQ(got[i].content_type, want[i].content_type);
    EXPECT_EQ(got[i].schema_version, want[i].schema_version);
    EXPECT_EQ(got[i].payload, want[i].payload);
    EXPECT_EQ(got[i].metadata, want[i].metadata);
  }
  // And the copy exports to the same lines, but for the commit times.
  ToolRun again = RunTool({"export", dst});
  ASSERT_EQ(again.exit_code, 0);
  std::vector<std::string> relines = Lines(again.out);
  ASSERT_EQ(relines.size(), lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    Json a = Json::parse(lines[i]), b = Json::parse(relines[i]);
    a.erase("time");
    b.erase("time");
    EXPECT_EQ(a, b) << i;
  }
  // --from/--to/--prefix select a part.
  ToolRun part = RunTool({"export", src, "--from", "2", "--to", "6", "--prefix", "order-"});
  ASSERT_EQ(part.exit_code, 0);
  std::vector<std::string> picked = Lines(part.out);
  ASSERT_EQ(picked.size(), 4u);  // positions 2, 3, 5, 6
  EXPECT_EQ(Json::parse(picked.front())["position"], 2);
  EXPECT_EQ(Json::parse(picked.back())["position"], 6);
}

TEST(ToolTransferTest, ImportChecksTheWholeFileFirst) {
  TempDir dir;
  const std::string store = dir.Sub("s");
  struct Case {
    std::string content;
    std::string message;
  };
  const std::string ok_line = R"({"stream":"s-1","type":"A","data":{}})";
  for (const Case& c : std::vector<Case>{
           {ok_line + "\n" + ok_line + "\n{\"stream\":\"s-1\",\"type\":\"A\"\n", "line 3"},
           {ok_line + "\n" + R"({"type":"A","data":{}})" + "\n", "line 2"},
           {ok_line + "\n" + R"({"stream":"s","type":"A","data":{},"color":"red"})", "line 2"},
           {R"({"stream":"s","type":"A","data":"%%","data_encoding":"base64"})", "line 1"},
           {R"({"stream":"s","type":"A","data":"AA==","content_type":"binary"})", "line 1"},
           {R"({"stream":"s","type":"A","data":{},"version":-1})", "line 1"},
           {R"({"stream":"s","type":"A","data":{},"metadata":"who"})", "line 1"},
           {R"({"stream":"s","type":"A","data":{},"id":"3f1e0b8c-2a44-4c35-9d2e-5b7a9f0c1d2e"})"
            "\n"
            R"({"stream":"t","type":"A","data":{},"id":"3f1e0b8c-2a44-4c35-9d2e-5b7a9f0c1d2e"})",
            "repeats line 1"},
           {R"({"stream":"s","type":"A","data":{},"version":0})"
            "\n"
            R"({"stream":"s","type":"A","data":{},"version":2})",
            "jumps from version 0 to 2"},
       }) {
    const std::string file = dir.Sub("bad.jsonl");
    WriteFile(file, c.content);
    ToolRun r = RunTool({"import", store, file});
    EXPECT_EQ(r.exit_code, 2) << c.content << "\n" << r.Describe();
    EXPECT_THAT(r.err, HasSubstr(c.message)) << c.content;
    EXPECT_THAT(r.err, HasSubstr("nothing was imported"));
    EXPECT_FALSE(fs::exists(store)) << "a rejected file creates no store";
  }
}

TEST(ToolTransferTest, ImportingTwiceConflictsAndAddsNothing) {
  TempDir dir;
  const std::string src = dir.Sub("src"), dst = dir.Sub("dst"), file = dir.Sub("all.jsonl");
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> s, Store::Open(src));
    Fill(s.get(), VariedEvents());
  }
  ASSERT_EQ(RunTool({"export", src, "-o", file}).exit_code, 0);
  ASSERT_EQ(RunTool({"import", dst, file}).exit_code, 0);
  ToolRun twice = RunTool({"import", dst, file});
  EXPECT_EQ(twice.exit_code, 3) << twice.Describe();
  EXPECT_THAT(twice.err, HasSubstr("line 1"));
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> d, Store::Open(dst));
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, d->HeadPosition());
  EXPECT_EQ(head, 47u);

  // A file that cannot be appended from its first line creates no store.
  const std::string late = dir.Sub("late.jsonl");
  WriteFile(late, R"({"stream":"s","type":"A","data":{},"version":3})");
  const std::string fresh = dir.Sub("fresh");
  ToolRun conflict = RunTool({"import", fresh, late});
  EXPECT_EQ(conflict.exit_code, 3) << conflict.Describe();
  EXPECT_THAT(conflict.err, HasSubstr("late.jsonl line 1"));
  EXPECT_FALSE(fs::exists(fresh));
}

TEST(ToolTransferTest, VerifyFindsACorruptedRecordAndReadsFailWithDataLoss) {
  TempDir dir;
  const std::string store = dir.Sub("s");
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> s, Store::Open(store));
    Fill(s.get(), VariedEvents());
    EventData marked;
    marked.type = "Marked";
    marked.payload = R"({"marker":"CORRUPT-ME-PLEASE"})";
    RILL_ASSERT_OK(s->Append("victim", ExpectedVersion::Any(), {marked}).status());
    Fill(s.get(), VariedEvents());
  }
  ToolRun clean = RunTool({"verify", store, "--json"});
  ASSERT_EQ(clean.exit_code, 0) << clean.Describe();
  Json report = Json::parse(clean.out);
  EXPECT_EQ(report["ok"], true);
  EXPECT_EQ(report["events"], 95);
  EXPECT_EQ(report["index_entries"], 95);

  const std::string data = store + "/log/data.mdb";
  std::string bytes = ReadFileOrEmpty(data);
  const size_t at = bytes.find("CORRUPT-ME-PLEASE");
  ASSERT_NE(at, std::string::npos);
  bytes[at] = 'X';
  WriteFile(data, bytes);

  ToolRun bad = RunTool({"verify", store});
  EXPECT_EQ(bad.exit_code, 6) << bad.Describe();
  EXPECT_THAT(bad.out, HasSubstr("PROBLEM: event at position 48 fails its checksum"));
  EXPECT_THAT(bad.out, HasSubstr("1 problem found"));
  EXPECT_EQ(Lines(bad.err).size(), 1u);
  ToolRun read = RunTool({"read", store, "victim"});
  EXPECT_EQ(read.exit_code, 6) << read.Describe();
  EXPECT_EQ(RunTool({"read-all", store, "--json"}).exit_code, 6);
  EXPECT_EQ(RunTool({"read", store, "order-1"}).exit_code, 0) << "other streams still read";
  // What lies before the damage exports whole (the scan stops at --to), and
  // imports into a store that verifies.
  const std::string part = dir.Sub("part.jsonl");
  ToolRun before = RunTool({"export", store, "--to", "47", "-o", part});
  ASSERT_EQ(before.exit_code, 0) << before.Describe();
  EXPECT_THAT(before.out, HasSubstr("exported 47 events"));
  ASSERT_EQ(RunTool({"import", dir.Sub("rescued"), part}).exit_code, 0);
  EXPECT_EQ(RunTool({"verify", dir.Sub("rescued")}).exit_code, 0);
  EXPECT_EQ(RunTool({"export", store, "--to", "48"}).exit_code, 6);
}

TEST(ToolTransferTest, ATruncatedDataFileIsCorruptionNotACrash) {
  TempDir dir;
  const std::string store = dir.Sub("s");
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> s, Store::Open(store));
    for (int i = 0; i < 5; ++i) Fill(s.get(), VariedEvents());
  }
  const std::string data = store + "/log/data.mdb";
  const uintmax_t size = fs::file_size(data);
  ASSERT_GT(size, 64u << 10);
  fs::resize_file(data, 16 << 10);  // the meta pages and a little more
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"verify", store}, {"info", store}, {"read-all", store}, {"export", store}}) {
    ToolRun r = RunTool(args);
    EXPECT_EQ(r.exit_code, 6) << args[0] << ": " << r.Describe();
    EXPECT_EQ(Lines(r.err).size(), 1u) << r.Describe();
  }
}

TEST(ToolTransferTest, BackupDuringAppendsOpensAndVerifies) {
  TempDir dir;
  const std::string store = dir.Sub("s");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> s, Store::Open(store));
  Fill(s.get(), VariedEvents());
  // Derived data too: a projection's model and checkpoint.
  ProjectionDef def;
  def.name = "counter";
  def.tables = {"n"};
  def.apply = [](const EventView& e, ReadModelTxn& txn) {
    return txn.Put("n", "last", absl::StrCat(e.position()));
  };
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(s.get(), {def}));
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head_before, s->HeadPosition());

  std::atomic<bool> stop{false};
  std::atomic<int> appended{0};
  std::thread writer([&] {
    for (int i = 0; !stop.load(); ++i) {
      absl::StatusOr<AppendResult> r =
          s->Append(absl::StrCat("live-", i % 5), ExpectedVersion::Any(), MakeEvents(10, i));
      if (!r.ok()) break;
      ++appended;
    }
  });
  ASSERT_TRUE(WaitUntil([&] { return appended.load() > 5; }, absl::Seconds(30)));
  for (const char* mode : {"plain", "compact"}) {
    const std::string dest = dir.Sub(absl::StrCat("backup-", mode));
    std::vector<std::string> args = {"backup", store, dest, "--json"};
    if (std::string(mode) == "compact") args.push_back("--compact");
    ToolRun b = RunTool(args);
    ASSERT_EQ(b.exit_code, 0) << b.Describe();
    Json j = Json::parse(b.out);
    EXPECT_GE(j["head_position"].get<uint64_t>(), head_before);
    ToolRun v = RunTool({"verify", dest});
    EXPECT_EQ(v.exit_code, 0) << mode << ": " << v.Describe();
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> copy, Store::Open(dest));
    RILL_ASSERT_OK_AND_ASSIGN(uint64_t copy_head, copy->HeadPosition());
    EXPECT_EQ(copy_head, j["head_position"].get<uint64_t>());
    // Every event of the copy is the source's event at that position.
    RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> mine, copy->ReadAll(1));
    RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> theirs,
                              s->ReadAll(1, ReadOptions{Direction::kForward, mine.size(), {}}));
    ASSERT_EQ(mine.size(), theirs.size());
    for (size_t i = 0; i < mine.size(); ++i) EXPECT_EQ(mine[i].id, theirs[i].id) << i;
    // The copied projection checkpoint is never past the copy's head.
    RILL_ASSERT_OK_AND_ASSIGN(std::vector<ProjectionStatus> st, ReadProjectionStatuses(copy.get()));
    ASSERT_EQ(st.size(), 1u);
    EXPECT_LE(st[0].checkpoint, copy_head);
  }
  stop = true;
  writer.join();
  // A destination that holds something is refused and left alone.
  const std::string taken = dir.Sub("taken");
  fs::create_directory(taken);
  WriteFile(taken + "/keep.txt", "mine");
  ToolRun refused = RunTool({"backup", store, taken});
  EXPECT_EQ(refused.exit_code, 2) << refused.Describe();
  EXPECT_THAT(refused.err, HasSubstr("pick a new or empty directory"));
  EXPECT_EQ(ReadFileOrEmpty(taken + "/keep.txt"), "mine");
}

TEST(ToolTransferTest, AFullDiskExits7AndLeavesNoPartialFile) {
  TempDir dir;
  const std::string store = dir.Sub("s");
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> s, Store::Open(store));
    for (int i = 0; i < 20; ++i) {
      EventData big;
      big.type = "Big";
      big.payload = absl::StrCat(R"({"fill":")", std::string(20000, 'x'), R"("})");
      RILL_ASSERT_OK(s->Append("big", ExpectedVersion::Any(), {big}).status());
    }
  }
  ToolOptions limited;
  limited.file_size_limit = 64 << 10;
  const std::string out = dir.Sub("out.jsonl");
  ToolRun exp = RunTool({"export", store, "-o", out}, limited);
  EXPECT_EQ(exp.exit_code, 7) << exp.Describe();
  EXPECT_THAT(exp.err, HasSubstr("disk full"));
  EXPECT_FALSE(fs::exists(out));

  const std::string dest = dir.Sub("copy");
  ToolRun backup = RunTool({"backup", store, dest}, limited);
  EXPECT_EQ(backup.exit_code, 7) << backup.Describe();
  EXPECT_FALSE(fs::exists(dest));

  // An append that cannot grow the data file: 7, and the store is intact.
  ToolRun append = RunTool({"append", store, "big", "--type", "Big", "--data",
                            absl::StrCat(R"({"fill":")", std::string(100000, 'y'), R"("})")},
                           limited);
  EXPECT_EQ(append.exit_code, 7) << append.Describe();
  EXPECT_EQ(Lines(append.err).size(), 1u);
  ToolRun verify = RunTool({"verify", store, "--json"});
  EXPECT_EQ(verify.exit_code, 0) << verify.Describe();
  EXPECT_EQ(Json::parse(verify.out)["events"], 20);
}

}  // namespace
}  // namespace rill::testing
