// The orders service's read models, built by rill projections from the log:
//   order_summary   order id -> {"status":...,"total_cents":...,"events":...}
//   orders_by_status "<status>/<order id>" -> ""  (list the orders in a status)
//   daily_revenue   "YYYY-MM-DD" -> cents paid that day (by recorded time)
#ifndef RILL_EXAMPLES_ORDERS_READ_MODELS_H_
#define RILL_EXAMPLES_ORDERS_READ_MODELS_H_

#include <cstdint>
#include <string>

#include "rill/projection.h"

namespace orders {

rill::ProjectionDef OrderSummaryProjection();
rill::ProjectionDef OrdersByStatusProjection();
// Version 1 counts payments; version 2 also subtracts refunds of cancelled
// paid orders - a change of meaning, so it bumps the version and rebuilds.
rill::ProjectionDef DailyRevenueProjection(uint32_t version);

}  // namespace orders

#endif  // RILL_EXAMPLES_ORDERS_READ_MODELS_H_
