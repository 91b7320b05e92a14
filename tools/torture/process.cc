// lockstep-torture --mode process: see process.h and docs/testing.md.
//
// Each iteration starts lockstepd with a crash armed (a named crash site after some passes, or
// a SIGKILL from the driver at a random moment), runs the workload of bank.h from concurrent
// clients until the server dies, verifies the files offline, starts it again (sometimes with a
// crash site armed inside recovery first), checks every invariant over the wire, resends what
// the clients never heard back about, and kills it. Every 25 iterations a fresh data directory.
#include "tools/torture/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "base/crash_site.h"
#include "clients/client.h"
#include "engine/verify.h"
#include "storage/io.h"
#include "tools/torture/bank.h"
#include "tools/torture/observe.h"

extern char** environ;

namespace lockstep::torture {
namespace {

using namespace std::chrono_literals;
using base::StatusCode;
using client::Client;

constexpr int kProcessIterationsPerMachine = 25;
// Small segments and frequent checkpoints, so that rolls, checkpoints and retention happen
// within the second or two an iteration runs. While the checker reads (and compares two
// recoveries), no checkpoint may move start offsets under it: then checkpoints are off.
std::vector<std::string> ServerFlags(bool checkpoints) {
  return {"--log-level",
          "warn",
          "--segment-bytes",
          "262144",
          "--batch-bytes-max",
          "65536",
          "--checkpoint-every-bytes",
          checkpoints ? "131072" : "0",
          "--checkpoint-every-ms",
          checkpoints ? "1000" : "0"};
}
// Wall-clock retention: audit events expire fast; the others slowly enough that the transform
// keeps up, so retention deletes segments only once the long-kept topics moved past them.
constexpr std::int64_t kProcessAuditRetentionMs = 2'000;
constexpr std::int64_t kProcessRetentionMs = 20'000;

// ---- The lockstepd child -----------------------------------------------------------------------

class Daemon {
 public:
  Daemon(const ProcessOptions& process, const std::string& data_dir, std::uint16_t port,
         const std::string& crash_at, bool checkpoints) {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    const std::string log = (std::filesystem::path(process.dir) / "lockstepd.log").string();
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    std::vector<std::string> args = {process.lockstepd, "--data-dir", data_dir, "--listen",
                                     fmt::format("127.0.0.1:{}", port)};
    for (auto& flag : ServerFlags(checkpoints)) args.push_back(std::move(flag));
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "LOCKSTEP_", 9) != 0) env.emplace_back(*e);  // no stray settings
    }
    if (!crash_at.empty()) env.push_back("LOCKSTEP_CRASH_AT=" + crash_at);
    if (!process.planted_bug.empty()) env.push_back("LOCKSTEP_PLANTED_BUG=" + process.planted_bug);
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    if (posix_spawn(&pid_, process.lockstepd.c_str(), &actions, nullptr, argv.data(),
                    envp.data()) != 0) {
      pid_ = -1;
    }
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    out_ = out[0];
  }
  ~Daemon() {
    Kill();
    if (out_ >= 0) ::close(out_);
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // The port from the "listening on" line, or kUnavailable saying how the process ended first.
  Result<std::uint16_t> WaitListening(std::chrono::milliseconds timeout) {
    if (pid_ < 0) return base::Unavailable("lockstepd could not be started");
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (line.empty() || line.back() != '\n') {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd p{out_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) == 0) {
        return base::DeadlineExceeded("lockstepd did not start listening in time");
      }
      char c = 0;
      if (::read(out_, &c, 1) != 1) {
        Reap(/*block=*/true);
        return base::Unavailable(fmt::format("lockstepd ended before listening ({})", How()));
      }
      line.push_back(c);
    }
    const std::string prefix = "listening on 127.0.0.1:";
    if (line.rfind(prefix, 0) != 0) {
      return base::Internal("lockstepd printed " + line + " instead of listening on");
    }
    return static_cast<std::uint16_t>(std::stoul(line.substr(prefix.size())));
  }

  // True once the process has ended (reaped).
  bool Ended() { return Reap(/*block=*/false); }
  // Killed by SIGKILL (its own crash site, or the driver's).
  bool Killed() const { return ended_ && WIFSIGNALED(status_) && WTERMSIG(status_) == SIGKILL; }
  std::string How() const {
    if (!ended_) return "running";
    if (WIFSIGNALED(status_)) return fmt::format("signal {}", WTERMSIG(status_));
    return fmt::format("exit status {}", WEXITSTATUS(status_));
  }

  void Kill() {
    if (pid_ < 0 || ended_) return;
    ::kill(pid_, SIGKILL);
    Reap(/*block=*/true);
  }

 private:
  bool Reap(bool block) {
    if (pid_ < 0) return true;
    if (ended_) return true;
    if (::waitpid(pid_, &status_, block ? 0 : WNOHANG) == pid_) ended_ = true;
    return ended_;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  int status_ = 0;
  bool ended_ = false;
};

