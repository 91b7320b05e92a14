#include "engine/rcu.h"

#include <urcu/urcu-bp.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <new>
#include <utility>

#include "base/assert.h"

// ThreadSanitizer cannot see liburcu's grace periods (the library is not instrumented), so it
// is told about them: every read-side section ends with a release of `grace_period`, and every
// callback starts with an acquire of it, which orders the readers' accesses before the frees.
// Each callback's captured state is handed over the same way.
#if defined(__SANITIZE_THREAD__)
#define LOCKSTEP_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LOCKSTEP_TSAN 1
#endif
#endif

#ifdef LOCKSTEP_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace lockstep::engine::rcu {
namespace {

#ifdef LOCKSTEP_TSAN
char grace_period;
void TsanRelease(void* addr) { __tsan_release(addr); }
void TsanAcquire(void* addr) { __tsan_acquire(addr); }
#else
void TsanRelease(void*) {}
void TsanAcquire(void*) {}
#endif

// Callbacks queued and not yet finished. Barrier waits on this rather than on urcu_bp_barrier,
// whose synchronisation (and internal allocations) ThreadSanitizer cannot see.
// Never destroyed: liburcu's callback thread may still be running a callback while the
// process exits (a program that queued work and did not call Barrier), and a destroyed
// condition variable must not be notified.
struct Outstanding {
  std::mutex mu;
  std::condition_variable cv;
  std::uint64_t count = 0;
};
Outstanding& outstanding = *new Outstanding;

// Standard layout, so liburcu's container_of finds it from its head.
struct Callback {
  rcu_head head;
  std::function<void()>* fn;
};

void RunCallback(rcu_head* head) {
  Callback* callback = caa_container_of(head, Callback, head);
#ifdef LOCKSTEP_TSAN
  TsanAcquire(&grace_period);
#endif
  TsanAcquire(callback);
  (*callback->fn)();
  delete callback->fn;
  delete callback;
  std::lock_guard lock(outstanding.mu);
  if (--outstanding.count == 0) outstanding.cv.notify_all();
}

}  // namespace

ReadGuard::ReadGuard() { urcu_bp_read_lock(); }

ReadGuard::~ReadGuard() {
#ifdef LOCKSTEP_TSAN
  TsanRelease(&grace_period);
#endif
  urcu_bp_read_unlock();
}

bool InReadSection() { return urcu_bp_read_ongoing() != 0; }

void AfterReaders(std::function<void()> fn) {
  LOCKSTEP_ASSERT(!InReadSection());
  auto* callback = new Callback{{}, new std::function<void()>(std::move(fn))};
  {
    std::lock_guard lock(outstanding.mu);
    ++outstanding.count;
  }
  TsanRelease(callback);
  urcu_bp_call_rcu(&callback->head, RunCallback);
}

void FreeAfterReaders(std::vector<void*> garbage) {
  if (garbage.empty()) return;
  AfterReaders([garbage = std::move(garbage)] {
    for (void* p : garbage) ::operator delete(p);
  });
}

void WaitForReaders() {
  LOCKSTEP_ASSERT(!InReadSection());
  urcu_bp_synchronize_rcu();
#ifdef LOCKSTEP_TSAN
  TsanAcquire(&grace_period);
#endif
}

void Barrier() {
  LOCKSTEP_ASSERT(!InReadSection());
  std::unique_lock lock(outstanding.mu);
  outstanding.cv.wait(lock, [] { return outstanding.count == 0; });
}

}  // namespace lockstep::engine::rcu
