#include "nats_cluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "process_util.h"

namespace rill::testing {
namespace {

constexpr absl::Duration kStartTimeout = absl::Seconds(20);
constexpr absl::Duration kPollInterval = absl::Milliseconds(50);

// Ports come from below the kernel's ephemeral range: a port picked there
// could be taken, while its server is killed, by any outgoing connection on
// the machine (the surviving servers' own route reconnects included), and
// Restart needs the same port again.
absl::StatusOr<std::vector<int>> PickFreePorts(int count) {
  int ephemeral_low = 32768;
  {
    std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
    int low = 0;
    if (in >> low && low > 0) ephemeral_low = low;
  }
  constexpr int kLowest = 10000;
  if (ephemeral_low - kLowest < 1000) {
    return absl::FailedPreconditionError(
        absl::StrCat("ephemeral port range starts at ", ephemeral_low, ": no room below it"));
  }
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> dist(kLowest, ephemeral_low - 1);
  // Every socket stays bound until all ports are picked, so they differ.
  std::vector<int> fds;
  std::vector<int> ports;
  for (int attempt = 0; attempt < 1000 && static_cast<int>(ports.size()) < count; ++attempt) {
    const int port = dist(rng);
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // No SO_REUSEADDR: a port with a socket in TIME_WAIT is skipped too.
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      fds.push_back(fd);
      ports.push_back(port);
    } else {
      close(fd);
    }
  }
  for (int fd : fds) close(fd);
  if (static_cast<int>(ports.size()) < count) {
    return absl::ResourceExhaustedError(
        absl::StrCat("found only ", ports.size(), " of ", count, " free ports on 127.0.0.1"));
  }
  return ports;
}

std::string TailOfFile(const std::string& path, int lines) {
  const std::string text = ReadFileOrEmpty(path);
  std::vector<absl::string_view> all = absl::StrSplit(text, '\n', absl::SkipEmpty());
  const size_t from = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0;
  return absl::StrJoin(all.begin() + from, all.end(), "\n");
}

}  // namespace

absl::Status NatsError(absl::string_view what, natsStatus s, jsErrCode js_err) {
  std::string msg = absl::StrCat(what, ": ", natsStatus_GetText(s), " (natsStatus ", s, ")");
  if (js_err != 0) absl::StrAppend(&msg, ", jsErrCode ", static_cast<int>(js_err));
  natsStatus last = NATS_OK;
  const char* last_text = nats_GetLastError(&last);
  if (last_text != nullptr && *last_text != '\0') absl::StrAppend(&msg, ": ", last_text);
  switch (s) {
    case NATS_TIMEOUT:
      return absl::DeadlineExceededError(msg);
    case NATS_NO_SERVER:
    case NATS_NO_RESPONDERS:
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_STALE_CONNECTION:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::StatusOr<JetStreamClient> ConnectJetStream(const std::vector<std::string>& urls,
                                                 absl::Duration timeout) {
  if (urls.empty()) return absl::UnavailableError("no server to connect to");
  natsOptions* raw_opts = nullptr;
  natsStatus s = natsOptions_Create(&raw_opts);
  if (s != NATS_OK) return NatsError("natsOptions_Create", s);
  std::unique_ptr<natsOptions, NatsDeleter> opts(raw_opts);
  std::vector<const char*> servers;
  for (const std::string& u : urls) servers.push_back(u.c_str());
  s = natsOptions_SetServers(opts.get(), servers.data(), static_cast<int>(servers.size()));
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts.get(), absl::ToInt64Milliseconds(timeout));
  // Short-lived connections: a test that loses its server connects again,
  // which keeps what a test does after a Kill explicit.
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(opts.get(), false);
  if (s != NATS_OK) return NatsError("natsOptions", s);

  JetStreamClient client;
  natsConnection* nc = nullptr;
  s = natsConnection_Connect(&nc, opts.get());
  if (s != NATS_OK) return NatsError(absl::StrCat("connect to ", absl::StrJoin(urls, ",")), s);
  client.conn.reset(nc);
  jsOptions js_opts;
  jsOptions_Init(&js_opts);
  js_opts.Wait = absl::ToInt64Milliseconds(timeout);
  jsCtx* js = nullptr;
  s = natsConnection_JetStream(&js, nc, &js_opts);
  if (s != NATS_OK) return NatsError("natsConnection_JetStream", s);
  client.js.reset(js);
  return client;
}

absl::StatusOr<std::unique_ptr<NatsCluster>> NatsCluster::Start(int servers, std::string base_dir) {
  if (servers < 1) return absl::InvalidArgumentError("a cluster needs at least one server");
  if (access(kNatsServerBinary, X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(kNatsServerBinary, " is not installed"));
  }
  // Another process can take a picked port before nats-server binds it:
  // then the whole start is tried again on other ports.
  constexpr int kAttempts = 3;
  absl::Status last;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    auto cluster = std::unique_ptr<NatsCluster>(new NatsCluster());
    if (base_dir.empty()) {
      cluster->temp_dir_ = std::make_unique<TempDir>();
      cluster->dir_ = cluster->temp_dir_->path();
    } else {
      std::error_code ec;
      std::filesystem::create_directories(base_dir, ec);
      if (ec) return absl::InternalError(absl::StrCat("mkdir ", base_dir, ": ", ec.message()));
      cluster->dir_ = base_dir;
    }
    cluster->cluster_name_ = "rill-test";
    absl::StatusOr<std::vector<int>> ports = PickFreePorts(2 * servers);
    if (!ports.ok()) return ports.status();
    for (int i = 0; i < servers; ++i) {
      Server srv;
      srv.name = absl::StrCat("n", i + 1);
      srv.client_port = (*ports)[2 * i];
      srv.cluster_port = (*ports)[2 * i + 1];
      srv.config_path = absl::StrCat(cluster->dir_, "/", srv.name, ".conf");
      srv.store_dir = absl::StrCat(cluster->dir_, "/", srv.name);
      srv.log_path = absl::StrCat(cluster->dir_, "/", srv.name, ".log");
      cluster->servers_.push_back(std::move(srv));
    }
    const absl::Time deadline = absl::Now() + kStartTimeout;
    last = absl::OkStatus();
    for (int i = 0; i < servers && last.ok(); ++i) {
      std::error_code ec;
      std::filesystem::remove(cluster->servers_[i].log_path, ec);  // a log per start
      last = cluster->WriteConfig(i);
      if (last.ok()) last = cluster->Spawn(i);
    }
    if (last.ok()) last = cluster->WaitForMetaLeader(deadline);
    if (last.ok()) last = cluster->WaitForPlacement(deadline);
    if (last.ok()) return cluster;
    if (last.message().find("address already in use") == std::string::npos) return last;
    // Destroying this attempt's cluster kills the servers it started (in a
    // given base_dir, their store directories stay for the next attempt).
  }
  return last;
}