std::int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---- The clients -------------------------------------------------------------------------------

struct Shared {
  std::mutex mu;  // guards everything below but the atomics
  Ledger ledger;
  std::vector<client::Transaction> pending;  // outcome unknown: sent again after the restart
  std::vector<std::pair<client::Transaction, std::uint64_t>> remembered;  // with their LSN
  std::string failure;
  std::atomic<std::uint64_t> next_id{0};
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> conflicts{0};
  std::atomic<std::uint64_t> transform_stalls{0};
};

// What to do with a commit's answer. Returns false when the worker should stop (server gone).
bool Answered(Shared& shared, const client::Transaction& txn,
              const Result<client::CommitResult>& got) {
  std::lock_guard lock(shared.mu);
  if (got.ok()) {
    RecordAcknowledged(shared.ledger, txn, *got, WallMs());
    if (txn.idempotency_key()) {
      if (shared.remembered.size() >= 256) shared.remembered.erase(shared.remembered.begin());
      shared.remembered.emplace_back(txn, got->lsn.value());
    }
    return true;
  }
  if (got.status().code() == StatusCode::kConflict) {
    ++shared.conflicts;
    return true;
  }
  // Unknown outcome (the server died): a client sends it again, same key, once it is back.
  if (txn.idempotency_key()) shared.pending.push_back(txn);
  return false;
}

client::ClientOptions WorkerOptions(std::uint16_t port) {
  client::ClientOptions o;
  o.broker = fmt::format("127.0.0.1:{}", port);
  o.connect_timeout = 1s;
  o.retry_deadline = 500ms;
  o.backoff_max = 100ms;
  o.client_name = "lockstep-torture";
  return o;
}

void TransferWorker(Shared& shared, std::uint16_t port, std::uint64_t seed) {
  auto c = Client::Connect(WorkerOptions(port));
  if (!c.ok()) return;
  std::mt19937_64 rng(seed);
  while (!shared.stop.load()) {
    int from = static_cast<int>(rng() % kAccounts);
    int to = static_cast<int>((static_cast<std::uint64_t>(from) + 1 + rng() % (kAccounts - 1)) %
                              kAccounts);
    auto a = (*c)->Get(kAccountsTable, AccountKey(from));
    auto b = (*c)->Get(kAccountsTable, AccountKey(to));
    if (!a.ok() || !b.ok() || !*a || !*b) return;  // the server is gone
    {
      std::lock_guard lock(shared.mu);
      shared.ledger.read_lsn =
          std::max({shared.ledger.read_lsn, (*a)->version.value(), (*b)->version.value()});
    }
    auto from_account = DecodeAccount((*a)->value);
    auto to_account = DecodeAccount((*b)->value);
    if (!from_account.ok() || !to_account.ok()) {
      std::lock_guard lock(shared.mu);
      shared.failure = "a read returned a damaged account: " + from_account.status().ToString();
      return;
    }
    Transfer t;
    t.id = ++shared.next_id;
    t.from = from;
    t.to = to;
    t.amount = from_account->balance == 0
                   ? 0
                   : static_cast<std::int64_t>(
                         1 + rng() % static_cast<std::uint64_t>(
                                         std::min<std::int64_t>(from_account->balance, 100)));
    t.from_balance = from_account->balance - t.amount;
    t.to_balance = to_account->balance + t.amount;
    client::Transaction txn;
    txn.RequireVersion(kAccountsTable, AccountKey(from), (*a)->version)
        .RequireVersion(kAccountsTable, AccountKey(to), (*b)->version)
        .Put(kAccountsTable, AccountKey(from), EncodeAccount({t.from_balance, t.id}))
        .Put(kAccountsTable, AccountKey(to), EncodeAccount({t.to_balance, t.id}));
    client::EventAppend e;
    e.topic = kTransfersTopic;
    e.key = AccountKey(from);
    e.type = "TransferCompleted";
    e.payload = EncodeTransfer(t);
    txn.Append(std::move(e));
    txn.IdempotencyKey(fmt::format("transfer-{}", t.id));
    if (!Answered(shared, txn, (*c)->Commit(txn))) return;
  }
}

