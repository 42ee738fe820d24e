#include "catalog.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "codec.h"
#include "flatbuffers/flatbuffers.h"
#include "keys.h"
#include "rill/schema/projections_generated.h"

namespace rill::internal {
namespace {

constexpr char kNextGenerationKey[] = "next_generation";

std::string Finish(flatbuffers::FlatBufferBuilder& fbb) {
  return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
}

std::string Str(const flatbuffers::String* s) { return s ? s->str() : std::string(); }

flatbuffers::Offset<schema::Generation> BuildGeneration(flatbuffers::FlatBufferBuilder& fbb,
                                                        const GenerationRec& g) {
  return schema::CreateGeneration(fbb, g.id, g.version, g.checkpoint);
}

GenerationRec ReadGeneration(const schema::Generation* g) {
  return GenerationRec{g->id(), g->version(), g->checkpoint()};
}

}  // namespace

std::string BigEndianKey(uint64_t v) {
  std::string s(8, '\0');
  PutBigEndian64(v, reinterpret_cast<uint8_t*>(s.data()));
  return s;
}

absl::StatusOr<ProjectionDbs> ProjectionDbs::Open(LmdbEnv* env) {
  ProjectionDbs dbs;
  const bool create = !env->read_only();
  for (auto [name, dbi] : {std::pair{"proj.catalog", &dbs.catalog},
                           {"proj.dead", &dbs.dead},
                           {"proj.requests", &dbs.requests},
                           {"proj.asof", &dbs.asof},
                           {"proj.meta", &dbs.meta},
                           {"rm", &dbs.rows}}) {
    absl::StatusOr<MDB_dbi> opened = env->OpenDb(name, create);
    if (!opened.ok()) return opened.status();
    *dbi = *opened;
  }
  return dbs;
}

std::string EncodeCatalog(const CatalogRec& rec) {
  flatbuffers::FlatBufferBuilder fbb(128);
  auto name = fbb.CreateString(rec.name);
  auto active = BuildGeneration(fbb, rec.active);
  flatbuffers::Offset<schema::Generation> building = 0;
  if (rec.building) building = BuildGeneration(fbb, *rec.building);
  auto retired = fbb.CreateVector(rec.retired);
  fbb.Finish(schema::CreateProjectionCatalog(fbb, name, active, building, retired));
  return Finish(fbb);
}

absl::StatusOr<CatalogRec> DecodeCatalog(absl::string_view value) {
  AlignedBuffer buf;
  auto root = VerifiedRoot<schema::ProjectionCatalog>(&buf, value, "projection catalog entry");
  if (!root.ok()) return root.status();
  if ((*root)->active() == nullptr) {
    return absl::DataLossError("projection catalog entry has no active generation");
  }
  CatalogRec rec;
  rec.name = Str((*root)->name());
  rec.active = ReadGeneration((*root)->active());
  if ((*root)->building() != nullptr) rec.building = ReadGeneration((*root)->building());
  if (const auto* retired = (*root)->retired(); retired != nullptr) {
    // The verifier checks a vector's length field but not that its 8-byte
    // elements are 8-byte aligned. The builder aligns every non-empty one
    // (an empty one may be anywhere), so a misaligned element is damage,
    // and reading it would be undefined behaviour (found by
    // tests/fuzz/log_records_fuzz.cc).
    if (retired->size() != 0 &&
        reinterpret_cast<uintptr_t>(retired->Data()) % alignof(uint64_t) != 0) {
      return absl::DataLossError("projection catalog entry holds a misaligned vector");
    }
    rec.retired.assign(retired->begin(), retired->end());
  }
  return rec;
}

std::string EncodeDeadLetter(const DeadLetterRec& rec) {
  flatbuffers::FlatBufferBuilder fbb(128);
  auto stream = fbb.CreateString(rec.stream);
  auto type = fbb.CreateString(rec.type);
  auto error = fbb.CreateString(rec.error);
  fbb.Finish(schema::CreateDeadLetter(fbb, stream, type, error, rec.attempts, rec.parked_us,
                                      rec.generation));
  return Finish(fbb);
}

absl::StatusOr<DeadLetterRec> DecodeDeadLetter(absl::string_view value) {
  AlignedBuffer buf;
  auto root = VerifiedRoot<schema::DeadLetter>(&buf, value, "dead letter");
  if (!root.ok()) return root.status();
  return DeadLetterRec{Str((*root)->stream()), Str((*root)->type()), Str((*root)->error()),
                       (*root)->attempts(),    (*root)->parked_us(), (*root)->generation()};
}

std::string EncodeRebuildRequest(int64_t requested_us) {
  flatbuffers::FlatBufferBuilder fbb(32);
  fbb.Finish(schema::CreateRebuildRequest(fbb, requested_us));
  return Finish(fbb);
}

std::string EncodeAsOf(const GenerationRec& gen, uint64_t position) {
  flatbuffers::FlatBufferBuilder fbb(32);
  fbb.Finish(schema::CreateAsOfSet(fbb, gen.id, gen.version, position));
  return Finish(fbb);
}

absl::StatusOr<std::pair<GenerationRec, uint64_t>> DecodeAsOf(absl::string_view value) {
  AlignedBuffer buf;
  auto root = VerifiedRoot<schema::AsOfSet>(&buf, value, "as-of table set");
  if (!root.ok()) return root.status();
  return std::pair{GenerationRec{(*root)->generation(), (*root)->version(), (*root)->position()},
                   (*root)->position()};
}

std::string AsOfKey(absl::string_view projection, absl::string_view label) {
  return absl::StrCat(projection, absl::string_view("\0", 1), label);
}

std::string RowKey(uint64_t generation, absl::string_view table, absl::string_view key) {
  std::string out = BigEndianKey(generation);
  out.push_back(static_cast<char>(table.size()));
  out.append(table.data(), table.size());
  out.append(key.data(), key.size());
  return out;
}

absl::Status ValidateName(absl::string_view what, absl::string_view name, size_t max) {
  if (name.empty() || name.size() > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", name, "\" must be 1..", max, " bytes long"));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " \"", name, "\" may hold only letters, digits, '_', '.', '-'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<CatalogRec>> ReadCatalog(MDB_txn* txn, const ProjectionDbs& dbs,
                                                      absl::string_view projection) {
  MDB_val key = ToVal(projection), value;
  int rc = mdb_get(txn, dbs.catalog, &key, &value);
  if (rc == MDB_NOTFOUND) return std::optional<CatalogRec>();
  if (rc != 0) return LmdbError(rc, "reading the projection catalog");
  absl::StatusOr<CatalogRec> rec = DecodeCatalog(FromVal(value));
  if (!rec.ok()) return rec.status();
  return std::optional<CatalogRec>(*std::move(rec));
}