NatsCluster::~NatsCluster() {
  for (Server& srv : servers_) {
    if (srv.pid > 0) kill(srv.pid, SIGKILL);
  }
  for (Server& srv : servers_) {
    if (srv.pid > 0) {
      while (waitpid(srv.pid, nullptr, 0) < 0 && errno == EINTR) {
      }
      srv.pid = -1;
    }
  }
  // temp_dir_'s destructor removes the directory, after the servers died.
}

std::string NatsCluster::url(int i) const {
  return absl::StrCat("nats://127.0.0.1:", servers_[i].client_port);
}

std::vector<std::string> NatsCluster::urls() const {
  std::vector<std::string> out;
  for (int i = 0; i < size(); ++i) out.push_back(url(i));
  return out;
}

std::string NatsCluster::url_list() const { return absl::StrJoin(urls(), ","); }

std::vector<std::string> NatsCluster::live_urls() const {
  std::vector<std::string> out;
  for (int i = 0; i < size(); ++i) {
    if (running(i) && !paused(i)) out.push_back(url(i));
  }
  return out;
}

std::string NatsCluster::server_name(int i) const { return servers_[i].name; }
pid_t NatsCluster::pid(int i) const { return servers_[i].pid; }
std::string NatsCluster::log_path(int i) const { return servers_[i].log_path; }

absl::Status NatsCluster::CheckIndex(int i) const {
  if (i < 0 || i >= size()) {
    return absl::InvalidArgumentError(absl::StrCat("no server ", i, " in a cluster of ", size()));
  }
  return absl::OkStatus();
}

absl::Status NatsCluster::WriteConfig(int i) const {
  const Server& srv = servers_[i];
  std::string routes;
  for (int j = 0; j < size(); ++j) {
    if (j == i) continue;
    absl::StrAppend(&routes, "    nats-route://127.0.0.1:", servers_[j].cluster_port, "\n");
  }
  // Small JetStream limits: tests write little, and several clusters may
  // share a machine. No monitoring port: nothing reads it.
  std::string config = absl::StrFormat(R"(server_name: %s
listen: 127.0.0.1:%d
jetstream {
  store_dir: "%s"
  max_memory_store: 64MB
  max_file_store: 1GB
}
)",
                                       srv.name, srv.client_port, srv.store_dir);
  // A lone server runs JetStream standalone: nats-server 2.9 refuses a
  // JetStream cluster without routes.
  if (size() > 1) {
    absl::StrAppendFormat(&config, R"(cluster {
  name: %s
  listen: 127.0.0.1:%d
  routes: [
%s  ]
}
)",
                          cluster_name_, srv.cluster_port, routes);
  }
  std::ofstream out(srv.config_path, std::ios::trunc);
  out << config;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", srv.config_path));
  return absl::OkStatus();
}

