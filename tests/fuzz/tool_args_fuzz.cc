// Fuzz target: any bytes as the arguments of the `rill` tool (split at NUL
// bytes), parsed by the tool's real command tree (tools/cli.h MakeApp).
// Parsing only: the command chosen is never run.
//
// Promises checked: parsing never crashes and reports bad usage only through
// CLI11's ParseError (which Main turns into exit code 2); a parse that
// succeeds chose exactly one command.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "cli.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args{"rill"};
  std::string current;
  for (size_t i = 0; i < size && args.size() < 64; ++i) {
    if (data[i] == 0) {
      args.push_back(current);
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  if (!current.empty()) args.push_back(current);
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  std::function<int()> action;
  std::unique_ptr<CLI::App> app = rill::tool::MakeApp(&action);
  try {
    app->parse(static_cast<int>(argv.size()), argv.data());
    FUZZ_CHECK(static_cast<bool>(action));
  } catch (const CLI::ParseError&) {
    // Bad usage: exit code 2 in the tool.
  }
  return 0;
}
