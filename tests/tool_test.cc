// The `rill` admin tool run as a user runs it: help, conventions, exit codes,
// info/streams/read/read-all/append, snapshots and bench.
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "rill/snapshot.h"
#include "rill/store.h"
#include "test_util.h"
#include "tool_util.h"

namespace rill::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::testing::HasSubstr;

const std::vector<std::string> kCommands = {
    "info",   "streams", "read",   "read-all",    "tail",      "append", "export",
    "import", "verify",  "backup", "projections", "snapshots", "bench",  "metrics"};

TEST(ToolTest, HelpExplainsEveryCommandWithAnExample) {
  ToolRun top = RunTool({"--help"});
  ASSERT_EQ(top.exit_code, 0) << top.Describe();
  for (const std::string& c : kCommands) {
    EXPECT_THAT(top.out, HasSubstr(c));
    ToolRun help = RunTool({c, "--help"});
    EXPECT_EQ(help.exit_code, 0) << c << ": " << help.Describe();
    EXPECT_THAT(help.out, HasSubstr("Example")) << c;
  }
  for (const char* sub : {"rebuild", "reset", "parked", "retry", "drop"}) {
    ToolRun help = RunTool({"projections", sub, "--help"});
    EXPECT_EQ(help.exit_code, 0) << sub << ": " << help.Describe();
    EXPECT_THAT(help.out, HasSubstr("NAME")) << sub;
  }
}

TEST(ToolTest, BadUsageExits2WithOneLine) {
  TempDir dir;
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {},
           {"no-such-command"},
           {"info"},
           {"info", dir.path(), "--no-such-flag"},
           {"read-all", dir.path(), "--limit", "many"},
           {"bench", dir.path(), "--workload", "nap"},
       }) {
    ToolRun r = RunTool(args);
    EXPECT_EQ(r.exit_code, 2) << absl::StrJoin(args, " ") << ": " << r.Describe();
    EXPECT_EQ(Lines(r.err).size(), 1u) << r.Describe();
    EXPECT_TRUE(absl::StartsWith(r.err, "rill: ")) << r.err;
  }
  EXPECT_THAT(RunTool({"frobnicate", dir.path()}).err, HasSubstr("unknown command \"frobnicate\""));
  EXPECT_EQ(RunTool({"read", dir.path(), "s", "--from", "-5"}).exit_code, 2);
}

TEST(ToolTest, MissingStoreExits5AndCreatesNothing) {
  TempDir dir;
  const std::string missing = dir.Sub("nothing-here");
  const std::string dest = dir.Sub("copy");
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"info", missing},
           {"streams", missing},
           {"read", missing, "s"},
           {"read-all", missing},
           {"tail", missing},
           {"export", missing},
           {"verify", missing},
           {"backup", missing, dest},
           {"projections", missing},
           {"projections", "rebuild", missing, "p"},
           {"projections", "reset", missing, "p"},
           {"projections", "parked", missing, "p"},
           {"projections", "drop", missing, "p", "--all"},
           {"snapshots", missing},
           {"snapshots", "prune", missing, "--keep", "1"},
           {"bench", missing},
       }) {
    ToolRun r = RunTool(args);
    EXPECT_EQ(r.exit_code, 5) << absl::StrJoin(args, " ") << ": " << r.Describe();
    EXPECT_EQ(Lines(r.err).size(), 1u) << r.Describe();
    EXPECT_FALSE(fs::exists(missing)) << absl::StrJoin(args, " ");
    EXPECT_FALSE(fs::exists(dest)) << absl::StrJoin(args, " ");
  }
  // An empty directory is no store either, and stays empty.
  const std::string empty = dir.Sub("empty");
  fs::create_directory(empty);
  EXPECT_EQ(RunTool({"info", empty}).exit_code, 5);
  EXPECT_TRUE(fs::is_empty(empty));
}