void AppendWorker(Shared& shared, std::uint16_t port, std::uint64_t seed) {
  auto c = Client::Connect(WorkerOptions(port));
  if (!c.ok()) return;
  std::mt19937_64 rng(seed);
  while (!shared.stop.load()) {
    client::Transaction txn;
    if (rng() % 4 == 0) {
      client::EventAppend e;
      e.topic = kAuditTopic;
      e.partition = base::PartitionId(0);
      e.type = "Audit";
      e.payload = std::string(1000 + rng() % 3000, 'a');
      txn.Append(std::move(e));
      txn.IdempotencyKey(fmt::format("audit-{}", ++shared.next_id));
    } else {
      const std::uint64_t first = shared.next_id + 1;
      for (std::uint64_t i = 1 + rng() % 3; i > 0; --i) {
        client::EventAppend e;
        e.topic = kOrdersTopic;
        e.key = fmt::format("customer-{}", rng() % 10);
        e.type = "OrderPlaced";
        e.payload = fmt::format("order-{} {}", ++shared.next_id, std::string(rng() % 120, 'o'));
        txn.Append(std::move(e));
      }
      txn.IdempotencyKey(fmt::format("order-{}", first));
    }
    if (!Answered(shared, txn, (*c)->Commit(txn))) return;
  }
}

// The consume-transform-produce consumer: a member of the transform group; its outputs and its
// offsets commit together, under its generation.
void TransformWorker(Shared& shared, std::uint16_t port) {
  auto c = Client::Connect(WorkerOptions(port));
  if (!c.ok()) return;
  auto member = (*c)->JoinGroup(kTransformGroup, {kOrdersTopic});
  if (!member.ok()) return;
  std::uint64_t offsets[kOrdersPartitions] = {};
  auto group = (*c)->DescribeGroup(kTransformGroup);
  if (!group.ok()) return;
  for (const auto& g : group->offsets) {
    if (g.topic == kOrdersTopic) offsets[g.partition.value()] = g.offset.value();
  }
  auto heartbeat = std::chrono::steady_clock::now();
  while (!shared.stop.load()) {
    bool idle = true;
    for (std::uint32_t p = 0; p < kOrdersPartitions && !shared.stop.load(); ++p) {
      client::FetchOptions options;
      options.max_events = 16;
      auto fetched =
          (*c)->Fetch(kOrdersTopic, base::PartitionId(p), base::Offset(offsets[p]), options);
      if (!fetched.ok()) {
        if (fetched.status().code() == StatusCode::kOutOfRange) {
          ++shared.transform_stalls;  // its position expired: it cannot go on exactly once
          continue;
        }
        return;
      }
      if (fetched->events == 0) continue;
      idle = false;
      client::Transaction txn;
      base::Bytes rest(fetched->records.data(), fetched->records.size());
      while (!rest.empty()) {
        auto e = base::DecodeEvent(rest);
        if (!e.ok()) {
          std::lock_guard lock(shared.mu);
          shared.failure = "a fetched event does not decode: " + e.status().ToString();
          return;
        }
        const base::Bytes payload = e->payload();
        client::EventAppend out;
        out.topic = kDoubledTopic;
        out.partition = base::PartitionId(p);
        out.type = "OrderDoubled";
        out.payload = DoubledPayload(
            p, e->offset().value(),
            std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()));
        txn.Append(std::move(out));
        rest = rest.subspan(e->record().size());
      }
      txn.CommitOffset({kTransformGroup, member->generation, kOrdersTopic, base::PartitionId(p),
                        fetched->next_offset});
      auto got = (*c)->Commit(txn);
      if (got.ok()) {
        offsets[p] = fetched->next_offset.value();
        Answered(shared, txn, got);
      } else if (got.status().code() == StatusCode::kFailedPrecondition) {
        return;  // a newer generation: this member is fenced off
      } else {
        return;  // unknown outcome: the next member reads the committed offsets again
      }
    }
    if (std::chrono::steady_clock::now() - heartbeat > 1s) {
      auto beat = (*c)->Heartbeat(kTransformGroup, member->member_id);
      if (!beat.ok()) return;
      member->generation = beat->generation;
      heartbeat = std::chrono::steady_clock::now();
    }
    if (idle) std::this_thread::sleep_for(5ms);
  }
}

