#pragma once
// Read-copy-update for the engine's lock-free readers (docs/engine.md, "Tables"): a thin wrapper
// over liburcu's bulletproof flavour, chosen because readers are any thread — server threads,
// an embedding application's threads — and that flavour registers them on first use.
//
// Readers bracket every access to shared versions and skip-list nodes with a ReadGuard; the
// single writer unlinks what no new reader can reach and hands it to FreeAfterReaders (or runs
// a step with AfterReaders), which waits for every read-side section that began before it in a
// background thread of liburcu. The writer never waits for readers; readers never wait at all.
#include <functional>
#include <vector>

namespace lockstep::engine::rcu {

class ReadGuard {
 public:
  ReadGuard();
  ~ReadGuard();
  ReadGuard(const ReadGuard&) = delete;
  ReadGuard& operator=(const ReadGuard&) = delete;
};

// True inside a ReadGuard on this thread (for assertions).
bool InReadSection();

// Calls `fn` on liburcu's callback thread once every read-side section that began before this
// call has ended. `fn` must be short and must not block.
void AfterReaders(std::function<void()> fn);

// Frees (::operator delete) each pointer once every read-side section that began before this
// call has ended.
void FreeAfterReaders(std::vector<void*> garbage);

// Blocks until every read-side section that began before this call has ended. For tests and
// tools: the sequencer never waits for readers (it uses AfterReaders).
void WaitForReaders();

// Waits until every callback queued before it has run to its end (at shutdown, before the
// memory the callbacks touch goes away). Never inside a ReadGuard; never from a callback.
void Barrier();

}  // namespace lockstep::engine::rcu
