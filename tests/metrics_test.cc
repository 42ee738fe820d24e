// Metrics (rill/metrics.h, AddProjectionMetrics): each figure counts what
// happened, and FormatPrometheus writes text that a real exposition-format
// parser (promtool, from Debian's prometheus package) accepts.
#include "rill/metrics.h"

#include <stdio.h>

#include <map>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "rill/projection.h"
#include "rill/projection_admin.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::MakeEvents;
using ::rill::testing::TempDir;

EventData Sized(size_t payload, size_t header) {
  EventData e;
  e.type = "Sized";
  e.payload = std::string(payload, 'p');
  if (header > 0)
    e.metadata.headers.emplace_back("h", std::string(header - 1, 'v'));  // "h" + value
  return e;
}

TEST(MetricsTest, CountsAppendsByOutcomeEventsBytesAndCommits) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path()));
  // Written: 3 requests, 6 events, 100+20+30 + 40+5 + 7 bytes.
  RILL_ASSERT_OK(
      store->Append("a", ExpectedVersion::NoStream(), {Sized(100, 20), Sized(30, 0)}).status());
  AppendOptions keyed;
  keyed.idempotency_key = "k1";
  RILL_ASSERT_OK(
      store->Append("b", ExpectedVersion::Any(), {Sized(40, 5), Sized(0, 0)}, keyed).status());
  RILL_ASSERT_OK(store
                     ->AppendMulti({StreamAppend{"c", ExpectedVersion::Any(), {Sized(7, 0)}},
                                    StreamAppend{"d", ExpectedVersion::Any(), {Sized(0, 0)}}})
                     .status());
  // Deduplicated: the keyed request again, twice.
  for (int i = 0; i < 2; ++i) {
    RILL_ASSERT_OK_AND_ASSIGN(AppendResult r, store->Append("b", ExpectedVersion::Any(),
                                                            {Sized(40, 5), Sized(0, 0)}, keyed));
    ASSERT_TRUE(r.deduplicated);
  }
  // Conflicts: a wrong expected version, three times.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(store->Append("a", ExpectedVersion::NoStream(), {Sized(1, 0)}).status().code(),
              absl::StatusCode::kAborted);
  }
  // Errors: the key with another request.
  EXPECT_EQ(store->Append("b", ExpectedVersion::Any(), {Sized(41, 0)}, keyed).status().code(),
            absl::StatusCode::kAlreadyExists);

  RILL_ASSERT_OK_AND_ASSIGN(const Metrics m, CollectMetrics(store.get()));
  EXPECT_TRUE(m.has_process_figures);
  EXPECT_EQ(m.requests_written, 3u);
  EXPECT_EQ(m.requests_deduplicated, 2u);
  EXPECT_EQ(m.requests_conflicted, 3u);
  EXPECT_EQ(m.requests_failed, 1u);
  EXPECT_EQ(m.events_appended, 6u);
  EXPECT_EQ(m.bytes_appended, 100u + 20 + 30 + 40 + 5 + 7);
  // One caller at a time: one commit per written request.
  EXPECT_EQ(m.commits, 3u);
  EXPECT_EQ(m.events_per_commit.count, 3u);
  EXPECT_DOUBLE_EQ(m.events_per_commit.sum, 6);
  EXPECT_EQ(m.events_per_commit.bucket_counts[1], 3u);  // (1, 2]: each commit wrote 2
  EXPECT_EQ(m.commit_seconds.count, 3u);
  EXPECT_GT(m.commit_seconds.sum, 0);
  // Every write transaction of the log since it opened: each of the 9
  // requests had its own (one caller at a time), whatever its outcome.
  EXPECT_EQ(m.commit_sync_seconds.count, 9u);
  // The store's own figures.
  EXPECT_EQ(m.store.head_position, 6u);
  EXPECT_EQ(m.store.event_count, 6u);
  EXPECT_EQ(m.store.stream_count, 4u);
  EXPECT_EQ(m.store.idempotency_keys, 1u);
  EXPECT_GT(m.store.used_bytes, 0u);
  EXPECT_EQ(m.subscriptions, 0u);
}

TEST(MetricsTest, ConcurrentAppendsShareCommitsAndTheHistogramsAddUp) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path()));
  constexpr int kThreads = 8, kEach = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        EXPECT_TRUE(
            store->Append(absl::StrCat("s", t), ExpectedVersion::Any(), MakeEvents(2)).ok());
      }
    });
  }
  for (std::thread& th : threads) th.join();
  RILL_ASSERT_OK_AND_ASSIGN(const Metrics m, CollectMetrics(store.get()));
  EXPECT_EQ(m.requests_written, uint64_t{kThreads * kEach});
  EXPECT_EQ(m.events_appended, uint64_t{2 * kThreads * kEach});
  EXPECT_LE(m.commits, uint64_t{kThreads * kEach});
  EXPECT_EQ(m.events_per_commit.count, m.commits);
  EXPECT_DOUBLE_EQ(m.events_per_commit.sum, 2.0 * kThreads * kEach);
  uint64_t in_buckets = 0;
  for (uint64_t c : m.commit_seconds.bucket_counts) in_buckets += c;
  EXPECT_EQ(in_buckets, m.commits);
  EXPECT_EQ(m.commit_seconds.bucket_counts.size(), m.commit_seconds.upper_bounds.size() + 1);
}

