// The seeded crash loop: the log runs over the fault-injecting I/O and crashes at random
// operations — before a batch write, between a write and its sync (where the fault model may
// tear the write), during a segment roll, during retention, and during recovery itself. Each
// crash is a power loss (a random choice of which unsynced writes are lost or torn) or a process
// crash (the page cache survives, to be lost perhaps at a later power loss). It also injects
// write and fdatasync errors and full disks. After every recovery it checks that the log is a
// prefix of what was appended that holds every acknowledged append, every record whole, and
// (sometimes) that recovering again without a crash gives the same records.
//
// The manual-mode test is deterministic: LOCKSTEP_TEST_SEED=<seed> (printed at the start)
// replays it. The threaded test crashes the real writer and preparer threads; thread timing
// changes which operation a crash lands on, so its seed does not replay it exactly.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <random>
#include <set>

#include "storage/fault_io.h"
#include "storage/log.h"
#include "tests/testing/bytes.h"
#include "tests/testing/seed.h"

namespace lockstep::storage {
namespace {

using testing::AsBytes;
using testing::AsString;

// One simulated machine: a disk (the fault-injecting I/O) and what its clients know.
struct Machine {
  explicit Machine(std::uint64_t seed) : io(seed), rng(seed) {}

  FaultInjectingIo io;
  std::mt19937_64 rng;
  std::map<std::uint64_t, std::string> appended;  // LSN -> the record last appended at it
  std::uint64_t acked = 0;                        // every LSN <= acked was acknowledged
  // Read by the I/O observer on the log's threads, written by the test's thread.
  std::atomic<std::uint64_t> crash_at{0};  // the armed crash point (operation number)
  std::atomic<bool> in_recovery{false};
  std::string crash_site;  // what that operation was (under the io's lock)
};

struct Totals {
  std::uint64_t crash_points = 0;
  std::uint64_t recoveries = 0;
  std::uint64_t torn_tails = 0;
  std::uint64_t acked_checked = 0;
  std::uint64_t injected_errors = 0;
  std::uint64_t disk_full = 0;
  std::uint64_t process_crashes = 0;
  std::map<std::string, std::uint64_t> sites;
};

LogOptions OptionsFor(Machine& m, bool threaded) {
  LogOptions o;
  o.dir = "db";
  o.io = &m.io;
  o.segment_bytes = 4096;
  o.batch_bytes_max = 1024;
  o.index_interval_bytes = 300;
  o.writer_thread = threaded;  // manual: deterministic, the test drives every write
  o.prepare_in_background = threaded;
  o.salt_seed = 7;
  o.now_ms = [] { return std::int64_t{1'700'000'000'000}; };
  return o;
}

std::uint64_t Uniform(std::mt19937_64& rng, std::uint64_t lo, std::uint64_t hi) {
  return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
}

std::string SiteOf(const Machine& m, OpKind kind, const std::string& path) {
  if (m.in_recovery) return "recovery";
  const bool tmp = path.find(".tmp") != std::string::npos;
  switch (kind) {
    case OpKind::kWrite:
      return tmp ? "roll" : "before batch write";
    case OpKind::kSync:
      return tmp ? "roll" : "between write and sync";
    case OpKind::kRemove:
      return "retention";
    case OpKind::kSyncDir:
    case OpKind::kRename:
    case OpKind::kCreate:
    case OpKind::kAllocate:
    case OpKind::kOpen:
    case OpKind::kMap:
      return "roll";
    default:
      return std::string(OpKindName(kind));
  }
}

void ArmCrash(Machine& m, std::uint64_t in_ops) {
  m.crash_at = m.io.operations() + in_ops;
  m.io.CrashAtOperation(m.crash_at);
}

// Checks the recovered log against what the clients know; then forgets appends that were lost.
void Verify(Machine& m, Log& log, Totals& totals) {
  const std::uint64_t durable = log.durable_lsn().value();
  ASSERT_GE(durable, m.acked) << "an acknowledged append was lost";
  auto reader = log.Read(log.first_lsn());
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  std::uint64_t expect = log.first_lsn().value();
  for (;;) {
    auto next = reader->Next();
    ASSERT_TRUE(next.ok()) << next.status().ToString();
    if (!next->has_value()) break;
    ASSERT_EQ((*next)->lsn.value(), expect) << "LSNs are not dense";
    auto it = m.appended.find(expect);
    ASSERT_NE(it, m.appended.end()) << "LSN " << expect << " was never appended";
    ASSERT_EQ(AsString((*next)->bytes), it->second) << "record at LSN " << expect << " differs";
    ++expect;
  }
  ASSERT_EQ(expect, durable + 1) << "reader stopped before the durable LSN";
  totals.acked_checked += m.acked;
  // Appends above the durable LSN were never acknowledged and are gone: their LSNs get reused.
  m.appended.erase(m.appended.upper_bound(durable), m.appended.end());
  // What recovery found is on stable storage now: from here on it must never go missing.
  m.acked = durable;
}

std::string RandomRecord(std::mt19937_64& rng, std::uint64_t lsn) {
  std::string r = "lsn" + std::to_string(lsn) + ":";
  const auto extra = Uniform(rng, 0, 300);
  for (std::uint64_t i = 0; i < extra; ++i)
    r.push_back(static_cast<char>('a' + Uniform(rng, 0, 25)));
  return r;
}

// Appends, flushes and applies retention until the armed crash or an injected error stops the
// log, or the step budget runs out.
void Work(Machine& m, Log& log, Totals& totals, bool threaded) {
  for (int step = 0; step < 60; ++step) {
    const auto dice = Uniform(m.rng, 0, 99);
    if (dice < 3) {
      // An I/O error: the log must stop and acknowledge nothing more.
      const OpKind kind = dice == 0 ? OpKind::kWrite : OpKind::kSync;
      m.io.AddFault(FaultRule{0, kind, ".seg", FaultKind::kEio, false});
      ++totals.injected_errors;
    } else if (dice < 5) {
      // A full disk when the next segment is prepared: appends are rejected, not lost.
      m.io.AddFault(FaultRule{0, OpKind::kAllocate, "", FaultKind::kEnospc, false});
      ++totals.disk_full;
    } else if (dice < 9) {
      const std::uint64_t durable = log.durable_lsn().value();
      if (durable > 0) {
        auto r = log.DeleteSegmentsBelow(base::Lsn(Uniform(m.rng, 1, durable)));
        if (!r.ok()) return;
      }
      continue;
    }
    const auto n = Uniform(m.rng, 1, 12);
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint64_t lsn = log.next_lsn().value();
      const std::string record = RandomRecord(m.rng, lsn);
      auto r = log.Append(AsBytes(record), [&m](base::Lsn l, const Status& s) {
        if (s.ok()) {
          ASSERT_EQ(l.value(), m.acked + 1) << "acknowledgements out of order";
          m.acked = l.value();
        }
      });
      if (!r.ok()) return;
      // With the writer on its own thread a disk-full rejection may hand LSNs out again between
      // next_lsn() and Append(); in manual mode nothing runs in between.
      if (!threaded) {
        ASSERT_EQ(r->value(), lsn);
      }
      m.appended[r->value()] = record;
    }
    const Status flushed = log.Flush();
    if (flushed.code() == base::StatusCode::kResourceExhausted) continue;  // disk full: go on
    if (!flushed.ok()) {
      // Fail-stop: nothing is accepted any more.
      EXPECT_FALSE(log.Append(AsBytes("x"), nullptr).ok());
      return;
    }
  }
}

// One cycle: recover (perhaps crashing during recovery), verify, work until the crash, then
// lose power or just the process.
void Cycle(Machine& m, Totals& totals, bool threaded) {
  if (Uniform(m.rng, 0, 3) == 0) ArmCrash(m, Uniform(m.rng, 1, 25));  // crash in recovery
  // Now and then recovery's own fdatasync fails: it must refuse to open, and the next recovery
  // (after a process restart, with the page cache intact) must still keep every ack.
  const bool failing_recovery_sync = Uniform(m.rng, 0, 19) == 0;
  if (failing_recovery_sync) {
    m.io.AddFault(FaultRule{0, OpKind::kSync, ".seg", FaultKind::kEio, false});
    ++totals.injected_errors;
  }
  m.in_recovery = true;
  RecoveryReport report;
  auto opened = Log::Open(OptionsFor(m, threaded), &report);
  m.in_recovery = false;
  if (opened.ok()) {
    std::unique_ptr<Log> log = std::move(opened).value();
    ++totals.recoveries;
    if (report.torn_tail) ++totals.torn_tails;
    Verify(m, *log, totals);
    if (::testing::Test::HasFatalFailure()) return;
    if (!m.io.crashed() && Uniform(m.rng, 0, 4) == 0) {
      // Recovery is idempotent: closing and recovering again gives the same records — unless
      // the armed crash strikes during that second recovery, which then counts as one.
      const auto durable = log->durable_lsn();
      log.reset();
      m.in_recovery = true;
      auto again = Log::Open(OptionsFor(m, threaded));
      m.in_recovery = false;
      if (again.ok()) {
        EXPECT_EQ((*again)->durable_lsn(), durable);
        log = std::move(again).value();
        Verify(m, *log, totals);
        if (::testing::Test::HasFatalFailure()) return;
      } else {
        ASSERT_TRUE(m.io.crashed()) << "second recovery failed: " << again.status().ToString();
      }
    }
    if (log != nullptr && !m.io.crashed()) {
      if (m.crash_at <= m.io.operations()) ArmCrash(m, Uniform(m.rng, 1, 80));
      Work(m, *log, totals, threaded);
    }
    log.reset();  // a crashed log's destructor must not hang or acknowledge anything
  } else if (!m.io.crashed()) {
    ASSERT_TRUE(failing_recovery_sync && opened.status().code() == base::StatusCode::kIoError)
        << "recovery failed without a crash: " << opened.status().ToString();
  }
  if (m.io.crashed()) {
    ++totals.crash_points;
    ++totals.sites[m.crash_site];
  }
  // A process crash keeps the page cache — including, after a failed fdatasync, pages that
  // look clean but never reached the disk: recovery must make those durable before use.
  m.io.ClearFaults();
  if (Uniform(m.rng, 0, 2) == 0) {
    m.io.RestartProcess();
    ++totals.process_crashes;
  } else {
    CrashModel model;
    model.lose_write = std::uniform_real_distribution<double>(0, 0.6)(m.rng);
    model.tear_write = std::uniform_real_distribution<double>(0, 0.4)(m.rng);
    m.io.Restart(m.rng, model);
  }
  m.crash_at = 0;
}

Totals RunCrashLoop(std::uint64_t seed, std::uint64_t target, bool threaded) {
  Totals totals;
  std::mt19937_64 seeds(seed);
  std::vector<std::unique_ptr<Machine>> machines;
  for (int i = 0; i < 8; ++i) machines.push_back(std::make_unique<Machine>(seeds()));
  for (auto& m : machines) {
    Machine* raw = m.get();
    m->io.SetObserver([raw](std::uint64_t n, OpKind kind, const std::string& path) {
      if (n == raw->crash_at) raw->crash_site = SiteOf(*raw, kind, path);
    });
  }
  for (std::uint64_t round = 0; totals.crash_points < target && round < 100 * target; ++round) {
    Cycle(*machines[round % machines.size()], totals, threaded);
    if (::testing::Test::HasFatalFailure()) break;
  }
  std::string sites;
  for (const auto& [site, n] : totals.sites) sites += " " + site + "=" + std::to_string(n);
  std::printf(
      "%s: crash points %llu (process crashes %llu), recoveries %llu, torn tails %llu, "
      "injected I/O errors %llu, full disks %llu, acknowledged LSNs checked %llu; "
      "sites:%s\n",
      threaded ? "threaded" : "manual", static_cast<unsigned long long>(totals.crash_points),
      static_cast<unsigned long long>(totals.process_crashes),
      static_cast<unsigned long long>(totals.recoveries),
      static_cast<unsigned long long>(totals.torn_tails),
      static_cast<unsigned long long>(totals.injected_errors),
      static_cast<unsigned long long>(totals.disk_full),
      static_cast<unsigned long long>(totals.acked_checked), sites.c_str());
  return totals;
}

TEST(LogCrash, EveryAcknowledgedAppendSurvivesAndNothingIsHalfPresent) {
  const std::uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(testing::SeedTrace(seed));
  const auto target = static_cast<std::uint64_t>(1000 * testing::TestScale());
  Totals totals = RunCrashLoop(seed, target, /*threaded=*/false);
  if (HasFatalFailure()) return;
  EXPECT_GE(totals.crash_points, target);
  // The loop must really have reached the places it claims to test.
  for (const char* site :
       {"before batch write", "between write and sync", "roll", "retention", "recovery"}) {
    EXPECT_GT(totals.sites[site], 0u) << "no crash at: " << site;
  }
  EXPECT_GT(totals.torn_tails, 0u);
  EXPECT_GT(totals.process_crashes, 0u);
  EXPECT_GT(totals.disk_full, 0u);
  EXPECT_GT(totals.acked_checked, 0u);
}

TEST(LogCrash, TheWriterAndPreparerThreadsSurviveCrashesToo) {
  const std::uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(testing::SeedTrace(seed));
  const auto target = static_cast<std::uint64_t>(300 * testing::TestScale());
  Totals totals = RunCrashLoop(seed, target, /*threaded=*/true);
  if (HasFatalFailure()) return;
  EXPECT_GE(totals.crash_points, target);
  EXPECT_GT(totals.sites["between write and sync"], 0u);
  EXPECT_GT(totals.acked_checked, 0u);
}

}  // namespace
}  // namespace lockstep::storage
