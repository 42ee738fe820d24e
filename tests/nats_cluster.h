// A real NATS JetStream cluster for tests: N nats-server processes on
// 127.0.0.1 (server names n1..nN), each with its own config file, JetStream
// store directory and log file under one directory. Tests of the replicated
// store use it to kill, restart and pause servers under a running store.
//
//   RILL_ASSERT_OK_AND_ASSIGN(auto cluster, NatsCluster::Start());
//   ... connect to cluster->url_list() ...
//   RILL_ASSERT_OK(cluster->Kill(leader));
//
// Servers are child processes of the test that die with it: each is started
// with PR_SET_PDEATHSIG(SIGKILL), which fires when the *thread* that started
// it exits, so start and restart servers from the test's main thread (or a
// thread that outlives the cluster). Not thread-safe: one thread drives it.
//
// Needs /usr/sbin/nats-server (2.9). Leader elections take seconds (the Raft
// election timeout of nats-server 2.9 is 4-9 s and cannot be configured), so
// budget about 10 s for each leader a test kills.
#ifndef RILL_TESTS_NATS_CLUSTER_H_
#define RILL_TESTS_NATS_CLUSTER_H_

#include <nats/nats.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "test_util.h"

namespace rill::testing {

// The nats-server binary the cluster runs.
inline constexpr char kNatsServerBinary[] = "/usr/sbin/nats-server";

// Owning handles for the libnats objects tests use (destroying them is all
// the cleanup a test does: nats_Close() would tear the library down for the
// whole process).
struct NatsDeleter {
  void operator()(natsConnection* nc) const { natsConnection_Destroy(nc); }
  void operator()(natsOptions* opts) const { natsOptions_Destroy(opts); }
  void operator()(jsCtx* js) const { jsCtx_Destroy(js); }
  void operator()(jsStreamInfo* si) const { jsStreamInfo_Destroy(si); }
  void operator()(jsAccountInfo* ai) const { jsAccountInfo_Destroy(ai); }
  void operator()(jsPubAck* pa) const { jsPubAck_Destroy(pa); }
};
using NatsConnectionPtr = std::unique_ptr<natsConnection, NatsDeleter>;
using JsCtxPtr = std::unique_ptr<jsCtx, NatsDeleter>;
using JsStreamInfoPtr = std::unique_ptr<jsStreamInfo, NatsDeleter>;
using JsPubAckPtr = std::unique_ptr<jsPubAck, NatsDeleter>;

// A connection and its JetStream context (declared in this order so that the
// context is destroyed first).
struct JetStreamClient {
  NatsConnectionPtr conn;
  JsCtxPtr js;
};

// Connects to any of `urls` without reconnecting (a test that wants another
// server connects again). `timeout` bounds the connect and is the default
// wait of every JetStream request through the context.
absl::StatusOr<JetStreamClient> ConnectJetStream(const std::vector<std::string>& urls,
                                                 absl::Duration timeout = absl::Seconds(2));

// A libnats failure as a Status: NATS_TIMEOUT -> DeadlineExceeded, no server
// or no responders -> Unavailable, anything else -> Internal. The message
// names `what`, the natsStatus, the JetStream error code (when not 0) and
// libnats' last error text.
absl::Status NatsError(absl::string_view what, natsStatus s, jsErrCode js_err = jsErrCode(0));

class NatsCluster {
 public:
  // Starts `servers` servers on free ports and waits (up to 20 s) until
  // JetStream has a meta leader that every server reaches and a stream with
  // `servers` replicas can be created.
  // `base_dir` holds the configs, store directories (base_dir/nK) and logs
  // (base_dir/nK.log) and is kept afterwards; empty: a fresh temporary
  // directory, removed by the destructor. DeadlineExceeded (with the tail of
  // every server's log) when the cluster does not form in time.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<NatsCluster>> Start(
      int servers = 3, std::string base_dir = "");

  // SIGKILLs and reaps every server; removes the temporary directory.
  ~NatsCluster();
  NatsCluster(const NatsCluster&) = delete;
  NatsCluster& operator=(const NatsCluster&) = delete;

  // Servers are numbered 0..size()-1; server i is named n{i+1}.
  int size() const { return static_cast<int>(servers_.size()); }
  std::string url(int i) const;  // "nats://127.0.0.1:PORT"
  std::vector<std::string> urls() const;
  // Every url, comma-separated (the form `rill replicate init` takes).
  std::string url_list() const;
  // The urls of the servers that are running and not paused.
  std::vector<std::string> live_urls() const;
  std::string server_name(int i) const;
  // -1 while server i is killed.
  pid_t pid(int i) const;
  std::string log_path(int i) const;
  const std::string& dir() const { return dir_; }

  // SIGKILL + reap. FailedPrecondition when server i is not running.
  [[nodiscard]] absl::Status Kill(int i);
  // Starts killed server i again with the same config, ports and store
  // directory and waits (up to 20 s) until it accepts client connections.
  // It may still be catching up on its streams then, and be no candidate for
  // new streams' replicas yet.
  [[nodiscard]] absl::Status Restart(int i);
  // SIGSTOP / SIGCONT: a paused server keeps its sockets open but answers
  // nothing, which its peers see as a partition. A client connected to it
  // hangs until its own timeouts fire.
  [[nodiscard]] absl::Status Pause(int i);
  [[nodiscard]] absl::Status Resume(int i);
  bool running(int i) const { return servers_[i].pid > 0; }
  bool paused(int i) const { return servers_[i].paused; }

  // The index of the server that the cluster reports as the leader of
  // `stream` (asked through the live servers; the answer may be stale right
  // after the leader died). Unavailable when the stream has no leader.
  [[nodiscard]] absl::StatusOr<int> StreamLeader(const std::string& stream);
  // Waits until `stream` has a leader that is running and not paused and
  // stores its index in `*leader` (may be null). DeadlineExceeded after
  // `timeout`, with the last error seen.
  [[nodiscard]] absl::Status WaitForStreamLeader(const std::string& stream, absl::Duration timeout,
                                                 int* leader);

  // Creates stream `stream` on file storage, capturing `subject`, with
  // `replicas` replicas.
  [[nodiscard]] absl::Status CreateStream(const std::string& stream, const std::string& subject,
                                          int replicas);

  // The last `lines` lines of every server's log, each under a header line.
  std::string LogTails(int lines = 15) const;

 private:
  struct Server {
    std::string name;  // n1, n2, ...
    int client_port = 0;
    int cluster_port = 0;
    std::string config_path;
    std::string store_dir;
    std::string log_path;
    pid_t pid = -1;
    bool paused = false;
  };

  NatsCluster() = default;

  absl::Status WriteConfig(int i) const;
  absl::Status Spawn(int i);
  // Reaps server i if it has exited; then FailedPrecondition with its wait
  // status and log tail.
  absl::Status CheckAlive(int i);
  absl::Status WaitForClientPort(int i, absl::Time deadline);
  absl::Status WaitForMetaLeader(absl::Time deadline);
  absl::Status WaitForPlacement(absl::Time deadline);
  absl::Status CheckIndex(int i) const;

  std::unique_ptr<TempDir> temp_dir_;  // null when the caller gave base_dir
  std::string dir_;
  std::string cluster_name_;
  std::vector<Server> servers_;
};

}  // namespace rill::testing

#endif  // RILL_TESTS_NATS_CLUSTER_H_
