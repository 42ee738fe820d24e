// Projection plugins: the ABI through which the admin tool runs a service's
// projections in its own process (`rill projections rebuild|retry --plugin
// LIB.so`). A plugin is a shared library, built against the same rill
// headers, that defines
//   extern "C" void rill_register_projections(std::vector<rill::ProjectionDef>* out);
// appending the service's definitions to *out. See docs/admin.md.
#ifndef RILL_PROJECTION_PLUGIN_H_
#define RILL_PROJECTION_PLUGIN_H_

#include <vector>

#include "rill/projection.h"

namespace rill {

inline constexpr char kProjectionPluginSymbol[] = "rill_register_projections";
using ProjectionPluginFn = void (*)(std::vector<ProjectionDef>* out);

}  // namespace rill

#endif  // RILL_PROJECTION_PLUGIN_H_
