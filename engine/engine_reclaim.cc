// Version reclamation (docs/engine.md, "Tables"): the sequencer moves the version floor along
// the version window and, one grace period later, unlinks what lies below it. It never waits
// for a reader: the grace period runs in liburcu's callback thread, which then wakes it.
#include <algorithm>
#include <utility>

#include "engine/engine.h"
#include "engine/engine_internal.h"
#include "engine/internal_tables.h"
#include "engine/rcu.h"

namespace lockstep::engine {

namespace {
// How often the sequencer looks at the window while commits keep it busy: every 10 ms, and
// every 256 transactions (a clock that stands still — a test's — must not stop reclamation).
constexpr std::int64_t kReclaimEveryMs = 10;
constexpr std::uint64_t kReclaimEveryTransactions = 256;
// Shadowing writes looked at per table per pass: a bounded pause for the sequencer.
constexpr std::size_t kReclaimBudget = 16 << 10;
}  // namespace

void Engine::Reclaim(bool now, std::size_t processed) {
  const std::int64_t ms = options_.now_ms();
  transactions_since_reclaim_ += processed;
  if (now || reclaim_backlog_ || ms >= last_reclaim_ms_ + kReclaimEveryMs ||
      transactions_since_reclaim_ >= kReclaimEveryTransactions) {
    last_reclaim_ms_ = ms;
    transactions_since_reclaim_ = 0;
    // 1. The floor: the visible LSN as it was version_window_ms ago (samples taken here), held
    //    at or below a checkpoint being written, and never moving back.
    const std::uint64_t visible = visible_lsn().value();
    if (visible_samples_.empty() || visible_samples_.back().lsn != visible) {
      visible_samples_.push_back({ms, visible});
    }
    const std::int64_t boundary = ms - options_.version_window_ms;
    // Samples older than the newest one at or before the boundary are of no more use; that one
    // stays (a pending grace period may delay publishing it).
    while (visible_samples_.size() >= 2 && visible_samples_[1].ms <= boundary) {
      visible_samples_.pop_front();
    }
    const std::uint64_t floor = version_floor_.load(std::memory_order_relaxed);
    std::uint64_t target = floor;
    if (visible_samples_.front().ms <= boundary) {
      target = std::max(target, visible_samples_.front().lsn);
    }
    if (const std::uint64_t pin = checkpoint_pin_.load(std::memory_order_acquire); pin != 0) {
      target = std::min(target, pin);
    }
    // 2. Publish it, then wait (in the background) for every reader that may have taken a
    //    snapshot below it: only then may what lies below it go.
    if (target > floor && !grace_pending_.load(std::memory_order_acquire)) {
      version_floor_.store(target, std::memory_order_seq_cst);
      grace_pending_.store(true, std::memory_order_release);
      rcu::AfterReaders([this, target] {
        reclaim_safe_.store(target, std::memory_order_release);
        grace_pending_.store(false, std::memory_order_release);
        {
          std::lock_guard lock(queue_mu_);
          reclaim_requested_ = true;
        }
        queue_cv_.notify_one();
      });
    }
    // 3. Unlink below the floor whose grace period has ended.
    const Lsn safe(reclaim_safe_.load(std::memory_order_acquire));
    reclaim_backlog_ = false;
    if (safe != Lsn()) {
      for (const auto& [id, entry] : table_ids_) {
        if (entry->table->Reclaim(safe, kReclaimBudget, &garbage_) == kReclaimBudget) {
          reclaim_backlog_ = true;
        }
      }
    }
    // 4. Forget idempotency keys past the horizon, in memory too.
    if (ExpireIdempotencyKeys(ms) == kReclaimBudget) reclaim_backlog_ = true;
    // 5. Finish the index moves a resize began, for tables no longer written (writes move
    //    entries too), pass after pass while the engine is otherwise idle. A no-op for a table
    //    with no move running.
    for (const auto& [id, entry] : table_ids_) {
      if (entry->table->TidyIndex(kReclaimBudget)) reclaim_backlog_ = true;
    }
  }
  // Unlinked here or by a rollback: freed once no reader can be stepping over it.
  if (!garbage_.empty()) rcu::FreeAfterReaders(std::exchange(garbage_, {}));
}

// The keys AnswerRetry no longer matches — below the idempotency floor, or past the horizon —
// are unlinked, oldest first. Readers of __idempotency other than the sequencer (checkpoints)
// leave such keys out anyway.
std::size_t Engine::ExpireIdempotencyKeys(std::int64_t now_ms) {
  if (options_.idempotency_horizon_ms == 0) {
    const Lsn floor = idempotency_floor();
    return idempotency_->table->Expire(kReclaimBudget, &garbage_,
                                       [floor](Lsn lsn, Bytes) { return lsn < floor; });
  }
  const std::int64_t horizon = options_.idempotency_horizon_ms;
  return idempotency_->table->Expire(kReclaimBudget, &garbage_, [&](Lsn, Bytes value) {
    auto remembered = DecodeRememberedResult(value);
    LOCKSTEP_ASSERT(remembered.ok());  // the sequencer wrote it, or a verified checkpoint
    return now_ms - remembered->commit_ms >= horizon;
  });
}

}  // namespace lockstep::engine