absl::Status NatsCluster::Spawn(int i) {
  Server& srv = servers_[i];
  // Everything the child needs is built before fork: after it, only
  // async-signal-safe calls (libnats' threads may hold locks).
  std::string binary = kNatsServerBinary;
  std::string config_flag = "-c";
  std::string config = srv.config_path;
  char* argv[] = {binary.data(), config_flag.data(), config.data(), nullptr};
  const char* log = srv.log_path.c_str();
  const pid_t parent = getpid();
  fflush(stdout);
  fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  if (pid == 0) {
    // Dies with the test: no orphan servers holding ports after a crash.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(125);
    const int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out < 0 || in < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) _exit(126);
    execv(argv[0], argv);
    _exit(127);
  }
  srv.pid = pid;
  srv.paused = false;
  return absl::OkStatus();
}

absl::Status NatsCluster::CheckAlive(int i) {
  Server& srv = servers_[i];
  if (srv.pid <= 0) return absl::FailedPreconditionError(absl::StrCat(srv.name, " is killed"));
  int status = 0;
  if (waitpid(srv.pid, &status, WNOHANG) != srv.pid) return absl::OkStatus();
  srv.pid = -1;
  return absl::FailedPreconditionError(absl::StrCat(srv.name, " ", DescribeWaitStatus(status),
                                                    "; its log ends:\n",
                                                    TailOfFile(srv.log_path, 15)));
}

absl::Status NatsCluster::WaitForClientPort(int i, absl::Time deadline) {
  absl::Status last;
  for (;;) {
    if (absl::Status alive = CheckAlive(i); !alive.ok()) return alive;
    absl::StatusOr<JetStreamClient> client = ConnectJetStream({url(i)}, absl::Milliseconds(500));
    if (client.ok()) return absl::OkStatus();
    last = client.status();
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          server_name(i), " accepts no client connection: ", last.message(), "\n", LogTails()));
    }
    absl::SleepFor(kPollInterval);
  }
}

// The meta leader answers account info requests in a cluster, so a request
// that succeeds through every server shows both that the meta group has a
// leader and that every server has a route to it.
absl::Status NatsCluster::WaitForMetaLeader(absl::Time deadline) {
  for (int i = 0; i < size(); ++i) {
    absl::Status last;
    for (;;) {
      for (int j = 0; j < size(); ++j) {
        if (absl::Status alive = CheckAlive(j); !alive.ok()) {
          return absl::Status(alive.code(), absl::StrCat(alive.message(), "\n", LogTails()));
        }
      }
      absl::StatusOr<JetStreamClient> client = ConnectJetStream({url(i)}, absl::Seconds(1));
      if (client.ok()) {
        jsAccountInfo* ai = nullptr;
        jsErrCode js_err = jsErrCode(0);
        const natsStatus s = js_GetAccountInfo(&ai, client->js.get(), nullptr, &js_err);
        std::unique_ptr<jsAccountInfo, NatsDeleter> owned(ai);
        if (s == NATS_OK) break;
        last = NatsError(absl::StrCat("account info through ", server_name(i)), s, js_err);
      } else {
        last = client.status();
      }
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("JetStream cluster not ready: ", last.message(), "\n", LogTails()));
      }
      absl::SleepFor(kPollInterval);
    }
  }
  return absl::OkStatus();
}

// A meta leader can be elected by two servers before the third has joined
// the meta group; until it has, creating an R=size() stream fails with "no
// suitable peers for placement" (JSClusterNoPeersErr). So a probe stream with
// every server as a replica is created (and deleted) until that works.
absl::Status NatsCluster::WaitForPlacement(absl::Time deadline) {
  constexpr char kProbe[] = "RILL_HARNESS_PROBE";
  absl::Status last;
  for (;;) {
    absl::StatusOr<JetStreamClient> client = ConnectJetStream(live_urls(), absl::Seconds(2));
    if (client.ok()) {
      jsStreamConfig cfg;
      jsStreamConfig_Init(&cfg);
      cfg.Name = kProbe;
      const char* subjects[] = {"rill.harness.probe"};
      cfg.Subjects = subjects;
      cfg.SubjectsLen = 1;
      cfg.Storage = js_MemoryStorage;
      cfg.Replicas = size();
      jsStreamInfo* raw = nullptr;
      jsErrCode js_err = jsErrCode(0);
      natsStatus s = js_AddStream(&raw, client->js.get(), &cfg, nullptr, &js_err);
      JsStreamInfoPtr si(raw);
      if (s == NATS_OK) {
        s = js_DeleteStream(client->js.get(), kProbe, nullptr, &js_err);
        if (s == NATS_OK) return absl::OkStatus();
        last = NatsError("delete probe stream", s, js_err);
      } else {
        last = NatsError(absl::StrCat("create probe stream with ", size(), " replicas"), s, js_err);
      }
    } else {
      last = client.status();
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "JetStream cannot place streams on every server: ", last.message(), "\n", LogTails()));
    }
    absl::SleepFor(kPollInterval);
  }
}