// ---- The driver --------------------------------------------------------------------------------

class ProcessMachine {
 public:
  ProcessMachine(const ProcessOptions& process, std::string data_dir, std::uint64_t seed,
                 Summary& summary, const RunOptions& options)
      : process_(process),
        data_dir_(std::move(data_dir)),
        rng_(seed),
        summary_(summary),
        verbose_(options.verbose),
        deadline_(options.iterations ? std::chrono::steady_clock::time_point::max()
                                     : options.deadline) {}

  bool Setup() {
    std::filesystem::remove_all(data_dir_);
    auto d = Start("", /*checkpoints=*/true);
    if (!d) return false;
    auto c = Connect();
    if (!c) return false;
    Status s = c->CreateTable(kAccountsTable);
    if (s.ok()) s = c->CreateTopic(kTransfersTopic, 1, kProcessRetentionMs);
    if (s.ok()) s = c->CreateTopic(kOrdersTopic, kOrdersPartitions, kProcessRetentionMs);
    if (s.ok()) s = c->CreateTopic(kDoubledTopic, kOrdersPartitions, kProcessRetentionMs);
    if (s.ok()) s = c->CreateTopic(kAuditTopic, 1, kProcessAuditRetentionMs);
    if (!s.ok()) return Infrastructure("setup: " + s.ToString());
    client::Transaction deposit;
    for (int a = 0; a < kAccounts; ++a) {
      deposit.Put(kAccountsTable, AccountKey(a), EncodeAccount({kOpeningBalance, 0}));
    }
    auto got = c->Commit(deposit);
    if (!got.ok()) return Infrastructure("setup: " + got.status().ToString());
    RecordAcknowledged(shared_.ledger, deposit, *got, WallMs());
    return true;
  }

