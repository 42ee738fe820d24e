// lmdb_txn_child: holds a plain LMDB transaction on a store's log environment
// until told to let go (or until killed), so that tests can
//   - make their own process's appends queue up behind another process's
//     writer lock (and so land in one group commit once it is released);
//   - kill a process that holds the writer lock or a reader slot.
//
// Usage: lmdb_txn_child write|read <log environment directory: STORE/log>
// Begins a write (or read-only) transaction, prints "locked" on stdout, waits
// until its stdin is closed, aborts the transaction (nothing is written) and
// exits 0. Exit code 2 on bad usage, 3 on an LMDB error.
#include <lmdb.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc != 3 || (strcmp(argv[1], "write") != 0 && strcmp(argv[1], "read") != 0)) {
    fprintf(stderr, "usage: lmdb_txn_child write|read STORE/log\n");
    return 2;
  }
  const bool write = strcmp(argv[1], "write") == 0;
  MDB_env* env = nullptr;
  int rc = mdb_env_create(&env);
  if (rc == 0) rc = mdb_env_set_maxdbs(env, 16);
  if (rc == 0) rc = mdb_env_open(env, argv[2], write ? 0 : MDB_RDONLY, 0644);
  MDB_txn* txn = nullptr;
  if (rc == 0) rc = mdb_txn_begin(env, nullptr, write ? 0 : MDB_RDONLY, &txn);
  if (rc != 0) {
    fprintf(stderr, "lmdb_txn_child: %s\n", mdb_strerror(rc));
    return 3;
  }
  printf("locked\n");
  fflush(stdout);
  char buf[64];
  while (read(0, buf, sizeof(buf)) > 0) {
  }
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return 0;
}