TEST(ToolTest, AppendCreatesTheStoreAndReportsEveryOutcome) {
  TempDir dir;
  const std::string store = dir.Sub("s");
  const std::vector<std::string> append = {
      "append",
      store,
      "order-1",
      "--type",
      "OrderCreated",
      "--data",
      R"({"total": 12})",
      "--expected-version",
      "no-stream",
      "--idempotency-key",
      "req-1",
      "--metadata",
      R"({"correlation_id":"c-1","headers":{"tenant":"acme"}})",
      "--json"};
  ToolRun first = RunTool(append);
  ASSERT_EQ(first.exit_code, 0) << first.Describe();
  Json r = Json::parse(first.out);
  EXPECT_EQ(r["stream"], "order-1");
  EXPECT_EQ(r["first_version"], 0);
  EXPECT_EQ(r["first_position"], 1);
  EXPECT_EQ(r["deduplicated"], false);

  // The retry: the same result, deduplicated, nothing written.
  ToolRun retry = RunTool(append);
  ASSERT_EQ(retry.exit_code, 0) << retry.Describe();
  Json again = Json::parse(retry.out);
  EXPECT_EQ(again["first_position"], 1);
  EXPECT_EQ(again["deduplicated"], true);

  // Wrong expected version: 3, nothing written.
  ToolRun conflict = RunTool({"append", store, "order-1", "--type", "X", "--data", "{}",
                              "--expected-version", "no-stream"});
  EXPECT_EQ(conflict.exit_code, 3) << conflict.Describe();
  EXPECT_THAT(conflict.err, HasSubstr("version"));
  // The key reused for another request: 4.
  ToolRun reused = RunTool(
      {"append", store, "order-2", "--type", "X", "--data", "{}", "--idempotency-key", "req-1"});
  EXPECT_EQ(reused.exit_code, 4) << reused.Describe();
  // Invalid input: 2.
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"--type", "X", "--data", "{not json"},
           {"--type", "X", "--data", "{}", "--expected-version", "-3"},
           {"--type", "X", "--data", "{}", "--expected-version", "sometime"},
           {"--type", "X", "--data", "{}", "--metadata", "[1]"},
           {"--type", "X", "--data", "{}", "--metadata", R"({"headers":"me"})"},
           {"--type", "X", "--data", "{}", "--id", "not-a-uuid"},
           {"--type", "", "--data", "{}"},
           {"--type", "X", "--data", "%%%", "--content-type", "binary"},
       }) {
    std::vector<std::string> args = {"append", store, "order-1"};
    args.insert(args.end(), bad.begin(), bad.end());
    ToolRun r = RunTool(args);
    EXPECT_EQ(r.exit_code, 2) << absl::StrJoin(args, " ") << ": " << r.Describe();
  }
  // Exact version and a binary payload.
  ToolRun exact = RunTool({"append", store, "order-1", "--type", "Blob", "--data",
                           "AAEC/w==", "--content-type", "binary", "--expected-version", "0"});
  EXPECT_EQ(exact.exit_code, 0) << exact.Describe();
  EXPECT_THAT(exact.out, HasSubstr("versions 1..1"));

  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> s, Store::Open(store));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> events, s->ReadAll(1));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].payload, R"({"total": 12})");
  EXPECT_EQ(events[0].metadata.correlation_id, "c-1");
  EXPECT_EQ(events[0].metadata.headers,
            (std::vector<std::pair<std::string, std::string>>{{"tenant", "acme"}}));
  EXPECT_EQ(events[1].payload, std::string("\x00\x01\x02\xff", 4));
  EXPECT_EQ(events[1].content_type, ContentType::kBinary);
}

// Free-form metadata: keys other than correlation_id, causation_id and
// headers become headers (strings as they are, other values as JSON text),
// and read --json shows them under "headers".
TEST(ToolTest, AppendTakesFreeFormMetadataAsHeaders) {
  TempDir dir;
  const std::string store = dir.Sub("s");
  ToolRun appended =
      RunTool({"append", store, "order-1", "--type", "OrderCreated", "--data", "{}", "--metadata",
               R"({"source":"com.orders","attempt":3,"tags":["a","b"],"correlation_id":"c-1"})"});
  ASSERT_EQ(appended.exit_code, 0) << appended.Describe();
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> s, Store::Open(store));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> events, s->ReadAll(1));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].metadata.correlation_id, "c-1");
  EXPECT_EQ(events[0].metadata.headers,
            (std::vector<std::pair<std::string, std::string>>{
                {"source", "com.orders"}, {"attempt", "3"}, {"tags", R"(["a","b"])"}}));
  s.reset();
  ToolRun read = RunTool({"read", store, "order-1", "--json"});
  ASSERT_EQ(read.exit_code, 0) << read.Describe();
  Json line = Json::parse(read.out);
  EXPECT_EQ(line["metadata"]["headers"]["source"], "com.orders");
  EXPECT_EQ(line["metadata"]["headers"]["attempt"], "3");
}