  bool Iterate() {
    ++summary_.iterations;
    if (!RunWorkloadUntilDeath()) return false;
    // Invariant 6 on the files the dead server left (nobody holds them now).
    engine::VerifyReport report;
    auto io = storage::MakeIo();
    if (!io.ok()) return Infrastructure(io.status().ToString());
    if (Status s = engine::VerifyDataDir(**io, data_dir_, report); !s.ok()) {
      return Fail("invariant 6 (every segment and checkpoint passes the offline verifier): " +
                  s.ToString());
    }
    if (Uniform(0, 3) == 0 && !CrashInRecovery()) return false;
    auto daemon = Start("", /*checkpoints=*/false);
    if (!daemon) return false;
    Observed observed;
    if (!Observe(observed)) return false;
    if (Status s = checker_.Check(observed, shared_.ledger, WallMs()); !s.ok()) {
      return Fail(s.ToString());
    }
    summary_.acknowledged_checked += shared_.ledger.transactions;
    if (Uniform(0, 1) == 0) {
      // Invariant 5: killed right after recovery, recovered again: the same state.
      daemon->Kill();
      Crashed("SIGKILL right after recovery");
      daemon = Start("", /*checkpoints=*/false);
      if (!daemon) return false;
      Observed again;
      if (!Observe(again)) return false;
      if (!(again == observed)) {
        return Fail(
            "invariant 5 (recovery is idempotent): recovering the same files again "
            "changed " +
            FirstDifference(observed, again));
      }
    }
    ++summary_.passed;
    if (!RetryAcknowledged() || !ResendPending()) return false;
    daemon->Kill();
    Crashed("SIGKILL after the checks");
    return true;
  }

