#include "cli.h"

#include <cstdio>
#include <exception>
#include <string>

#include "CLI/CLI.hpp"
#include "common.h"

namespace rill::tool {

std::unique_ptr<CLI::App> MakeApp(std::function<int()>* action) {
  auto app = std::make_unique<CLI::App>(
      "rill: inspect, export, verify, back up, benchmark and rebuild a rill event store.\n"
      "Works on a store that a running service has open, and on one nobody has open.",
      "rill");
  app->require_subcommand(1);
  app->fallthrough(false);
  app->footer(
      "Examples:\n"
      "  rill info /var/lib/orders                 what is in the store\n"
      "  rill read /var/lib/orders order-o-1       one stream's events\n"
      "  rill tail /var/lib/orders --json          follow new events\n"
      "  rill verify /var/lib/orders               check every record\n"
      "Exit codes: 0 ok, 1 error, 2 bad usage/input, 3 expected-version conflict,\n"
      "4 idempotency key reused, 5 not found, 6 corruption, 7 disk or map full.\n"
      "`rill COMMAND --help` explains each command; docs/admin.md has sessions.");
  AddInfoCommands(*app, action);
  AddReadCommands(*app, action);
  AddAppendCommands(*app, action);
  AddTransferCommands(*app, action);
  AddVerifyCommands(*app, action);
  AddProjectionCommands(*app, action);
  AddSnapshotCommands(*app, action);
  AddBenchCommands(*app, action);
  AddReplicateCommands(*app, action);
  AddMetricsCommands(*app, action);
  return app;
}

int Main(int argc, char** argv) {
  Action action;
  std::unique_ptr<CLI::App> app = MakeApp(&action);
  if (argc > 1 && argv[1][0] != '-') {
    const std::string name = argv[1];
    bool known = false;
    for (const CLI::App* sub : app->get_subcommands([](CLI::App*) { return true; })) {
      known |= sub->get_name() == name;
    }
    if (!known) {
      std::fprintf(stderr, "rill: unknown command \"%s\"; see `rill --help`\n", name.c_str());
      return kExitUsage;
    }
  }
  try {
    app->parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app->exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app->exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "rill: %s; see `rill --help` or `rill COMMAND --help`\n", e.what());
    return kExitUsage;
  }
  if (!action) {
    std::fprintf(stderr, "rill: no command given; see `rill --help`\n");
    return kExitUsage;
  }
  try {
    return action();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rill: internal error: %s\n", e.what());
    return kExitError;
  }
}

}  // namespace rill::tool