TEST(MetricsTest, SubscriptionsAndTheirLag) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path()));
  RILL_ASSERT_OK(store->Append("s", ExpectedVersion::Any(), MakeEvents(10)).status());
  absl::Notification release;
  std::atomic<int> seen{0};
  SubscriptionOptions options;
  options.batch_size = 1;
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subscription> sub,
                              store->Subscribe(0, options, [&](const EventView&) {
                                if (seen.fetch_add(1) == 3) release.WaitForNotification();
                                return absl::OkStatus();
                              }));
    while (seen.load() < 4) absl::SleepFor(absl::Milliseconds(1));
    // Held in its 4th event: it has delivered 3 of 10.
    RILL_ASSERT_OK_AND_ASSIGN(Metrics m, CollectMetrics(store.get()));
    EXPECT_EQ(m.subscriptions, 1u);
    EXPECT_EQ(m.subscription_max_lag, 7u);
    release.Notify();
    for (int i = 0; i < 2000 && sub->position() < 10; ++i) absl::SleepFor(absl::Milliseconds(1));
    RILL_ASSERT_OK_AND_ASSIGN(m, CollectMetrics(store.get()));
    EXPECT_EQ(m.subscription_max_lag, 0u);
  }
  RILL_ASSERT_OK_AND_ASSIGN(const Metrics m, CollectMetrics(store.get()));
  EXPECT_EQ(m.subscriptions, 0u);
}

ProjectionDef CountingProjection(const std::string& name, bool fail_on_odd = false) {
  ProjectionDef def;
  def.name = name;
  def.tables = {"t"};
  def.error_policy = ErrorPolicy::kPark;
  def.max_attempts = 1;
  def.apply = [fail_on_odd](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    if (fail_on_odd && e.position() % 2 == 1) return absl::InternalError("odd");
    return txn.Put("t", absl::StrCat(e.position()), "1");
  };
  return def;
}

TEST(MetricsTest, ProjectionFiguresFromTheRunnerAndFromTheStore) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path()));
  RILL_ASSERT_OK(store->Append("s", ExpectedVersion::Any(), MakeEvents(10)).status());
  {
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ProjectionRunner> runner,
        ProjectionRunner::Start(store.get(),
                                {CountingProjection("all"), CountingProjection("odd.ones", true)}));
    RILL_ASSERT_OK(runner->WaitFor("all", 10, absl::Seconds(30)));
    RILL_ASSERT_OK(runner->WaitFor("odd.ones", 10, absl::Seconds(30)));
    RILL_ASSERT_OK_AND_ASSIGN(Metrics m, CollectMetrics(store.get()));
    RILL_ASSERT_OK(AddProjectionMetrics(runner.get(), &m));
    ASSERT_EQ(m.projections.size(), 2u);
    std::map<std::string, ProjectionMetrics> by_name;
    for (const ProjectionMetrics& p : m.projections) by_name[p.name] = p;
    const ProjectionMetrics& all = by_name["all"];
    EXPECT_TRUE(all.from_runner);
    EXPECT_EQ(all.checkpoint, 10u);
    EXPECT_EQ(all.lag_events, 0u);
    EXPECT_EQ(all.events_applied, 10u);
    EXPECT_EQ(all.errors, 0u);
    EXPECT_EQ(all.parked, 0u);
    const ProjectionMetrics& odd = by_name["odd.ones"];
    EXPECT_EQ(odd.checkpoint, 10u);
    EXPECT_EQ(odd.parked, 5u);  // positions 1, 3, 5, 7, 9
    EXPECT_EQ(odd.errors, 5u);
    const std::string text = FormatPrometheus(m);
    EXPECT_NE(text.find("rill_projection_parked_events{projection=\"odd.ones\"} 5\n"),
              std::string::npos)
        << text;
  }
  // From the store's files, as another process sees them: no runner figures.
  RILL_ASSERT_OK(store->Append("s", ExpectedVersion::Any(), MakeEvents(4)).status());
  RILL_ASSERT_OK_AND_ASSIGN(Metrics m, CollectMetrics(store.get()));
  RILL_ASSERT_OK(AddProjectionMetrics(store.get(), &m));
  ASSERT_EQ(m.projections.size(), 2u);
  for (const ProjectionMetrics& p : m.projections) {
    EXPECT_FALSE(p.from_runner);
    EXPECT_EQ(p.checkpoint, 10u) << p.name;
    EXPECT_EQ(p.lag_events, 4u) << p.name;
    EXPECT_EQ(p.state, "stopped") << p.name;
  }
  const std::string text = FormatPrometheus(m);
  EXPECT_EQ(text.find("rill_projection_events_applied_total"), std::string::npos);
  EXPECT_NE(text.find("rill_projection_lag_events{projection=\"all\"} 4"), std::string::npos);
}