TEST(ToolTest, AppendFileIsOneAtomicRequest) {
  TempDir dir;
  const std::string store = dir.Sub("s");
  const std::string good = dir.Sub("good.jsonl");
  WriteFile(good,
            "{\"type\":\"A\",\"data\":{\"n\":1}}\n"
            "\n"
            "{\"type\":\"B\",\"data\":[1, 2]}\n"
            "{\"type\":\"C\",\"data\":\"AAE=\",\"data_encoding\":\"base64\","
            "\"content_type\":\"binary\",\"schema_version\":3}\n");
  ToolRun ok = RunTool(
      {"append", store, "s-1", "--file", good, "--expected-version", "no-stream", "--json"});
  ASSERT_EQ(ok.exit_code, 0) << ok.Describe();
  Json r = Json::parse(ok.out);
  EXPECT_EQ(r["first_version"], 0);
  EXPECT_EQ(r["last_version"], 2);

  // Keys written with escapes mean what the JSON parser reads (a bug the
  // import_line fuzz target found: "d\/ta" was not found as written).
  const std::string escaped = dir.Sub("escaped.jsonl");
  WriteFile(escaped, R"({"t\u0079pe":"E","d\u0061ta":{"x" : 1},"str\u0065am":"s-2"})"
                     "\n");
  ToolRun esc = RunTool({"append", store, "s-2", "--file", escaped, "--json"});
  ASSERT_EQ(esc.exit_code, 0) << esc.Describe();

  const std::string bad = dir.Sub("bad.jsonl");
  WriteFile(bad, "{\"type\":\"A\",\"data\":{}}\n{\"type\":\"B\",\"data\":{}\n");
  ToolRun malformed = RunTool({"append", store, "s-1", "--file", bad});
  EXPECT_EQ(malformed.exit_code, 2) << malformed.Describe();
  EXPECT_THAT(malformed.err, HasSubstr("line 2"));
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> s, Store::Open(store));
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, s->HeadPosition());
  EXPECT_EQ(head, 4u) << "a malformed file appends nothing";
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> s2, s->ReadStream("s-2", 0));
  ASSERT_EQ(s2.size(), 1u);
  EXPECT_EQ(s2[0].type, "E");
  EXPECT_EQ(s2[0].payload, R"({"x" : 1})");
}

// A store with three streams: a-1 (3 events), a-2 (2), b-1 (1), interleaved.
void MakeSmallStore(const std::string& dir) {
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> s, Store::Open(dir));
  for (const auto& [stream, type] :
       std::vector<std::pair<std::string, std::string>>{{"a-1", "Opened"},
                                                        {"a-2", "Opened"},
                                                        {"a-1", "Paid"},
                                                        {"b-1", "Opened"},
                                                        {"a-1", "Closed"},
                                                        {"a-2", "Paid"}}) {
    EventData e;
    e.type = type;
    e.payload = absl::StrCat(R"({"stream":")", stream, R"("})");
    RILL_ASSERT_OK(s->Append(stream, ExpectedVersion::Any(), {e}).status());
  }
}

std::vector<Json> JsonLines(const std::string& out) {
  std::vector<Json> v;
  for (const std::string& line : Lines(out)) v.push_back(Json::parse(line));
  return v;
}