absl::StatusOr<uint64_t> NextGeneration(MDB_txn* txn, const ProjectionDbs& dbs) {
  MDB_val key = ToVal(kNextGenerationKey), value;
  uint64_t next = 1;
  int rc = mdb_get(txn, dbs.meta, &key, &value);
  if (rc == 0 && value.mv_size == 8) {
    next = GetBigEndian64(static_cast<const uint8_t*>(value.mv_data));
  } else if (rc != MDB_NOTFOUND) {
    return rc == 0 ? absl::DataLossError("malformed generation counter")
                   : LmdbError(rc, "reading the generation counter");
  }
  if (absl::Status s = Put(txn, dbs.meta, kNextGenerationKey, BigEndianKey(next + 1)); !s.ok()) {
    return s;
  }
  return next;
}

absl::StatusOr<size_t> DeletePrefix(MDB_txn* txn, MDB_dbi dbi, absl::string_view prefix,
                                    size_t max_rows,
                                    const std::function<bool(absl::string_view)>& keep) {
  absl::StatusOr<CursorPtr> cursor = OpenCursor(txn, dbi);
  if (!cursor.ok()) return cursor.status();
  MDB_val k = ToVal(prefix), v;
  size_t deleted = 0;
  int rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_SET_RANGE);
  while (rc == 0 && absl::StartsWith(FromVal(k), prefix) && deleted < max_rows) {
    if (keep && keep(FromVal(v))) {
      rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT);
      continue;
    }
    rc = mdb_cursor_del(cursor->get(), 0);
    if (rc != 0) return LmdbError(rc, "deleting derived data");
    ++deleted;
    // After a delete the cursor stands on the next row (or past the end).
    rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_GET_CURRENT);
  }
  if (rc != 0 && rc != MDB_NOTFOUND && rc != EINVAL) {
    return LmdbError(rc, "scanning derived data");
  }
  return deleted;
}

