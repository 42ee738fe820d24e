/* The power-cut journal: what pc_intercept.c (the LD_PRELOAD library)
 * records about every change to the files under one directory, and what
 * rollback.cc reads to put those files back into a state a disk could hold
 * after a power cut (docs/reliability.md, "Power cuts").
 *
 * A journal is a sequence of records, each one header followed by `len1`
 * then `len2` bytes, written with one write(2) to a file opened O_APPEND.
 * A change is journaled *before* it is made (with the bytes it replaces)
 * and its result after ("done"), so that a process killed at any moment
 * leaves a journal from which every change it may have made can be undone.
 * A torn last record (killed in the middle of writing it) is ignored: the
 * change it announced was not started.
 *
 * The journal is written, not fsync'd: the crash the harness inflicts is a
 * SIGKILL, which the kernel's page cache survives, and the "power cut" is
 * simulated afterwards from the journal. Shared by C and C++. */
#ifndef RILL_TESTS_POWERCUT_PC_JOURNAL_H_
#define RILL_TESTS_POWERCUT_PC_JOURNAL_H_

#include <stdint.h>

#define PC_MAGIC 0x31524350u /* "PCR1" */

enum PcRecordType {
  /* A file or directory seen for the first time: file, a = dev, b = ino,
   * c = 1 for a directory; len1 = its path. */
  PC_NAME = 1,
  /* A write: file, a = offset, b = file size before, c = 1 when the file
   * descriptor is O_SYNC/O_DSYNC (the bytes are durable once it returns);
   * len1 = the bytes it replaces (those of [a, a+len2) below b),
   * len2 = the new bytes. */
  PC_WRITE = 2,
  /* The end of the change journaled at seq a: b = its result (>= 0 OK,
   * -errno on failure). */
  PC_DONE = 3,
  /* A size change (ftruncate, O_TRUNC, fallocate): file, a = new size,
   * b = size before; len1 = the bytes cut off ([a, b) when a < b). */
  PC_SIZE = 4,
  /* fsync/fdatasync/msync(MS_SYNC) of a file or directory begins: file
   * (PC_ALL_FILES for sync()/syncfs()). Its PC_DONE makes every change to
   * that file (a directory: to its entries) journaled before it durable. */
  PC_SYNC = 5,
  /* Namespace changes, in a directory: len1 = path (rename: len1 = from,
   * len2 = to). a = stash number (a hard link to the file an unlink or a
   * rename replaced, in the stash directory; 0: none). */
  PC_CREATE = 6,
  PC_MKDIR = 7,
  PC_RENAME = 8,
  PC_UNLINK = 9,
  PC_RMDIR = 10,
  /* Something the harness cannot roll back (a writable shared mapping of a
   * tracked file, a stdio stream writing one): len1 = what. A run with
   * one of these is not a valid experiment. */
  PC_UNSUPPORTED = 11,
};

#define PC_ALL_FILES 0xFFFFFFFFu

struct PcRecord {
  uint32_t magic;
  uint32_t type;
  uint64_t seq; /* 1, 2, 3 ... in journal order */
  uint32_t file;
  uint32_t len1;
  uint64_t a, b, c;
  uint64_t len2;
};

#endif /* RILL_TESTS_POWERCUT_PC_JOURNAL_H_ */