TEST(ToolTest, ReadAndReadAllPrintEventsWithTheSameFields) {
  TempDir dir;
  const std::string store = dir.Sub("s");
  MakeSmallStore(store);

  ToolRun all = RunTool({"read-all", store, "--json"});
  ASSERT_EQ(all.exit_code, 0) << all.Describe();
  std::vector<Json> events = JsonLines(all.out);
  ASSERT_EQ(events.size(), 6u);
  for (size_t i = 0; i < events.size(); ++i) {
    const Json& e = events[i];
    std::vector<std::string> keys;
    for (const auto& [k, v] : e.items()) keys.push_back(k);
    EXPECT_THAT(keys, ::testing::UnorderedElementsAre("stream", "version", "position", "type", "id",
                                                      "time", "content_type", "schema_version",
                                                      "metadata", "data"));
    EXPECT_EQ(e["position"], i + 1);
    EXPECT_EQ(e["data"]["stream"], e["stream"]);
  }
  EXPECT_EQ(events[2]["stream"], "a-1");
  EXPECT_EQ(events[2]["version"], 1);
  EXPECT_EQ(events[2]["type"], "Paid");

  ToolRun stream = RunTool({"read", store, "a-1", "--json"});
  ASSERT_EQ(stream.exit_code, 0) << stream.Describe();
  std::vector<Json> a1 = JsonLines(stream.out);
  ASSERT_EQ(a1.size(), 3u);
  EXPECT_EQ(a1[0], events[0]);
  EXPECT_EQ(a1[1], events[2]);
  EXPECT_EQ(a1[2], events[4]);

  std::vector<Json> back =
      JsonLines(RunTool({"read", store, "a-1", "--backward", "--limit", "2", "--json"}).out);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0]["version"], 2);
  EXPECT_EQ(back[1]["version"], 1);
  std::vector<Json> from = JsonLines(RunTool({"read", store, "a-1", "--from", "1", "--json"}).out);
  ASSERT_EQ(from.size(), 2u);
  EXPECT_EQ(from[0]["version"], 1);

  std::vector<Json> paid =
      JsonLines(RunTool({"read-all", store, "--type", "Paid", "--type", "Closed", "--json"}).out);
  ASSERT_EQ(paid.size(), 3u);
  EXPECT_EQ(paid[0]["position"], 3);
  std::vector<Json> prefixed =
      JsonLines(RunTool({"read-all", store, "--prefix", "a-2", "--from", "3", "--json"}).out);
  ASSERT_EQ(prefixed.size(), 1u);
  EXPECT_EQ(prefixed[0]["position"], 6);
  std::vector<Json> newest =
      JsonLines(RunTool({"read-all", store, "--backward", "--limit", "1", "--json"}).out);
  ASSERT_EQ(newest.size(), 1u);
  EXPECT_EQ(newest[0]["position"], 6);

  // Human form: the header line of each event and the pretty payload.
  ToolRun text = RunTool({"read", store, "b-1"});
  ASSERT_EQ(text.exit_code, 0) << text.Describe();
  EXPECT_THAT(text.out, HasSubstr("#4  b-1 @ 0  Opened"));
  EXPECT_THAT(text.out, HasSubstr("\"stream\": \"b-1\""));

  ToolRun missing = RunTool({"read", store, "nope"});
  EXPECT_EQ(missing.exit_code, 5) << missing.Describe();
  EXPECT_THAT(missing.err, HasSubstr("no stream \"nope\""));
}

TEST(ToolTest, InfoAndStreams) {
  TempDir dir;
  const std::string store = dir.Sub("s");
  MakeSmallStore(store);
  ToolRun info = RunTool({"info", store, "--json"});
  ASSERT_EQ(info.exit_code, 0) << info.Describe();
  Json j = Json::parse(info.out);
  EXPECT_EQ(j["format_version"], 1);
  EXPECT_EQ(j["head_position"], 6);
  EXPECT_EQ(j["streams"], 3);
  EXPECT_EQ(j["events"], 6);
  EXPECT_GT(j["disk_bytes"].get<uint64_t>(), 0u);
  EXPECT_GT(j["map_size"].get<uint64_t>(), 0u);
  EXPECT_EQ(j["store_id"].get<std::string>().size(), 36u);
  EXPECT_TRUE(j["projections"].is_array());
  ToolRun table = RunTool({"info", store});
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_THAT(table.out, HasSubstr("head position"));

  ToolRun streams = RunTool({"streams", store, "--prefix", "a-", "--json"});
  ASSERT_EQ(streams.exit_code, 0) << streams.Describe();
  Json s = Json::parse(streams.out)["streams"];
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0]["stream"], "a-1");
  EXPECT_EQ(s[0]["last_version"], 2);
  EXPECT_EQ(s[0]["events"], 3);
  EXPECT_EQ(s[1]["stream"], "a-2");
  Json limited = Json::parse(RunTool({"streams", store, "--limit", "1", "--json"}).out);
  EXPECT_EQ(limited["streams"].size(), 1u);
  EXPECT_THAT(RunTool({"streams", store}).out, HasSubstr("b-1"));
}

