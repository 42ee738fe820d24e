// rill metrics: what can be read of a store from outside the service that
// runs it - head, events, streams, keys, map, reader slots, projections and
// their lag - in the Prometheus text exposition format, printed once or
// served at /metrics for a scraper (docs/operations.md). cpp-httplib serves
// it (docs/dependencies.md says why).
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common.h"
#include "httplib.h"
#include "rill/metrics.h"
#include "rill/projection_admin.h"

namespace rill::tool {
namespace {

struct MetricsArgs {
  std::string store;
  std::string listen;  // HOST:PORT; empty: print once
};

// The store's figures as the files hold them. This process appended
// nothing, so its own counters (which a service reports through the API)
// are left out.
absl::StatusOr<std::string> Scrape(Store* store) {
  absl::StatusOr<Metrics> m = CollectMetrics(store);
  if (!m.ok()) return m.status();
  m->has_process_figures = false;
  if (absl::Status s = AddProjectionMetrics(store, &*m); !s.ok()) return s;
  return FormatPrometheus(*m);
}

int Serve(Store* store, const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--listen wants HOST:PORT (e.g. 127.0.0.1:9464), not \"", listen, "\"")));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  // Stop signals go to this thread only (sigwait below); the server's
  // threads inherit the blocked mask.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  httplib::Server server;
  // SO_REUSEADDR (a restart need not wait out TIME_WAIT) but not httplib's
  // default SO_REUSEPORT, with which a second `rill metrics` on the same
  // port would share it silently instead of failing.
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server.Get("/metrics", [store](const httplib::Request&, httplib::Response& res) {
    absl::StatusOr<std::string> text = Scrape(store);
    if (!text.ok()) {
      res.status = 500;
      res.set_content(text.status().ToString() + "\n", "text/plain; charset=utf-8");
      return;
    }
    res.set_content(*text, "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("rill metrics: GET /metrics\n", "text/plain; charset=utf-8");
  });
  const int bound = port == 0 ? server.bind_to_any_port(host) : port;
  if (bound < 0 || (port != 0 && !server.bind_to_port(host, port))) {
    return Fail(absl::UnavailableError(
        absl::StrCat("cannot listen on ", listen, " (in use, or not an address of this host)")));
  }
  std::thread serving([&server] { server.listen_after_bind(); });
  PrintLine(absl::StrCat("serving the metrics of ", store->dir(), " at http://",
                         host.find(':') == std::string::npos ? host : "[" + host + "]", ":", bound,
                         "/metrics; Ctrl-C stops"));
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop, &sig);
  server.stop();
  serving.join();
  return kExitOk;
}

int RunMetrics(const MetricsArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kRead);
  if (!store.ok()) return Fail(store.status());
  if (!args.listen.empty()) return Serve(store->get(), args.listen);
  absl::StatusOr<std::string> text = Scrape(store->get());
  if (!text.ok()) return Fail(text.status());
  std::fputs(text->c_str(), stdout);
  return kExitOk;
}

}  // namespace

void AddMetricsCommands(CLI::App& app, Action* action) {
  auto args = std::make_shared<MetricsArgs>();
  CLI::App* cmd = app.add_subcommand(
      "metrics", "The store's figures in the Prometheus text format, printed or served");
  cmd->add_option("STORE", args->store, "store directory")->required();
  cmd->add_option("--listen", args->listen,
                  "serve them at http://HOST:PORT/metrics until Ctrl-C (port 0: any free one)");
  cmd->footer(
      "Examples:\n  rill metrics /var/lib/orders\n"
      "  rill metrics /var/lib/orders --listen 127.0.0.1:9464\n"
      "The figures of the service's own process (append outcomes, commit latencies,\n"
      "subscriptions) come from rill::CollectMetrics in the service (docs/operations.md).");
  cmd->callback([args, action] { *action = [args] { return RunMetrics(*args); }; });
}

}  // namespace rill::tool
