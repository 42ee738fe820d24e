// The `rill` command line: parses argv with CLI11 and runs the command chosen.
#ifndef RILL_TOOLS_CLI_H_
#define RILL_TOOLS_CLI_H_

#include <functional>
#include <memory>

namespace CLI {
class App;
}

namespace rill::tool {

// Runs the tool; returns the process exit code (docs/admin.md).
int Main(int argc, char** argv);

// The whole command tree. Parsing it with `app->parse(argc, argv)` sets
// *action to the chosen command (and runs nothing else); used by Main and by
// the argument-parsing fuzz target.
std::unique_ptr<CLI::App> MakeApp(std::function<int()>* action);

}  // namespace rill::tool

#endif  // RILL_TOOLS_CLI_H_