// The text, checked line by line: every sample's family announced by HELP
// and TYPE first, values numbers, histogram buckets cumulative and ending
// in +Inf = _count.
void CheckExposition(const std::string& text) {
  static const std::regex kSample(R"(^([a-z_]+)(\{(.*)\})? (-?[0-9.e+]+)$)");
  std::set<std::string> announced;
  std::map<std::string, std::string> types;
  std::string last_bucket_family;
  double last_bucket = -1;
  std::map<std::string, double> inf, count;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits(' ', 3));
    if (line.substr(0, 7) == "# HELP ") {
      ASSERT_GE(f.size(), 4u) << line;
      ASSERT_TRUE(announced.insert(f[2]).second) << "family announced twice: " << line;
      continue;
    }
    if (line.substr(0, 7) == "# TYPE ") {
      ASSERT_EQ(f.size(), 4u) << line;
      ASSERT_TRUE(f[3] == "gauge" || f[3] == "counter" || f[3] == "histogram") << line;
      types[f[2]] = f[3];
      continue;
    }
    std::smatch m;
    const std::string l(line);
    ASSERT_TRUE(std::regex_match(l, m, kSample)) << l;
    std::string family = m[1];
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string s(suffix);
      if (!types.count(family) && family.size() > s.size() &&
          family.compare(family.size() - s.size(), s.size(), s) == 0) {
        family = family.substr(0, family.size() - s.size());
      }
    }
    ASSERT_TRUE(announced.count(family) && types.count(family)) << "unannounced: " << l;
    double value = 0;
    ASSERT_TRUE(absl::SimpleAtod(m[4].str(), &value)) << l;
    if (types[family] == "histogram") {
      if (m[1] == family + "_bucket") {
        if (family != last_bucket_family) last_bucket = -1;
        ASSERT_GE(value, last_bucket) << "buckets not cumulative: " << l;
        last_bucket = value;
        last_bucket_family = family;
        if (m[3] == "le=\"+Inf\"") inf[family] = value;
      } else if (m[1] == family + "_count") {
        count[family] = value;
      }
    }
  }
  for (const auto& [family, type] : types) {
    if (type == "histogram") {
      EXPECT_EQ(inf[family], count[family]) << family;
    }
  }
}

// promtool check metrics (Debian's prometheus package, .ci/install-deps).
std::string Promtool(const std::string& text) {
  TempDir dir;
  const std::string in = dir.Sub("metrics.txt");
  FILE* f = fopen(in.c_str(), "w");
  fputs(text.c_str(), f);
  fclose(f);
  return ::rill::testing::RunShell("promtool check metrics < " + in);
}

TEST(MetricsTest, PrometheusTextIsWellFormedAndPromtoolAcceptsIt) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path()));
  RILL_ASSERT_OK(store->Append("s", ExpectedVersion::Any(), MakeEvents(5)).status());
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {CountingProjection("p", false)}));
  RILL_ASSERT_OK(runner->WaitFor("p", 5, absl::Seconds(30)));
  RILL_ASSERT_OK_AND_ASSIGN(Metrics m, CollectMetrics(store.get()));
  RILL_ASSERT_OK(AddProjectionMetrics(runner.get(), &m));
  const std::string text = FormatPrometheus(m);
  CheckExposition(text);
  for (const char* series :
       {"rill_head_position 5", "rill_append_requests_total{outcome=\"written\"} 1",
        "rill_events_appended_total 5", "rill_commit_seconds_count 1",
        "rill_events_per_commit_bucket{le=\"4\"} 0", "rill_events_per_commit_bucket{le=\"8\"} 1",
        "rill_projection_events_applied_total{projection=\"p\"} 5",
        "rill_projection_checkpoint_position{projection=\"p\"} 5"}) {
    EXPECT_NE(text.find(std::string(series) + "\n"), std::string::npos) << series << "\n" << text;
  }
  EXPECT_NE(text.find("rill_projection_state{projection=\"p\",state=\""), std::string::npos);
  const std::string promtool = Promtool(text);
  EXPECT_NE(promtool.find("exit=0"), std::string::npos) << promtool << "\n" << text;
  // Label values are escaped (a name rill itself would refuse, made up).
  Metrics odd;
  odd.projections.push_back(ProjectionMetrics{"a \"quoted\\name\"\nline", "running"});
  const std::string escaped = FormatPrometheus(odd);
  CheckExposition(escaped);
  EXPECT_NE(escaped.find("{projection=\"a \\\"quoted\\\\name\\\"\\nline\"}"), std::string::npos)
      << escaped;
  EXPECT_NE(Promtool(escaped).find("exit=0"), std::string::npos) << Promtool(escaped);
  // And it fails on what is not the format (the check can fail).
  EXPECT_EQ(Promtool("rill_x{ 1\n").find("exit=0"), std::string::npos);
}

}  // namespace
}  // namespace rill