TEST(ToolTest, SnapshotsListAndPrune) {
  TempDir dir;
  const std::string store = dir.Sub("s");
  MakeSmallStore(store);
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> s, Store::Open(store));
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnapshotStore> snaps,
                              SnapshotStore::Open(s.get(), SnapshotPolicy{0, 0}));
    for (int v = 0; v <= 2; ++v) RILL_ASSERT_OK(snaps->Save("a-1", v, 1, absl::StrCat("state", v)));
    RILL_ASSERT_OK(snaps->Save("a-2", 1, 1, "x"));
  }
  Json all = Json::parse(RunTool({"snapshots", store, "--json"}).out)["snapshots"];
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0]["stream"], "a-1");
  EXPECT_EQ(all[0]["bytes"], 6);
  Json one = Json::parse(RunTool({"snapshots", store, "a-2", "--json"}).out)["snapshots"];
  ASSERT_EQ(one.size(), 1u);

  ToolRun prune = RunTool({"snapshots", "prune", store, "--keep", "1"});
  ASSERT_EQ(prune.exit_code, 0) << prune.Describe();
  EXPECT_THAT(prune.out, HasSubstr("deleted 2"));
  Json left = Json::parse(RunTool({"snapshots", store, "--json"}).out)["snapshots"];
  ASSERT_EQ(left.size(), 2u);
  EXPECT_EQ(left[0]["version"], 2);
  EXPECT_EQ(RunTool({"snapshots", "prune", store, "--keep", "0"}).exit_code, 2);
}

TEST(ToolTest, BenchRunsEveryWorkloadAndRemovesItsStore) {
  TempDir dir;
  for (const char* w :
       {"append", "append-batch", "concurrent", "read-all", "read-stream", "projection"}) {
    ToolRun r = RunTool({"bench", dir.path(), "--workload", w, "--events", "200", "--batch", "20",
                         "--threads", "4", "--streams", "10", "--size", "64", "--json"});
    ASSERT_EQ(r.exit_code, 0) << w << ": " << r.Describe();
    Json j = Json::parse(r.out);
    EXPECT_EQ(j["workload"], w);
    EXPECT_GT(j["events"].get<uint64_t>(), 0u) << w;
    EXPECT_GT(j["events_per_s"].get<double>(), 0) << w;
    EXPECT_GT(j["p50_us"].get<double>(), 0) << w;
    EXPECT_GE(j["p99_us"].get<double>(), j["p50_us"].get<double>()) << w;
    EXPECT_GE(j["p999_us"].get<double>(), j["p99_us"].get<double>()) << w;
  }
  EXPECT_TRUE(fs::is_empty(dir.path()));
  ToolRun off = RunTool({"bench", dir.path(), "--workload", "concurrent", "--events", "200",
                         "--threads", "4", "--group-commit-wait-us", "0", "--json"});
  ASSERT_EQ(off.exit_code, 0) << off.Describe();
  EXPECT_EQ(Json::parse(off.out)["group_commit_wait_us"], 0);
  EXPECT_EQ(
      Json::parse(
          RunTool({"bench", dir.path(), "--events", "20", "--json"}).out)["group_commit_wait_us"],
      100);
  EXPECT_EQ(RunTool({"bench", dir.path(), "--group-commit-wait-us", "-5"}).exit_code, 2);
  ToolRun text = RunTool({"bench", dir.path(), "--events", "20"});
  EXPECT_EQ(text.exit_code, 0) << text.Describe();
  EXPECT_THAT(text.out, HasSubstr("events/s"));
  EXPECT_THAT(text.out, HasSubstr("p99.9"));
}

}  // namespace
}  // namespace rill::testing
