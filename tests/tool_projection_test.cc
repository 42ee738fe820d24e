// The `rill` admin tool next to a running service: tail following appends of
// other processes, and projections rebuilt, reset, listed, dropped and
// retried while a service (projector_child) runs them, and after it stopped.
#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "process_util.h"
#include "rill/store.h"
#include "test_util.h"
#include "tool_util.h"

namespace rill::testing {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;

constexpr absl::Duration kLong = absl::Seconds(60);

TEST(ToolProjectionTest, TailSeesAppendsOfOtherProcessesAndStopsOnCtrlC) {
  TempDir dir;
  const std::string store = dir.Sub("s");
  ASSERT_EQ(RunTool({"append", store, "first", "--type", "A", "--data", "{\"n\":1}"}).exit_code, 0);
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ChildProcess> tail,
      ChildProcess::Start(ToolBinary(), {"tail", store, "--from", "1", "--json"},
                          dir.Sub("tail.err")));
  RILL_ASSERT_OK_AND_ASSIGN(std::string line, tail->ReadLine(kLong));
  EXPECT_EQ(Json::parse(line)["stream"], "first");
  // Live now: appends by two other processes arrive in order.
  ASSERT_EQ(RunTool({"append", store, "second", "--type", "B", "--data", "{\"n\":2}"}).exit_code,
            0);
  ASSERT_EQ(RunTool({"append", store, "other", "--type", "C", "--data", "{\"n\":3}"}).exit_code, 0);
  RILL_ASSERT_OK_AND_ASSIGN(line, tail->ReadLine(kLong));
  Json second = Json::parse(line);
  EXPECT_EQ(second["stream"], "second");
  EXPECT_EQ(second["position"], 2);
  EXPECT_EQ(second["data"]["n"], 2);
  RILL_ASSERT_OK_AND_ASSIGN(line, tail->ReadLine(kLong));
  EXPECT_EQ(Json::parse(line)["position"], 3);
  tail->Kill(SIGINT);
  const int status = tail->Wait();
  EXPECT_TRUE(ExitedWithCode(status, 0)) << DescribeWaitStatus(status);

  // Filters: only type C, from the start.
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ChildProcess> typed,
      ChildProcess::Start(ToolBinary(), {"tail", store, "--from", "1", "--type", "C", "--json"},
                          dir.Sub("typed.err")));
  RILL_ASSERT_OK_AND_ASSIGN(line, typed->ReadLine(kLong));
  EXPECT_EQ(Json::parse(line)["type"], "C");
  typed->Kill(SIGTERM);
  EXPECT_TRUE(ExitedWithCode(typed->Wait(), 0));
}

// The recorded status of `name`, as `rill projections --json` prints it.
Json StatusOf(const std::string& store, const std::string& name) {
  ToolRun r = RunTool({"projections", store, "--json"});
  if (r.exit_code != 0) return Json();
  const Json all = Json::parse(r.out);
  for (const Json& p : all["projections"]) {
    if (p["name"] == name) return p;
  }
  return Json();
}

void AppendEvents(const std::string& store, int n) {
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> s, Store::Open(store));
  for (int i = 0; i < n; ++i) {
    RILL_ASSERT_OK(s->Append(absl::StrCat(i % 3 == 0 ? "acct-" : "misc-", i % 5),
                             ExpectedVersion::Any(),
                             {MakeEvent(i % 2 == 0 ? "Opened" : "Closed", i)})
                       .status());
  }
}

