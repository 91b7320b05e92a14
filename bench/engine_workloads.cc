#include "bench/engine_workloads.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "base/clock.h"
#include "engine/engine.h"

namespace lockstep::bench {
namespace {

using base::MonotonicNs;
using engine::CommitResult;
using engine::Engine;
using engine::EngineOptions;
using engine::EventAppend;
using engine::Transaction;

base::Result<std::unique_ptr<Engine>> OpenEngine(const EngineWorkload& w) {
  EngineOptions o;
  o.dir = w.dir;
  o.io = w.io;
  o.log = w.log;
  o.log.sync = w.sync;
  return Engine::Open(o);
}

// Counts completions inside the measured window; shared by the engine's callback threads (the
// sequencer answers conflicts, the log writer answers commits), hence the mutex.
class Window {
 public:
  Window(double warmup_seconds, double seconds) {
    start_ = MonotonicNs() + static_cast<std::int64_t>(warmup_seconds * 1e9);
    end_ = start_ + static_cast<std::int64_t>(seconds * 1e9);
  }
  bool open(std::int64_t now) const { return now < end_; }
  void Done(std::int64_t began, std::int64_t now, std::uint64_t conflicts) {
    std::lock_guard lock(mu_);
    if (now < start_ || now > end_) return;
    ++row_.ops;
    row_.conflicts += conflicts;
    row_.latency.RecordNs(now - began);
  }
  void Fail(const base::Status& s) {
    std::lock_guard lock(mu_);
    if (error_.ok()) error_ = s;
  }
  base::Result<EngineRow> Finish() {
    std::lock_guard lock(mu_);
    if (!error_.ok()) return error_;
    row_.seconds = static_cast<double>(end_ - start_) / 1e9;
    return std::move(row_);
  }
  std::int64_t end() const { return end_; }

