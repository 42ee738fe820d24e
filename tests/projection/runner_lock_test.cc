// One runner per projection: a second runner for a projection fails, in
// this process and in another one, until the holder stops.
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "projection_test_util.h"
#include "projector_defs.h"
#include "rill/projection.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill::testing {
namespace {

TEST(ProjectionTest, SecondRunnerForTheSameProjectionFails) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(store_dir, TestStoreOptions()));
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> first,
                            ProjectionRunner::Start(store.get(), {LedgerProjection()}));
  // In this process.
  absl::StatusOr<std::unique_ptr<ProjectionRunner>> second =
      ProjectionRunner::Start(store.get(), {TypedProjection(), LedgerProjection()});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  // Another projection may run in another runner.
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> typed,
                            ProjectionRunner::Start(store.get(), {TypedProjection()}));
  // In another process; the failed Start above did not release the lock.
  {
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ChildProcess> child,
        ChildProcess::Start("projector_child", {"mode=run", "set=ledger", "dir=" + store_dir},
                            dir.Sub("second.stderr")));
    RILL_ASSERT_OK_AND_ASSIGN(const std::string line, child->ReadLine(kLong));
    EXPECT_TRUE(absl::StartsWith(
        line, absl::StrCat("start_failed ", static_cast<int>(absl::StatusCode::kFailedPrecondition),
                           " ")))
        << line;
    EXPECT_TRUE(testing::ExitedWithCode(child->Wait(), 5)) << child->Stderr();
  }
  // The first runner still works.
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, AppendMixed(*store, 10));
  RILL_ASSERT_OK(first->WaitFor(kLedger, head, kLong));
  first.reset();

  // Now the other process holds it.
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ChildProcess> child,
      ChildProcess::Start("projector_child", {"mode=run", "set=ledger", "dir=" + store_dir},
                          dir.Sub("holder.stderr")));
  RILL_ASSERT_OK_AND_ASSIGN(const std::string line, child->ReadLine(kLong));
  ASSERT_EQ(line, "ready") << child->Stderr();
  second = ProjectionRunner::Start(store.get(), {LedgerProjection()});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  child->CloseStdin();  // the child stops its runner and exits
  const int wait_status = child->Wait();
  EXPECT_TRUE(testing::ExitedWithCode(wait_status, 0)) << DescribeWaitStatus(wait_status) << "\n"
                                                       << child->Stderr();
  RILL_ASSERT_OK_AND_ASSIGN(first, ProjectionRunner::Start(store.get(), {LedgerProjection()}));
  RILL_ASSERT_OK(first->WaitFor(kLedger, head, kLong));
}

}  // namespace
}  // namespace rill::testing
