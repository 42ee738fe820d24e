// Regression tests for the bugs the fuzz targets found, named after the bug.
// The inputs that found them are in regressions/<target>/ and are also
// replayed by fuzz_replay.<target>; these tests check the outcome directly,
// in every build (a misaligned read only trips UBSan in the sanitizer build).
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>

#include "absl/status/status.h"
#include "catalog.h"
#include "gtest/gtest.h"

namespace rill {
namespace {

std::string Regression(const std::string& target, const std::string& name) {
  std::ifstream in(std::string(RILL_FUZZ_DIR) + "/regressions/" + target + "/" + name,
                   std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// log_records_fuzz: a catalog entry whose `retired` vector of u64 starts at
// an offset that is not a multiple of 8 passed the FlatBuffers verifier (it
// checks only the 4-byte length field) and was read in place: undefined
// behaviour. Now DataLoss.
TEST(FuzzRegressionTest, CatalogWithAMisalignedRetiredVectorIsDataLoss) {
  const std::string input = Regression("log_records", "catalog-misaligned-retired-vector");
  ASSERT_GT(input.size(), 1u);
  ASSERT_EQ(input[0], 3);  // the catalog decoder, see log_records_fuzz.cc
  absl::StatusOr<internal::CatalogRec> rec = internal::DecodeCatalog(input.substr(1));
  EXPECT_EQ(rec.status().code(), absl::StatusCode::kDataLoss) << rec.status();
}

// The first version of that fix refused every empty `retired` vector that
// the builder had left unaligned, i.e. most real catalog entries (found by
// the fuzz target's encode/decode round trip). Empty vectors are fine.
TEST(FuzzRegressionTest, CatalogsWithEmptyOrFullRetiredListsRoundTrip) {
  for (uint64_t id : {uint64_t{0}, uint64_t{1}}) {
    for (uint64_t checkpoint : {uint64_t{0}, uint64_t{7}}) {
      for (size_t retired = 0; retired < 3; ++retired) {
        for (size_t name_len : {size_t{0}, size_t{1}, size_t{6}, size_t{9}}) {
          internal::CatalogRec rec;
          rec.name = std::string(name_len, 'p');
          rec.active = {id, 1, checkpoint};
          for (size_t i = 0; i < retired; ++i) rec.retired.push_back(i + 1);
          absl::StatusOr<internal::CatalogRec> back =
              internal::DecodeCatalog(internal::EncodeCatalog(rec));
          ASSERT_TRUE(back.ok()) << back.status() << " id " << id << " checkpoint " << checkpoint
                                 << " retired " << retired << " name " << name_len;
          EXPECT_EQ(back->retired, rec.retired);
          EXPECT_EQ(back->name, rec.name);
        }
      }
    }
  }
}

}  // namespace
}  // namespace rill