 private:
  std::uint64_t Uniform(std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng_);
  }
  bool Fail(const std::string& what) {
    ++summary_.failed;
    if (summary_.failure.empty()) summary_.failure = what;
    return false;
  }
  bool Infrastructure(const std::string& what) {
    if (summary_.infrastructure.empty()) summary_.infrastructure = what;
    return false;
  }
  void Crashed(const std::string& where) {
    ++summary_.crash_points;
    ++summary_.hits[where];
  }

  std::unique_ptr<Client> Connect() {
    client::ClientOptions o = WorkerOptions(port_);
    o.retry_deadline = 10s;
    auto c = Client::Connect(o);
    if (!c.ok()) {
      Infrastructure("cannot connect to lockstepd: " + c.status().ToString());
      return nullptr;
    }
    return std::move(c).value();
  }

  // Starts lockstepd on the machine's port (the first start picks one) and waits until it
  // listens. On failure returns null, having recorded why: a refused recovery breaks invariant 1;
  // a port someone else took is retried on a fresh one; anything else is infrastructure. With a
  // crash site armed inside recovery, a death by it is no failure: `*killed` says so.
  std::unique_ptr<Daemon> Start(const std::string& crash_at, bool checkpoints,
                                bool* killed = nullptr) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      auto d = std::make_unique<Daemon>(process_, data_dir_, port_, crash_at, checkpoints);
      auto port = d->WaitListening(60s);
      if (port.ok()) {
        port_ = *port;
        return d;
      }
      if (killed != nullptr && d->Killed()) {
        *killed = true;
        return nullptr;
      }
      const std::string last = LastLogLine();
      if (last.find("cannot open the data directory") != std::string::npos) {
        Fail(
            "invariant 1 (every acknowledged transaction is present, whole): recovery refused "
            "the files the crash left: " +
            last);
        return nullptr;
      }
      if (last.find("Address already in use") == std::string::npos) {
        Infrastructure("lockstepd did not start (" + port.status().ToString() + "): " + last);
        return nullptr;
      }
      port_ = 0;  // another process took the port while the server was down
    }
    Infrastructure("lockstepd found no free port");
    return nullptr;
  }

  std::string LastLogLine() const {
    std::FILE* f = std::fopen((std::filesystem::path(process_.dir) / "lockstepd.log").c_str(), "r");
    if (f == nullptr) return "";
    std::string line, last;
    char buffer[4096];
    while (std::fgets(buffer, sizeof buffer, f) != nullptr) {
      line = buffer;
      if (!line.empty() && line.back() == '\n') line.pop_back();
      if (!line.empty()) last = line;
    }
    std::fclose(f);
    return last;
  }

  // Recovery with a crash site armed inside it; if the site is not reached, the server is
  // killed as soon as it listens.
  bool CrashInRecovery() {
    const bool replaying = Uniform(0, 1) == 0;
    const std::string site = replaying ? "recovery.replaying" : "recovery.copy-synced";
    bool killed = false;
    auto d = Start(fmt::format("{}:{}", site, replaying ? Uniform(1, 400) : 1),
                   /*checkpoints=*/false, &killed);
    if (killed) {
      Crashed("crash site " + site);
      return true;
    }
    if (!d) return false;
    d->Kill();
    Crashed("SIGKILL right after recovery");
    return true;
  }

  // Starts lockstepd with a crash armed, runs the clients until it dies, stops them.
  bool RunWorkloadUntilDeath() {
    static constexpr std::pair<const char*, std::uint64_t> kSites[] = {
        {"log.batch-written", 300}, {"log.segment-renamed", 3},       {"checkpoint.mid-write", 3},
        {"checkpoint.written", 3},  {"retention.segment-deleted", 2},
    };
    std::string site;
    std::string crash_at;
    if (Uniform(0, 2) != 0) {
      const auto& [name, most] = kSites[Uniform(0, std::size(kSites) - 1)];
      site = name;
      crash_at = fmt::format("{}:{}", name, Uniform(1, most));
    }
    auto started = Start(crash_at, /*checkpoints=*/true);
    if (!started) return false;
    Daemon& d = *started;
    shared_.stop = false;
    std::vector<std::thread> workers;
    workers.emplace_back(TransferWorker, std::ref(shared_), port_, rng_());
    workers.emplace_back(TransferWorker, std::ref(shared_), port_, rng_());
    workers.emplace_back(AppendWorker, std::ref(shared_), port_, rng_());
    workers.emplace_back(TransformWorker, std::ref(shared_), port_);
    // A random kill: within 1.5 s. A crash site: up to 4 s to reach it, then a kill anyway.
    // Never past the run's deadline.
    const auto limit = std::min(
        deadline_, std::chrono::steady_clock::now() +
                       (site.empty() ? std::chrono::milliseconds(Uniform(50, 1500)) : 4000ms));
    while (!d.Ended() && std::chrono::steady_clock::now() < limit) {
      std::this_thread::sleep_for(5ms);
    }
    const bool died_by_itself = d.Ended();
    d.Kill();
    shared_.stop = true;
    for (auto& w : workers) w.join();
    if (died_by_itself && !d.Killed()) {
      return Fail("lockstepd ended on its own (" + d.How() +
                  ") under the workload: see lockstepd.log");
    }
    if (const std::uint64_t stalls = shared_.transform_stalls.exchange(0)) {
      summary_.hits["transform fetches below retention (stalled)"] += stalls;
    }
    Crashed(died_by_itself ? "crash site " + site
                           : (site.empty() ? "SIGKILL at a random moment"
                                           : "SIGKILL (crash site " + site + " not reached)"));
    std::lock_guard lock(shared_.mu);
    if (!shared_.failure.empty()) return Fail(shared_.failure);
    if (verbose_) {
      std::fprintf(stderr, "iteration %llu: %s, %llu acknowledged, %zu unanswered\n",
                   static_cast<unsigned long long>(summary_.iterations),
                   died_by_itself ? site.c_str() : "SIGKILL",
                   static_cast<unsigned long long>(shared_.ledger.transactions),
                   shared_.pending.size());
    }
    return true;
  }

  bool Observe(Observed& o) {
    auto c = Connect();
    if (!c) return false;
    Status s = ReadObserved<Client, client::ScanOptions, client::FetchOptions>(*c, o);
    auto stats = c->Stats();
    if (s.ok() && !stats.ok()) s = stats.status();
    if (!s.ok()) return Fail("reading the recovered server: " + s.ToString());
    o.lsn = stats->visible_lsn.value();
    return true;
  }

  // Invariant 4: remembered idempotency keys answer the original LSN and commit nothing.
  bool RetryAcknowledged() {
    auto c = Connect();
    if (!c) return false;
    auto before = c->Stats();
    if (!before.ok()) return Fail("stats: " + before.status().ToString());
    std::vector<std::pair<client::Transaction, std::uint64_t>> picks;
    {
      std::lock_guard lock(shared_.mu);
      // Only keys the log still holds are remembered (retention forgets the others).
      // The log holds at least everything after the current checkpoint, so these keys are
      // still remembered (older ones may be forgotten with the segments that held them).
      std::erase_if(shared_.remembered,
                    [&](const auto& r) { return r.second <= before->checkpoint_lsn.value(); });
      for (int i = 0; i < 3 && !shared_.remembered.empty(); ++i) {
        picks.push_back(shared_.remembered[Uniform(0, shared_.remembered.size() - 1)]);
      }
    }
    for (const auto& [txn, lsn] : picks) {
      auto got = c->Commit(txn);
      if (!got.ok())
        return Fail("a retry of an acknowledged transaction: " + got.status().ToString());
      if (got->lsn.value() != lsn) {
        return Fail(
            fmt::format("invariant 4 (an idempotent retry never commits twice): a retry "
                        "of the transaction acknowledged at LSN {} answered LSN {}",
                        lsn, got->lsn.value()));
      }
    }
    auto after = c->Stats();
    if (after.ok() && after->visible_lsn != before->visible_lsn) {
      return Fail(
          "invariant 4 (an idempotent retry never commits twice): retries of "
          "acknowledged transactions committed something");
    }
    return true;
  }

  bool ResendPending() {
    std::vector<client::Transaction> pending;
    {
      std::lock_guard lock(shared_.mu);
      pending.swap(shared_.pending);
    }
    if (pending.empty()) return true;
    auto c = Connect();
    if (!c) return false;
    for (const auto& txn : pending) {
      auto got = c->Commit(txn);
      if (!got.ok() && got.status().code() != StatusCode::kConflict) {
        return Fail("a resent transaction: " + got.status().ToString());
      }
      Answered(shared_, txn, got);
    }
    return true;
  }

  const ProcessOptions& process_;
  std::string data_dir_;
  std::mt19937_64 rng_;
  Summary& summary_;
  bool verbose_;
  std::chrono::steady_clock::time_point deadline_;
  std::uint16_t port_ = 0;  // chosen by the first start, kept across restarts
  Shared shared_;
  // The server's clock is the wall clock too; 5 s covers the time from its commit to the
  // acknowledgement and the retention check's own time.
  Checker checker_{{{kTransfersTopic, kProcessRetentionMs},
                    {kOrdersTopic, kProcessRetentionMs},
                    {kDoubledTopic, kProcessRetentionMs},
                    {kAuditTopic, kProcessAuditRetentionMs}},
                   5'000};
};

}  // namespace

