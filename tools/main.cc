// The `rill` admin tool. Everything lives in cli.cc and the *_cmd.cc files.
#include "cli.h"

int main(int argc, char** argv) { return rill::tool::Main(argc, argv); }
