// `rill metrics STORE [--listen HOST:PORT]`: the store's figures as a
// scraper gets them, checked by promtool (Debian's prometheus package) and
// fetched over HTTP with curl from a running `rill metrics --listen`.
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

#include <memory>
#include <regex>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "rill/projection.h"
#include "rill/store.h"
#include "test_util.h"
#include "tool_util.h"

namespace rill {
namespace {

using ::rill::testing::ChildProcess;
using ::rill::testing::MakeEvents;
using ::rill::testing::RunShell;
using ::rill::testing::RunTool;
using ::rill::testing::TempDir;
using ::rill::testing::ToolBinary;
using ::rill::testing::ToolRun;

// A store with 12 events and a projection that has applied them.
void MakeStore(const std::string& dir) {
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir));
  RILL_ASSERT_OK(store->Append("orders-1", ExpectedVersion::Any(), MakeEvents(12)).status());
  ProjectionDef def;
  def.name = "orders";
  def.tables = {"t"};
  def.apply = [](const EventView& e, ReadModelTxn& txn) {
    return txn.Put("t", absl::StrCat(e.position()), "1");
  };
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {def}));
  RILL_ASSERT_OK(runner->WaitFor("orders", 12, absl::Seconds(30)));
}

TEST(ToolMetricsTest, PrintsTheStoresFiguresInTheExpositionFormat) {
  TempDir dir;
  MakeStore(dir.Sub("store"));
  if (HasFatalFailure()) return;
  const ToolRun run = RunTool({"metrics", dir.Sub("store")});
  ASSERT_EQ(run.exit_code, 0) << run.Describe();
  for (const char* series :
       {"rill_head_position 12\n", "rill_events 12\n", "rill_streams 1\n",
        "rill_projection_checkpoint_position{projection=\"orders\"} 12\n",
        "rill_projection_lag_events{projection=\"orders\"} 0\n",
        "rill_projection_state{projection=\"orders\",state=\"stopped\"} 1\n"}) {
    EXPECT_NE(run.out.find(series), std::string::npos) << series << run.out;
  }
  // Not this process's: the tool appended nothing.
  EXPECT_EQ(run.out.find("rill_append_requests_total"), std::string::npos);
  testing::WriteFile(dir.Sub("metrics.txt"), run.out);
  const std::string check = RunShell("promtool check metrics < " + dir.Sub("metrics.txt"));
  EXPECT_NE(check.find("exit=0"), std::string::npos) << check;

  const ToolRun missing = RunTool({"metrics", dir.Sub("nothing-here")});
  EXPECT_EQ(missing.exit_code, 5) << missing.Describe();
  EXPECT_NE(missing.err.find("no rill store"), std::string::npos) << missing.err;
}

TEST(ToolMetricsTest, ServesMetricsOverHttpWhileTheServiceAppends) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  MakeStore(store_dir);
  if (HasFatalFailure()) return;
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ChildProcess> server,
      ChildProcess::Start(ToolBinary(), {"metrics", store_dir, "--listen", "127.0.0.1:0"},
                          dir.Sub("server.err")));
  RILL_ASSERT_OK_AND_ASSIGN(const std::string line, server->ReadLine(absl::Seconds(30)));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(line, m, std::regex(R"(http://127\.0\.0\.1:([0-9]+)/metrics)")))
      << line;
  const std::string url = absl::StrCat("http://127.0.0.1:", m[1].str(), "/metrics");
  const std::string first = RunShell("curl -fsS " + url);
  ASSERT_NE(first.find("exit=0"), std::string::npos) << first;
  EXPECT_NE(first.find("rill_head_position 12\n"), std::string::npos) << first;
  const std::string check = RunShell("curl -fsS " + url + " | promtool check metrics");
  EXPECT_NE(check.find("exit=0"), std::string::npos) << check;

  // The service appends (another process, here this test): the next scrape
  // sees it.
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir));
    RILL_ASSERT_OK(store->Append("orders-2", ExpectedVersion::Any(), MakeEvents(3)).status());
  }
  const std::string second = RunShell("curl -fsS " + url);
  EXPECT_NE(second.find("rill_head_position 15\n"), std::string::npos) << second;
  EXPECT_NE(second.find("rill_projection_lag_events{projection=\"orders\"} 3\n"), std::string::npos)
      << second;
  // Anything but /metrics (and /) is a 404, which fails curl -f.
  const std::string other = RunShell("curl -fsS " + url.substr(0, url.size() - 8) + "/nope");
  EXPECT_NE(other.find("exit=22"), std::string::npos) << other;

  // SIGTERM ends it cleanly.
  server->Kill(SIGTERM);
  const int status = server->Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << server->Stderr();
}

TEST(ToolMetricsTest, ABadOrBusyAddressIsAClearError) {
  TempDir dir;
  MakeStore(dir.Sub("store"));
  if (HasFatalFailure()) return;
  const ToolRun bad = RunTool({"metrics", dir.Sub("store"), "--listen", "localhost"});
  EXPECT_EQ(bad.exit_code, 2) << bad.Describe();
  EXPECT_NE(bad.err.find("--listen wants HOST:PORT"), std::string::npos) << bad.err;
  // A port another server holds.
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ChildProcess> server,
      ChildProcess::Start(ToolBinary(), {"metrics", dir.Sub("store"), "--listen", "127.0.0.1:0"},
                          dir.Sub("server.err")));
  RILL_ASSERT_OK_AND_ASSIGN(const std::string line, server->ReadLine(absl::Seconds(30)));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(line, m, std::regex(R"(127\.0\.0\.1:([0-9]+)/)"))) << line;
  // (Under `timeout`: a second server sharing the port would never return.)
  const std::string busy =
      RunShell(absl::StrCat("timeout 30 ", ToolBinary(), " metrics ", dir.Sub("store"),
                            " --listen 127.0.0.1:", m[1].str()));
  EXPECT_NE(busy.find("exit=1\n"), std::string::npos) << busy;
  EXPECT_NE(busy.find("cannot listen on"), std::string::npos) << busy;
}

TEST(ToolMetricsTest, TheDocumentedScrapeConfigIsValid) {
  const std::string check = RunShell(
      absl::StrCat("promtool check config ", RILL_SOURCE_DIR, "/docs/operations/prometheus.yml"));
  EXPECT_NE(check.find("exit=0"), std::string::npos) << check;
}

}  // namespace
}  // namespace rill