Summary RunProcess(const RunOptions& options, const ProcessOptions& process) {
  Summary summary;
  std::error_code ec;
  std::filesystem::create_directories(process.dir, ec);
  if (ec) {
    summary.infrastructure = "cannot create " + process.dir + ": " + ec.message();
    return summary;
  }
  // lockstepd.log holds this run's servers only.
  if (std::FILE* log =
          std::fopen((std::filesystem::path(process.dir) / "lockstepd.log").c_str(), "w")) {
    std::fclose(log);
  }
  std::mt19937_64 seeds(options.seed);
  auto more = [&] {
    if (!summary.failure.empty() || !summary.infrastructure.empty()) return false;
    if (options.iterations) return summary.iterations < *options.iterations;
    return std::chrono::steady_clock::now() < options.deadline;
  };
  for (int m = 0; more(); ++m) {
    const std::string data_dir =
        (std::filesystem::path(process.dir) / fmt::format("machine-{}", m)).string();
    ProcessMachine machine(process, data_dir, seeds(), summary, options);
    if (!machine.Setup()) break;
    for (int i = 0; i < kProcessIterationsPerMachine && more(); ++i) {
      if (!machine.Iterate()) break;
    }
    if (summary.failure.empty() && summary.infrastructure.empty()) {
      std::filesystem::remove_all(data_dir, ec);  // kept only when something broke
    }
  }
  return summary;
}

}  // namespace lockstep::torture
