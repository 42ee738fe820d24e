// The second half of the orders demo: read models, read-your-writes, a parked
// event, a rebuild after a version bump, and an aggregate loaded from a
// snapshot. Returns false (after printing why) when a step goes wrong.
#ifndef RILL_EXAMPLES_ORDERS_READ_SIDE_H_
#define RILL_EXAMPLES_ORDERS_READ_SIDE_H_

#include <string>

#include "rill/store.h"

namespace orders {

bool RunReadSideTour(rill::Store* store, const std::string& run);

}  // namespace orders

#endif  // RILL_EXAMPLES_ORDERS_READ_SIDE_H_