absl::Status Put(MDB_txn* txn, MDB_dbi dbi, absl::string_view key, absl::string_view value) {
  MDB_val k = ToVal(key), v = ToVal(value);
  int rc = mdb_put(txn, dbi, &k, &v, 0);
  if (rc == 0) return absl::OkStatus();
  if (rc == MDB_BAD_VALSIZE) {
    return absl::InvalidArgumentError(absl::StrCat("key of ", key.size(), " bytes or value of ",
                                                   value.size(),
                                                   " bytes is too large for a read model"));
  }
  return LmdbError(rc, "writing derived data");
}

absl::Status Del(MDB_txn* txn, MDB_dbi dbi, absl::string_view key) {
  MDB_val k = ToVal(key);
  int rc = mdb_del(txn, dbi, &k, nullptr);
  if (rc == 0 || rc == MDB_NOTFOUND) return absl::OkStatus();
  return LmdbError(rc, "deleting derived data");
}

absl::StatusOr<Derived> OpenDerived(Store* store) {
  absl::StatusOr<StoreCore*> core = CoreOf(store, "projections");
  if (!core.ok()) return core.status();
  absl::StatusOr<LmdbEnv*> env = (*core)->DerivedEnv();
  if (!env.ok()) return env.status();
  absl::StatusOr<ProjectionDbs> dbs = ProjectionDbs::Open(*env);
  if (!dbs.ok()) return dbs.status();
  return Derived{store, *core, *env, *dbs};
}

std::string ProjectionLockPath(const LmdbEnv* env, absl::string_view projection) {
  return absl::StrCat(env->path(), "/projection-", projection, ".lock");
}

namespace {
struct flock WholeFile(short type) {
  struct flock fl;
  std::memset(&fl, 0, sizeof(fl));
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  return fl;
}
}  // namespace

absl::StatusOr<int> LockProjection(const std::string& lock_path, absl::string_view projection) {
  int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return LmdbError(errno, absl::StrCat("cannot open ", lock_path));
  struct flock fl = WholeFile(F_WRLCK);
  if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
    const int err = errno;
    close(fd);
    if (err == EAGAIN || err == EACCES) {
      return absl::FailedPreconditionError(absl::StrCat(
          "projection \"", projection, "\" is already run by another runner (", lock_path, ")"));
    }
    return LmdbError(err, absl::StrCat("cannot lock ", lock_path));
  }
  return fd;
}

absl::StatusOr<bool> ProjectionLockHeld(const std::string& lock_path) {
  int fd = open(lock_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return false;
    return LmdbError(errno, absl::StrCat("cannot open ", lock_path));
  }
  struct flock fl = WholeFile(F_WRLCK);
  const int rc = fcntl(fd, F_OFD_GETLK, &fl);
  const int err = errno;
  close(fd);
  if (rc != 0) return LmdbError(err, absl::StrCat("cannot test the lock ", lock_path));
  return fl.l_type != F_UNLCK;
}

}  // namespace rill::internal
