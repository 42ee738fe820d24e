// ThreadSanitizer builds only (RILL_TSAN=ON, see the top-level CMakeLists.txt).
//
// Debian's Abseil is built without ThreadSanitizer, so absl::Mutex,
// absl::CondVar, absl::Notification and absl::Barrier synchronise threads
// inside libabsl_synchronization.so with atomics and futexes that TSan never
// sees: every access guarded by an absl::Mutex would be reported as a race.
// Abseil built with TSan annotates these operations itself
// (__tsan_mutex_pre_lock ...); this file adds the same annotations from the
// outside. The linker rewrites every call our code makes to one of the
// functions below into a call to its __wrap_ version (-Wl,--wrap=<symbol>),
// which tells TSan what the real function (__real_<symbol>) does.
//
// Mutexes are annotated the way mutex.cc does under TSan: accesses inside a
// lock operation are ignored (conditions are evaluated there, by whichever
// thread happens to unlock), and Await / CondVar waits are an unlock followed
// by a lock. Readers-writer locks are not used by rill and are not wrapped.
// If a new absl synchronization function is used, add it here and to
// RILL_TSAN_WRAPPED in CMakeLists.txt (an unwrapped one gives false reports,
// never hides a race).
#include <sanitizer/tsan_interface.h>

#include "absl/synchronization/barrier.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

using absl::Barrier;
using absl::Condition;
using absl::CondVar;
using absl::Duration;
using absl::Mutex;
using absl::Notification;
using absl::Time;

namespace {

// Notification::HasBeenNotified() is inline: an acquire load of the
// notification's flag, which TSan does see. Notify must release there.
const void* NotifiedFlag(const Notification* n) {
  static_assert(sizeof(Notification) == 2 * sizeof(Mutex),
                "absl::Notification is { Mutex mutex_; atomic<bool> notified_yet_; }");
  return reinterpret_cast<const char*>(n) + sizeof(Mutex);
}

void LockDone(Mutex* mu) { __tsan_mutex_post_lock(mu, 0, 0); }
void UnlockStart(Mutex* mu) { __tsan_mutex_pre_unlock(mu, 0); }
// A wait that gives the mutex up and takes it back: while the real function
// runs, TSan considers the mutex free (and ignores the accesses it makes).
void WaitStart(Mutex* mu) { __tsan_mutex_pre_unlock(mu, 0); }
void WaitDone(Mutex* mu) {
  __tsan_mutex_post_unlock(mu, 0);
  __tsan_mutex_pre_lock(mu, 0);
  __tsan_mutex_post_lock(mu, 0, 0);
}

}  // namespace

extern "C" {

// absl::Mutex::Lock()
void __real__ZN4absl7debian35Mutex4LockEv(Mutex* mu);
void __wrap__ZN4absl7debian35Mutex4LockEv(Mutex* mu) {
  __tsan_mutex_pre_lock(mu, 0);
  __real__ZN4absl7debian35Mutex4LockEv(mu);
  LockDone(mu);
}

// absl::Mutex::Unlock()
void __real__ZN4absl7debian35Mutex6UnlockEv(Mutex* mu);
void __wrap__ZN4absl7debian35Mutex6UnlockEv(Mutex* mu) {
  UnlockStart(mu);
  __real__ZN4absl7debian35Mutex6UnlockEv(mu);
  __tsan_mutex_post_unlock(mu, 0);
}

// absl::Mutex::~Mutex()
void __real__ZN4absl7debian35MutexD1Ev(Mutex* mu);
void __wrap__ZN4absl7debian35MutexD1Ev(Mutex* mu) {
  __tsan_mutex_destroy(mu, 0);
  __real__ZN4absl7debian35MutexD1Ev(mu);
}

// absl::Mutex::Await(const Condition&)
void __real__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(Mutex* mu, const Condition& c);
void __wrap__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(Mutex* mu, const Condition& c) {
  WaitStart(mu);
  __real__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(mu, c);
  WaitDone(mu);
}

// absl::Mutex::AwaitWithTimeout(const Condition&, Duration)
bool __real__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    Mutex* mu, const Condition& c, Duration d);
bool __wrap__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    Mutex* mu, const Condition& c, Duration d) {
  WaitStart(mu);
  const bool r =
      __real__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(mu, c, d);
  WaitDone(mu);
  return r;
}

// absl::Mutex::AwaitWithDeadline(const Condition&, Time)
bool __real__ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(
    Mutex* mu, const Condition& c, Time t);
bool __wrap__ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(
    Mutex* mu, const Condition& c, Time t) {
  WaitStart(mu);
  const bool r =
      __real__ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(mu, c, t);
  WaitDone(mu);
  return r;
}

// absl::CondVar::Wait(Mutex*)
void __real__ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(CondVar* cv, Mutex* mu);
void __wrap__ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(CondVar* cv, Mutex* mu) {
  WaitStart(mu);
  __real__ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(cv, mu);
  WaitDone(mu);
}

// absl::CondVar::WaitWithTimeout(Mutex*, Duration)
bool __real__ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(CondVar* cv,
                                                                                 Mutex* mu,
                                                                                 Duration d);
bool __wrap__ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(CondVar* cv,
                                                                                 Mutex* mu,
                                                                                 Duration d) {
  WaitStart(mu);
  const bool r =
      __real__ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(cv, mu, d);
  WaitDone(mu);
  return r;
}

// absl::CondVar::WaitWithDeadline(Mutex*, Time)
bool __real__ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE(CondVar* cv,
                                                                              Mutex* mu, Time t);
bool __wrap__ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE(CondVar* cv,
                                                                              Mutex* mu, Time t) {
  WaitStart(mu);
  const bool r =
      __real__ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE(cv, mu, t);
  WaitDone(mu);
  return r;
}

// absl::Notification::Notify()
void __real__ZN4absl7debian312Notification6NotifyEv(Notification* n);
void __wrap__ZN4absl7debian312Notification6NotifyEv(Notification* n) {
  __tsan_release(const_cast<void*>(NotifiedFlag(n)));
  __real__ZN4absl7debian312Notification6NotifyEv(n);
}

// absl::Notification::WaitForNotification() const
void __real__ZNK4absl7debian312Notification19WaitForNotificationEv(const Notification* n);
void __wrap__ZNK4absl7debian312Notification19WaitForNotificationEv(const Notification* n) {
  __real__ZNK4absl7debian312Notification19WaitForNotificationEv(n);
  __tsan_acquire(const_cast<void*>(NotifiedFlag(n)));
}

// absl::Notification::WaitForNotificationWithTimeout(Duration) const
bool __real__ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(
    const Notification* n, Duration d);
bool __wrap__ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(
    const Notification* n, Duration d) {
  const bool r =
      __real__ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(n, d);
  if (r) __tsan_acquire(const_cast<void*>(NotifiedFlag(n)));
  return r;
}

// absl::Barrier::Block(): everything before it in any thread happens before
// everything after it in every thread.
bool __real__ZN4absl7debian37Barrier5BlockEv(Barrier* b);
bool __wrap__ZN4absl7debian37Barrier5BlockEv(Barrier* b) {
  __tsan_release(b);
  const bool r = __real__ZN4absl7debian37Barrier5BlockEv(b);
  __tsan_acquire(b);
  return r;
}

}  // extern "C"