TEST(ToolProjectionTest, ProjectionCommandsNextToARunningServiceAndAfterIt) {
  TempDir dir;
  const std::string store = dir.Sub("s");
  const std::string violations = dir.Sub("violations.txt");
  AppendEvents(store, 60);
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ChildProcess> service,
      ChildProcess::Start("projector_child",
                          {"dir=" + store, "mode=run", "set=crash", "violations=" + violations},
                          dir.Sub("service.err")));
  RILL_ASSERT_OK_AND_ASSIGN(std::string ready, service->ReadLine(kLong));
  ASSERT_EQ(ready, "ready");
  ASSERT_TRUE(WaitUntil(
      [&] {
        Json st = StatusOf(store, "ledger");
        return !st.is_null() && st["checkpoint"] == 60 && st["state"] == "caught up";
      },
      kLong))
      << RunTool({"projections", store, "--json"}).Describe();
  ToolRun table = RunTool({"projections", store});
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_THAT(table.out, HasSubstr("ledger"));
  EXPECT_THAT(table.out, HasSubstr("caught up"));
  ToolRun info = RunTool({"info", store, "--json"});
  ASSERT_EQ(info.exit_code, 0);
  EXPECT_EQ(Json::parse(info.out)["projections"].size(), 3u);

  // Rebuild through the running service: the tool waits for the swap.
  const uint64_t gen0 = StatusOf(store, "ledger")["generation"].get<uint64_t>();
  ToolRun rebuild = RunTool({"projections", "rebuild", store, "ledger", "--timeout", "60"});
  ASSERT_EQ(rebuild.exit_code, 0) << rebuild.Describe();
  EXPECT_THAT(rebuild.out, HasSubstr("asked the running service"));
  EXPECT_THAT(rebuild.out, HasSubstr("rebuilt \"ledger\""));
  Json after = StatusOf(store, "ledger");
  EXPECT_NE(after["generation"].get<uint64_t>(), gen0);
  EXPECT_EQ(after["checkpoint"], 60);

  // Reset needs the projection stopped.
  ToolRun reset_running = RunTool({"projections", "reset", store, "ledger"});
  EXPECT_EQ(reset_running.exit_code, 1) << reset_running.Describe();
  EXPECT_THAT(reset_running.err, HasSubstr("running in another process"));
  // Retry through the service: its code still fails on the poison event, so
  // the event stays parked with one more attempt (the plugin is not used).
  ToolRun retry_running =
      RunTool({"projections", "retry", store, "parking", "26", "--plugin", RILL_TOOL_PLUGIN});
  EXPECT_EQ(retry_running.exit_code, 1) << retry_running.Describe();
  EXPECT_THAT(retry_running.out, HasSubstr("asked the running service"));
  EXPECT_THAT(retry_running.out, HasSubstr("retried 0 of 1 parked event"));
  EXPECT_THAT(retry_running.err, HasSubstr("poison at position 26"));

  // Dead letters: every 13th position is poison for "parking".
  ToolRun parked = RunTool({"projections", "parked", store, "parking", "--json"});
  ASSERT_EQ(parked.exit_code, 0) << parked.Describe();
  std::vector<uint64_t> positions;
  const Json parked_json = Json::parse(parked.out);
  for (const Json& p : parked_json["parked"]) {
    positions.push_back(p["position"].get<uint64_t>());
    EXPECT_THAT(p["error"].get<std::string>(), HasSubstr("poison"));
    EXPECT_EQ(p["attempts"], p["position"] == 26 ? 3 : 2) << p;  // 26 was retried once more
  }
  EXPECT_EQ(positions, (std::vector<uint64_t>{13, 26, 39, 52}));
  EXPECT_EQ(RunTool({"projections", "drop", store, "parking", "13"}).exit_code, 0);
  EXPECT_EQ(RunTool({"projections", "drop", store, "parking", "14"}).exit_code, 5);
  EXPECT_EQ(RunTool({"projections", "drop", store, "parking"}).exit_code, 2);
  EXPECT_EQ(RunTool({"projections", "parked", store, "nope"}).exit_code, 5);
  EXPECT_EQ(StatusOf(store, "parking")["parked"], 3);
  EXPECT_EQ(RunTool({"projections", "retry", store, "parking", "13"}).exit_code, 5);

  service->CloseStdin();
  EXPECT_TRUE(ExitedWithCode(service->Wait(), 0)) << ReadFileOrEmpty(dir.Sub("service.err"));
  EXPECT_EQ(ReadFileOrEmpty(violations), "");
  EXPECT_EQ(StatusOf(store, "ledger")["state"], "stopped");
  EXPECT_EQ(RunTool({"projections", "retry", store, "parking", "--all"}).exit_code, 2)
      << "nobody runs it and no plugin";

  // Retry with the (now healed) code of the plugin: the event leaves.
  ToolOptions healed;
  healed.env = {"RILL_TEST_HEALED=1"};
  ToolRun retry = RunTool(
      {"projections", "retry", store, "parking", "39", "--plugin", RILL_TOOL_PLUGIN}, healed);
  ASSERT_EQ(retry.exit_code, 0) << retry.Describe();
  EXPECT_THAT(retry.out, HasSubstr("retried 1 of 1 parked event"));
  EXPECT_EQ(StatusOf(store, "parking")["parked"], 2);

  // Reset when stopped: gone from the catalog, then rebuilt in-process.
  ToolRun reset = RunTool({"projections", "reset", store, "ledger"});
  ASSERT_EQ(reset.exit_code, 0) << reset.Describe();
  EXPECT_TRUE(StatusOf(store, "ledger").is_null());
  EXPECT_EQ(RunTool({"projections", "reset", store, "ledger"}).exit_code, 5);
  ToolRun offline = RunTool(
      {"projections", "rebuild", store, "ledger", "--plugin", RILL_TOOL_PLUGIN, "--timeout", "60"});
  ASSERT_EQ(offline.exit_code, 0) << offline.Describe();
  EXPECT_THAT(offline.out, HasSubstr("in this process"));
  Json rebuilt = StatusOf(store, "ledger");
  EXPECT_EQ(rebuilt["checkpoint"], 60);
  EXPECT_EQ(rebuilt["state"], "stopped");

  // Without a runner or a plugin the request is recorded for later.
  ToolRun later = RunTool({"projections", "rebuild", store, "typed"});
  EXPECT_EQ(later.exit_code, 0) << later.Describe();
  EXPECT_THAT(later.out, HasSubstr("recorded a rebuild request"));
  EXPECT_EQ(RunTool({"projections", "rebuild", store, "nope"}).exit_code, 5);

  // The service started again picks the request up and swaps "typed". (No
  // invariant checker this time: the healed retry applied parking's poison
  // events, which its checker counts as a violation.)
  const uint64_t typed_gen = StatusOf(store, "typed")["generation"].get<uint64_t>();
  // This time the service runs healed code (RILL_TEST_HEALED, inherited).
  setenv("RILL_TEST_HEALED", "1", 1);
  RILL_ASSERT_OK_AND_ASSIGN(
      service, ChildProcess::Start("projector_child", {"dir=" + store, "mode=run", "set=crash"},
                                   dir.Sub("service2.err")));
  unsetenv("RILL_TEST_HEALED");
  RILL_ASSERT_OK_AND_ASSIGN(ready, service->ReadLine(kLong));
  ASSERT_EQ(ready, "ready");
  ToolRun retried = RunTool({"projections", "retry", store, "parking", "--all"});
  ASSERT_EQ(retried.exit_code, 0) << retried.Describe();
  EXPECT_THAT(retried.out, HasSubstr("retried 2 of 2 parked events"));
  EXPECT_EQ(StatusOf(store, "parking")["parked"], 0);
  EXPECT_TRUE(WaitUntil(
      [&] {
        Json st = StatusOf(store, "typed");
        return !st.is_null() && st["generation"].get<uint64_t>() != typed_gen &&
               st["state"] == "caught up";
      },
      kLong));
  service->CloseStdin();
  EXPECT_TRUE(ExitedWithCode(service->Wait(), 0));
  EXPECT_EQ(RunTool({"verify", store}).exit_code, 0);
}

}  // namespace
}  // namespace rill::testing