absl::Status NatsCluster::Kill(int i) {
  if (absl::Status s = CheckIndex(i); !s.ok()) return s;
  Server& srv = servers_[i];
  if (srv.pid <= 0) return absl::FailedPreconditionError(absl::StrCat(srv.name, " is killed"));
  kill(srv.pid, SIGKILL);
  while (waitpid(srv.pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  srv.pid = -1;
  srv.paused = false;
  return absl::OkStatus();
}

absl::Status NatsCluster::Restart(int i) {
  if (absl::Status s = CheckIndex(i); !s.ok()) return s;
  if (running(i)) {
    return absl::FailedPreconditionError(absl::StrCat(server_name(i), " is running"));
  }
  if (absl::Status s = Spawn(i); !s.ok()) return s;
  return WaitForClientPort(i, absl::Now() + kStartTimeout);
}

absl::Status NatsCluster::Pause(int i) {
  if (absl::Status s = CheckIndex(i); !s.ok()) return s;
  if (absl::Status s = CheckAlive(i); !s.ok()) return s;
  if (kill(servers_[i].pid, SIGSTOP) != 0) {
    return absl::InternalError(absl::StrCat("SIGSTOP: ", strerror(errno)));
  }
  servers_[i].paused = true;
  return absl::OkStatus();
}

absl::Status NatsCluster::Resume(int i) {
  if (absl::Status s = CheckIndex(i); !s.ok()) return s;
  if (absl::Status s = CheckAlive(i); !s.ok()) return s;
  if (kill(servers_[i].pid, SIGCONT) != 0) {
    return absl::InternalError(absl::StrCat("SIGCONT: ", strerror(errno)));
  }
  servers_[i].paused = false;
  return absl::OkStatus();
}

absl::StatusOr<int> NatsCluster::StreamLeader(const std::string& stream) {
  absl::StatusOr<JetStreamClient> client = ConnectJetStream(live_urls(), absl::Seconds(1));
  if (!client.ok()) return client.status();
  jsStreamInfo* raw = nullptr;
  jsErrCode js_err = jsErrCode(0);
  const natsStatus s = js_GetStreamInfo(&raw, client->js.get(), stream.c_str(), nullptr, &js_err);
  JsStreamInfoPtr si(raw);
  if (s != NATS_OK) return NatsError(absl::StrCat("stream info of ", stream), s, js_err);
  if (si->Cluster == nullptr || si->Cluster->Leader == nullptr || *si->Cluster->Leader == '\0') {
    return absl::UnavailableError(absl::StrCat("stream ", stream, " has no leader"));
  }
  for (int i = 0; i < size(); ++i) {
    if (server_name(i) == si->Cluster->Leader) return i;
  }
  return absl::InternalError(
      absl::StrCat("stream ", stream, " is led by unknown server ", si->Cluster->Leader));
}

absl::Status NatsCluster::WaitForStreamLeader(const std::string& stream, absl::Duration timeout,
                                              int* leader) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status last;
  for (;;) {
    absl::StatusOr<int> l = StreamLeader(stream);
    if (l.ok() && running(*l) && !paused(*l)) {
      if (leader != nullptr) *leader = *l;
      return absl::OkStatus();
    }
    last = l.ok() ? absl::UnavailableError(absl::StrCat("leader ", server_name(*l), " is ",
                                                        running(*l) ? "paused" : "killed"))
                  : l.status();
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("no live leader for stream ", stream, ": ", last.message()));
    }
    absl::SleepFor(kPollInterval);
  }
}

absl::Status NatsCluster::CreateStream(const std::string& stream, const std::string& subject,
                                       int replicas) {
  absl::StatusOr<JetStreamClient> client = ConnectJetStream(live_urls(), absl::Seconds(5));
  if (!client.ok()) return client.status();
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = stream.c_str();
  const char* subjects[] = {subject.c_str()};
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Replicas = replicas;
  jsStreamInfo* raw = nullptr;
  jsErrCode js_err = jsErrCode(0);
  const natsStatus s = js_AddStream(&raw, client->js.get(), &cfg, nullptr, &js_err);
  JsStreamInfoPtr si(raw);
  if (s != NATS_OK) return NatsError(absl::StrCat("create stream ", stream), s, js_err);
  return absl::OkStatus();
}

std::string NatsCluster::LogTails(int lines) const {
  std::string out;
  for (const Server& srv : servers_) {
    absl::StrAppend(&out, "--- ", srv.name, " (", srv.log_path, ") ---\n",
                    TailOfFile(srv.log_path, lines), "\n");
  }
  return out;
}

}  // namespace rill::testing
