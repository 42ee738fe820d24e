// A projection plugin for the admin tool's tests (`--plugin`): the projections
// of projector_defs.h (with RILL_TEST_HEALED=1 in the environment the
// "parking" projection no longer fails on its poison positions).
#include <vector>

#include "projector_defs.h"
#include "rill/projection_plugin.h"

extern "C" void rill_register_projections(std::vector<rill::ProjectionDef>* out) {
  *out = rill::testing::CrashProjections(1);
}