 private:
  std::int64_t start_;
  std::int64_t end_;
  std::mutex mu_;
  EngineRow row_;
  base::Status error_;
};

// Waits until every slot has stopped (each decrements `in_flight` when it does).
void Drain(const std::atomic<std::uint32_t>& in_flight, std::int64_t end_ns) {
  std::this_thread::sleep_until(
      std::chrono::steady_clock::time_point(std::chrono::nanoseconds(end_ns)));
  while (in_flight.load() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

class TransferDriver {
 public:
  TransferDriver(Engine& engine, const EngineWorkload& w)
      : engine_(engine),
        w_(w),
        window_(w.warmup_seconds, w.seconds),
        slots_(w.outstanding),
        payload_(w.event_bytes, 'x') {
    for (std::uint32_t i = 0; i < w.outstanding; ++i) slots_[i].rng.seed(i + 1);
  }

  base::Result<EngineRow> Run() {
    in_flight_ = w_.outstanding;
    for (std::uint32_t i = 0; i < w_.outstanding; ++i) Start(i);
    Drain(in_flight_, window_.end());
    return window_.Finish();
  }

 private:
  struct Slot {
    std::mt19937_64 rng;
    std::int64_t began = 0;
    std::uint64_t conflicts = 0;
  };

  void Start(std::uint32_t i) {
    slots_[i].began = MonotonicNs();
    slots_[i].conflicts = 0;
    Attempt(i);
  }

  void Attempt(std::uint32_t i) {
    Slot& s = slots_[i];
    const auto from = static_cast<std::uint32_t>(s.rng() % w_.accounts);
    auto to = static_cast<std::uint32_t>(s.rng() % (w_.accounts - 1));
    if (to >= from) ++to;
    const std::string from_key = AccountKey(from), to_key = AccountKey(to);
    auto a = engine_.Get("balances", from_key);
    auto b = engine_.Get("balances", to_key);
    if (!a.ok() || !b.ok() || !a->has_value() || !b->has_value()) {
      window_.Fail(base::Internal("an account is missing"));
      in_flight_.fetch_sub(1);
      return;
    }
    const long amount = static_cast<long>(s.rng() % 100);
    EventAppend event;
    event.topic = "transfers";
    event.key = from_key;
    event.type = "TransferCompleted";
    event.payload = payload_;
    Transaction txn;
    txn.RequireVersion("balances", from_key, (*a)->version)
        .RequireVersion("balances", to_key, (*b)->version)
        .Put("balances", from_key, std::to_string(std::stol((*a)->value) - amount))
        .Put("balances", to_key, std::to_string(std::stol((*b)->value) + amount))
        .Append(std::move(event));
    engine_.Commit(std::move(txn), [this, i](base::Result<CommitResult> r) { Done(i, r); });
  }

  void Done(std::uint32_t i, const base::Result<CommitResult>& r) {
    Slot& s = slots_[i];
    if (r.status().code() == base::StatusCode::kConflict) {
      ++s.conflicts;
      return Attempt(i);  // retried from a fresh read; latency keeps running
    }
    const std::int64_t now = MonotonicNs();
    if (!r.ok()) {
      window_.Fail(r.status());
    } else {
      window_.Done(s.began, now, s.conflicts);
      if (window_.open(now)) return Start(i);
    }
    in_flight_.fetch_sub(1);
  }

  Engine& engine_;
  const EngineWorkload& w_;
  Window window_;
  std::vector<Slot> slots_;
  std::string payload_;
  std::atomic<std::uint32_t> in_flight_{0};
};

class EventsDriver {
 public:
  EventsDriver(Engine& engine, const EngineWorkload& w)
      : engine_(engine),
        w_(w),
        window_(w.warmup_seconds, w.seconds),
        began_(w.outstanding),
        payload_(w.event_bytes, 'e') {}

  base::Result<EngineRow> Run() {
    in_flight_ = w_.outstanding;
    for (std::uint32_t i = 0; i < w_.outstanding; ++i) Issue(i, MonotonicNs());
    Drain(in_flight_, window_.end());
    return window_.Finish();
  }

 private:
  // `now`: when the commit begins (a refill reuses its predecessor's answer time: one clock read
  // per commit, not two).
  void Issue(std::uint32_t i, std::int64_t now) {
    began_[i] = now;
    EventAppend event;
    event.topic = "events";
    event.payload = payload_;
    engine_.Commit(Transaction().Append(std::move(event)),
                   [this, i](base::Result<CommitResult> r) { Done(i, r); });
  }
  void Done(std::uint32_t i, const base::Result<CommitResult>& r) {
    const std::int64_t now = MonotonicNs();
    if (!r.ok()) {
      window_.Fail(r.status());
    } else {
      window_.Done(began_[i], now, 0);
      if (window_.open(now)) return Issue(i, now);
    }
    in_flight_.fetch_sub(1);
  }

  Engine& engine_;
  const EngineWorkload& w_;
  Window window_;
  std::vector<std::int64_t> began_;
  std::string payload_;
  std::atomic<std::uint32_t> in_flight_{0};
};

}  // namespace

std::string AccountKey(std::uint32_t i) { return fmt::format("acct/{:06}", i); }

base::Result<EngineRow> RunTransferLockstep(const EngineWorkload& w) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto engine, OpenEngine(w));
  LOCKSTEP_RETURN_IF_ERROR(engine->CreateTable("balances"));
  LOCKSTEP_RETURN_IF_ERROR(engine->CreateTopic("transfers", 16));
  for (std::uint32_t first = 0; first < w.accounts; first += 1000) {
    Transaction load;
    for (std::uint32_t i = first; i < std::min(w.accounts, first + 1000); ++i) {
      load.Put("balances", AccountKey(i), "1000000");
    }
    LOCKSTEP_RETURN_IF_ERROR(engine->Commit(std::move(load)).get().status());
  }
  TransferDriver driver(*engine, w);
  return driver.Run();
}

base::Result<EngineRow> RunEventsLockstep(const EngineWorkload& w) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto engine, OpenEngine(w));
  LOCKSTEP_RETURN_IF_ERROR(engine->CreateTopic("events", 16));
  EventsDriver driver(*engine, w);
  return driver.Run();
}

}  // namespace lockstep::bench
