// A first end-to-end pass over the projection runner: counts per type, a
// read-your-writes wait, a parked event and a blue/green rebuild.
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "rill/projection.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using testing::MakeEvent;
using testing::TempDir;

ProjectionDef CountByType(uint32_t version = 1) {
  ProjectionDef def;
  def.name = "count_by_type";
  def.version = version;
  def.tables = {"counts"};
  def.apply = [](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    absl::StatusOr<std::optional<std::string>> old = txn.Get("counts", e.type());
    if (!old.ok()) return old.status();
    int n = old->has_value() ? std::stoi(**old) : 0;
    return txn.Put("counts", e.type(), std::to_string(n + 1));
  };
  return def;
}

int Count(ProjectionRunner& runner, const std::string& type) {
  auto view = runner.View("count_by_type");
  EXPECT_TRUE(view.ok()) << view.status();
  auto v = (*view)->Get("counts", type);
  EXPECT_TRUE(v.ok()) << v.status();
  return v->has_value() ? std::stoi(**v) : 0;
}

TEST(ProjectionSmokeTest, CountsWaitRebuild) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path()));
  for (int i = 0; i < 100; ++i) {
    RILL_ASSERT_OK(store
                       ->Append("s-" + std::to_string(i % 7), ExpectedVersion::Any(),
                                {MakeEvent(i % 2 ? "Odd" : "Even", i)})
                       .status());
  }
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                              ProjectionRunner::Start(store.get(), {CountByType()}));
    RILL_ASSERT_OK(runner->WaitFor("count_by_type", 100, absl::Seconds(10)));
    EXPECT_EQ(Count(*runner, "Odd"), 50);
    EXPECT_EQ(Count(*runner, "Even"), 50);
    RILL_ASSERT_OK_AND_ASSIGN(AppendResult r,
                              store->Append("x", ExpectedVersion::Any(), {MakeEvent("Odd", 1)}));
    RILL_ASSERT_OK(runner->WaitFor("count_by_type", r.last_position, absl::Seconds(10)));
    EXPECT_EQ(Count(*runner, "Odd"), 51);
    RILL_ASSERT_OK(runner->Rebuild("count_by_type"));
    // The rebuild swaps in a model equal to the old one.
    for (int i = 0; i < 200; ++i) {
      RILL_ASSERT_OK_AND_ASSIGN(ProjectionStatus st, runner->Status("count_by_type"));
      if (st.state != ProjectionState::kRebuilding && st.rebuild_version == 0 && i > 2) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    EXPECT_EQ(Count(*runner, "Odd"), 51);
  }
  {
    // Version bump: rebuilt blue/green on start.
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                              ProjectionRunner::Start(store.get(), {CountByType(2)}));
    // The old model keeps serving (it already reflects 101) until the new
    // version has caught up and is swapped in.
    ProjectionStatus st;
    for (int i = 0; i < 500 && st.version != 2; ++i) {
      RILL_ASSERT_OK_AND_ASSIGN(st, runner->Status("count_by_type"));
      if (st.version != 2) absl::SleepFor(absl::Milliseconds(10));
    }
    EXPECT_EQ(st.version, 2u);
    EXPECT_EQ(Count(*runner, "Odd"), 51);
    EXPECT_EQ(Count(*runner, "Even"), 50);
  }
}

TEST(ProjectionSmokeTest, ParkAndRetry) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path()));
  std::atomic<bool> broken{true};
  ProjectionDef def = CountByType();
  def.error_policy = ErrorPolicy::kPark;
  def.retry_backoff = absl::Milliseconds(1);
  auto inner = def.apply;
  def.apply = [&broken, inner](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    if (e.type() == "Poison" && broken.load()) return absl::InternalError("cannot digest");
    return inner(e, txn);
  };
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {def}));
  RILL_ASSERT_OK(store
                     ->Append("a", ExpectedVersion::Any(),
                              {MakeEvent("Odd", 1), MakeEvent("Poison", 2), MakeEvent("Odd", 3)})
                     .status());
  RILL_ASSERT_OK(runner->WaitFor("count_by_type", 3, absl::Seconds(10)));
  EXPECT_EQ(Count(*runner, "Odd"), 2);
  EXPECT_EQ(Count(*runner, "Poison"), 0);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<ParkedEvent> parked, runner->ListParked("count_by_type"));
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_EQ(parked[0].position, 2u);
  EXPECT_EQ(parked[0].attempts, 3);
  broken = false;
  RILL_ASSERT_OK(runner->RetryParked("count_by_type", 2));
  EXPECT_EQ(Count(*runner, "Poison"), 1);
  RILL_ASSERT_OK_AND_ASSIGN(parked, runner->ListParked("count_by_type"));
  EXPECT_TRUE(parked.empty());
}

}  // namespace
}  // namespace rill
