// A projection plugin for the admin tool's tests (`--plugin`): the projections
// of projector_defs.h. With RILL_TEST_PLUGIN_HEALED=1 in the environment the
// "parking" projection no longer fails on its poison positions, so a retry of
// its parked events succeeds.
#include <cstdlib>
#include <vector>

#include "projector_defs.h"
#include "rill/projection.h"

extern "C" void rill_register_projections(std::vector<rill::ProjectionDef>* out) {
  using namespace rill::testing;
  out->push_back(LedgerProjection(1));
  out->push_back(TypedProjection());
  rill::ProjectionDef parking = ParkingProjection();
  if (std::getenv("RILL_TEST_PLUGIN_HEALED") != nullptr) {
    parking.apply = [](const rill::EventView& e, rill::ReadModelTxn& txn) -> absl::Status {
      if (absl::Status s = AddInt(txn, "totals", "count", 1); !s.ok()) return s;
      return AddInt(txn, "applied", PosKey(e.position()), 1);
    };
  }
  out->push_back(std::move(parking));
}
