// Proves lockstepd as a process: it prints "listening on HOST:PORT" once it serves, stops with
// exit 0 on SIGTERM after answering what is in flight, refuses a data directory another server
// holds, and after SIGKILL at any moment loses nothing it acknowledged — a client whose
// connection died mid-stream retries with the same idempotency keys and every commit is there
// exactly once; consume-transform-produce workers in a consumer group, whose members the restart
// forgets, rejoin and still count every input exactly once.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <set>
#include <span>
#include <string>
#include <thread>

#include "base/event_record.h"
#include "clients/client.h"
#include "clients/consumer.h"
#include "tests/integration/daemon.h"
#include "tests/testing/temp_dir.h"

namespace lockstep {
namespace {

using integration::Daemon;

using namespace std::chrono_literals;
using base::Offset;
using base::PartitionId;
using base::Result;
using base::StatusCode;

std::unique_ptr<client::Client> Connect(std::uint16_t port,
                                        std::chrono::milliseconds deadline = 10s) {
  client::ClientOptions o;
  o.broker = "127.0.0.1:" + std::to_string(port);
  o.retry_deadline = deadline;
  auto c = client::Client::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c).value() : nullptr;
}

TEST(Lockstepd, ServesThenStopsOnSigtermWithExitZero) {
  testing::TempDir dir;
  Daemon d(dir.Sub("data"));
  const std::uint16_t port = d.WaitListening();
  ASSERT_NE(port, 0);
  auto c = Connect(port);
  ASSERT_TRUE(c->CreateTable("t").ok());
  ASSERT_TRUE(c->Commit(client::Transaction().Put("t", "k", "v")).ok());
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  // The same directory, a new process: the data is there.
  Daemon again(dir.Sub("data"));
  auto c2 = Connect(again.WaitListening());
  EXPECT_EQ(c2->Get("t", "k")->value().value, "v");
}

// SIGTERM with work in flight: a parked long-poll is answered at once (not at its 30 s
// timeout), every commit the server had read is answered OK, the exit status is 0, and after a
// restart every one of them is there.
TEST(Lockstepd, SigtermAnswersWhatIsInFlightThenExitsZero) {
  testing::TempDir dir;
  Daemon d(dir.Sub("data"));
  const std::uint16_t port = d.WaitListening();
  ASSERT_NE(port, 0);
  auto waiter = Connect(port, 30s);
  auto writer = Connect(port, 30s);
  ASSERT_TRUE(writer->CreateTopic("quiet", 1).ok());
  ASSERT_TRUE(writer->CreateTable("rows").ok());
  client::FetchOptions wait;
  wait.max_wait = 30s;
  auto parked = std::async(std::launch::async,
                           [&] { return waiter->Fetch("quiet", PartitionId(0), Offset(0), wait); });
  // Enough that the engine is still syncing some when the signal lands.
  constexpr int kCommits = 2000;
  const std::string value(1000, 'v');
  std::vector<std::future<Result<client::CommitResult>>> acks;
  for (int i = 0; i < kCommits; ++i) {
    acks.push_back(
        writer->CommitAsync(client::Transaction().Put("rows", "r" + std::to_string(i), value)));
  }
  // Answered in order on the connection after the server read every commit before it (the
  // commits wait for their sync; the stats request is answered at once): the commits are in
  // flight, or answered, when the signal comes.
  ASSERT_TRUE(writer->Stats().ok());
  ASSERT_EQ(parked.wait_for(0ms), std::future_status::timeout) << "the fetch was answered";
  const auto signalled = std::chrono::steady_clock::now();
  EXPECT_EQ(d.Stop(SIGTERM), 0);
  auto fetched = parked.get();
  ASSERT_TRUE(fetched.ok()) << fetched.status().ToString();
  EXPECT_EQ(fetched->events, 0u);
  EXPECT_LT(std::chrono::steady_clock::now() - signalled, 10s) << "answered by its timeout";
  for (int i = 0; i < kCommits; ++i) {
    auto r = acks[i].get();
    EXPECT_TRUE(r.ok()) << "commit " << i << ": " << r.status().ToString();
  }
  Daemon again(dir.Sub("data"));
  auto reader = Connect(again.WaitListening());
  auto rows = reader->Scan("rows", {.limit = kCommits + 10});
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  EXPECT_EQ(rows->size(), static_cast<std::size_t>(kCommits));
}

TEST(Lockstepd, RefusesADataDirectoryAnotherServerHolds) {
  testing::TempDir dir;
  Daemon first(dir.Sub("data"));
  ASSERT_NE(first.WaitListening(), 0);
  Daemon second(dir.Sub("data"));
  EXPECT_EQ(second.FirstLine(), "");  // it never listened
  EXPECT_EQ(second.Wait(), 1);
}

TEST(Lockstepd, SigkillLosesNothingAcknowledgedAndRetriesCommitOnce) {
  testing::TempDir dir;
  auto d = std::make_unique<Daemon>(dir.Sub("data"));
  const std::uint16_t port = d->WaitListening();
  ASSERT_NE(port, 0);
  auto setup = Connect(port);
  ASSERT_TRUE(setup->CreateTable("rows").ok());
  ASSERT_TRUE(setup->CreateTopic("log", 1).ok());
  setup.reset();
  // A stream of commits, each with its own idempotency key; the server dies in the middle.
  auto c = Connect(port, 30s);
  constexpr int kCommits = 2000;
  std::vector<std::future<Result<client::CommitResult>>> acks;
  for (int i = 0; i < kCommits; ++i) {
    client::EventAppend event;
    event.topic = "log";
    event.payload = std::to_string(i);
    acks.push_back(c->CommitAsync(client::Transaction()
                                      .IdempotencyKey("row-" + std::to_string(i))
                                      .Put("rows", "r" + std::to_string(i), std::to_string(i))
                                      .Append(std::move(event))));
    if (i == kCommits / 2) {
      EXPECT_EQ(d->Stop(SIGKILL), -1);
      d = std::make_unique<Daemon>(dir.Sub("data"), port);  // back on the same port
      ASSERT_EQ(d->WaitListening(), port);
    }
  }
  int acknowledged = 0;
  for (auto& a : acks) {
    auto r = a.get();
    if (r.ok())
      ++acknowledged;
    else
      EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  }
  // Commits with keys are resent after a reconnect: all of them get through.
  EXPECT_EQ(acknowledged, kCommits);
  EXPECT_GE(c->reconnects(), 1u);
  auto rows = c->Scan("rows", {.limit = kCommits + 10});
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  EXPECT_EQ(rows->size(), static_cast<std::size_t>(kCommits));  // each exactly once
  for (const auto& row : *rows) EXPECT_EQ("r" + row.value, row.key);
  // A commit applied twice would show as a second event: there are exactly kCommits.
  std::set<std::string> payloads;
  std::uint64_t events = 0;
  Offset next(0);
  for (;;) {
    auto f = c->Fetch("log", PartitionId(0), next);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    if (f->events == 0) break;
    events += f->events;
    std::span<const std::byte> rest(f->records);
    while (!rest.empty()) {
      auto ev = base::DecodeEvent(rest);
      ASSERT_TRUE(ev.ok());
      payloads.emplace(reinterpret_cast<const char*>(ev->payload().data()), ev->payload().size());
      rest = rest.subspan(ev->record().size());
    }
    next = f->next_offset;
  }
  EXPECT_EQ(events, static_cast<std::uint64_t>(kCommits));
  EXPECT_EQ(payloads.size(), static_cast<std::size_t>(kCommits));
}

std::vector<std::string> Payloads(const std::vector<std::byte>& records) {
  std::vector<std::string> out;
  std::span<const std::byte> rest(records);
  while (!rest.empty()) {
    auto ev = base::DecodeEvent(rest);
    EXPECT_TRUE(ev.ok()) << ev.status().ToString();
    if (!ev.ok()) break;
    out.emplace_back(reinterpret_cast<const char*>(ev->payload().data()), ev->payload().size());
    rest = rest.subspan(ev->record().size());
  }
  return out;
}

#ifdef LOCKSTEP_CLI_PATH  // backup.sh runs `lockstep verify`: not in the ThreadSanitizer build
// tools/backup.sh while commits flow, with small segments, constant checkpoints and retention
// deleting segments underneath: each copy opens, and holds exactly a prefix of the commits that
// includes every one acknowledged before its backup began, with the topic's offsets dense.
TEST(Lockstepd, BackupWhileRunningHoldsEveryCommitAcknowledgedBeforeIt) {
  testing::TempDir dir;
  const std::vector<std::string> busy = {
      "--segment-bytes",          "262144", "--batch-bytes-max",     "65536",
      "--checkpoint-every-bytes", "131072", "--checkpoint-every-ms", "100"};
  auto d = std::make_unique<Daemon>(dir.Sub("data"), 0, busy);
  const std::uint16_t port = d->WaitListening();
  ASSERT_NE(port, 0);
  auto c = Connect(port);
  ASSERT_TRUE(c->CreateTable("rows").ok());
  // Retention of 300 ms: segments keep being deleted while the backups run.
  ASSERT_TRUE(c->CreateTopic("log", 1, 300).ok());

  std::atomic<int> acknowledged{0};
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    const std::string value(1000, 'v');
    for (int i = 0; !stop.load() && i < 1'000'000; ++i) {
      client::EventAppend event;
      event.topic = "log";
      event.payload = std::to_string(i);
      auto r = c->Commit(client::Transaction()
                             .Put("rows", fmt::format("r{:08}", i), value)
                             .Append(std::move(event)));
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      acknowledged.store(i + 1);
    }
  });
  std::vector<std::pair<std::string, int>> backups;  // destination, acknowledged before it
  for (int b = 0; b < 3; ++b) {
    std::this_thread::sleep_for(700ms);
    const std::string dest = dir.Sub("backup-" + std::to_string(b));
    const int before = acknowledged.load();
    // Pauses between the script's steps let the server roll, checkpoint and delete segments
    // in between (the races the order of the steps is for).
    const std::string command = std::string("LOCKSTEP_BACKUP_PAUSE_S=0.4 LOCKSTEP=") +
                                LOCKSTEP_CLI_PATH + " " + LOCKSTEP_BACKUP_SCRIPT + " " +
                                dir.Sub("data") + " " + dest + " > /dev/null";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    backups.emplace_back(dest, before);
  }
  std::this_thread::sleep_for(300ms);
  stop = true;
  writer.join();
  ASSERT_GT(acknowledged.load(), backups.back().second);
  c.reset();
  EXPECT_EQ(d->Stop(SIGTERM), 0);

  for (const auto& [dest, before] : backups) {
    SCOPED_TRACE(dest);
    Daemon restored(dest);
    auto r = Connect(restored.WaitListening());
    ASSERT_NE(r, nullptr);
    std::size_t rows = 0;  // the keys, page by page, must be r0, r1, ... without a hole
    for (std::string from;;) {
      auto page = r->Scan("rows", {.from = from, .limit = 1000});
      ASSERT_TRUE(page.ok()) << page.status().ToString();
      if (page->empty()) break;
      for (const auto& row : *page) {
        ASSERT_EQ(row.key, fmt::format("r{:08}", rows)) << "not a prefix of the commits";
        ++rows;
      }
      from = page->back().key + std::string(1, '\0');
    }
    ASSERT_GE(rows, static_cast<std::size_t>(before)) << "acknowledged commits missing";
    // Every commit appended one event: the end offset is the number of commits.
    auto end = r->ListOffset("log", PartitionId(0), client::OffsetSpec::kLatest);
    ASSERT_TRUE(end.ok()) << end.status().ToString();
    EXPECT_EQ(end->value(), rows);
  }
}

#endif  // LOCKSTEP_CLI_PATH

TEST(Lockstepd, TransformWorkersSurviveASigkillOfTheServerExactlyOnce) {
  testing::TempDir dir;
  auto d = std::make_unique<Daemon>(dir.Sub("data"));
  const std::uint16_t port = d->WaitListening();
  ASSERT_NE(port, 0);
  constexpr int kInputs = 600;
  {
    auto setup = Connect(port);
    ASSERT_TRUE(setup->CreateTopic("in", 4).ok());
    ASSERT_TRUE(setup->CreateTopic("out", 1).ok());
    for (int i = 0; i < kInputs; ++i) {
      client::EventAppend e;
      e.topic = "in";
      e.partition = PartitionId(static_cast<std::uint32_t>(i % 4));
      e.payload = std::to_string(i);
      ASSERT_TRUE(setup->Commit(client::Transaction().Append(std::move(e))).ok());
    }
  }
  std::atomic<int> done_inputs{0};
  std::atomic<bool> failed{false};
  // Once a third of the inputs are done, workers hold their next commit until the server has
  // been killed, then send it (to a dead server: it is resent across the restart). Without the
  // hold, fast workers could finish everything between two looks of the killer.
  std::atomic<bool> killed{false};
  auto worker = [&] {
    auto c = Connect(port, 30s);
    client::ConsumerOptions o;
    o.group = "doubler";
    o.session_timeout = 1000ms;
    o.max_wait = 50ms;
    o.fetch_max_events = 10;
    auto consumer = client::Consumer::Create(*c, o);
    ASSERT_TRUE(consumer.ok());
    ASSERT_TRUE((*consumer)->Subscribe({"in"}).ok());
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (done_inputs.load() < kInputs && !failed.load() &&
           std::chrono::steady_clock::now() < deadline) {
      auto batch = (*consumer)->Poll(100ms);
      if (!batch.ok()) {  // the server is restarting, or the group rebalanced: poll on
        EXPECT_TRUE(batch.status().code() == StatusCode::kUnavailable ||
                    batch.status().code() == StatusCode::kConflict)
            << batch.status().ToString();
        continue;
      }
      if (batch->empty()) continue;
      client::Transaction txn;
      for (const auto& e : *batch) {
        client::EventAppend out;
        out.topic = "out";
        out.payload = std::to_string(2 * std::stoi(e.payload));
        txn.Append(std::move(out));
      }
      for (auto& p : (*consumer)->Positions()) txn.CommitOffset(std::move(p));
      for (int i = 0; i < 2000 && done_inputs.load() >= kInputs / 3 && !killed.load(); ++i) {
        std::this_thread::sleep_for(5ms);
      }
      auto r = c->Commit(std::move(txn));  // resent with its key across the restart
      if (r.ok()) {
        done_inputs += static_cast<int>(batch->size());
      } else if (r.status().code() == StatusCode::kFailedPrecondition) {
        (void)(*consumer)->Resync();  // fenced by a rebalance: start again from the commits
      } else {
        ADD_FAILURE() << r.status().ToString();
        failed = true;
      }
    }
    (void)(*consumer)->Close();
  };
  std::thread a(worker), b(worker);
  // Kill the server once a third of the inputs are done.
  for (int i = 0; i < 3000 && done_inputs.load() < kInputs / 3; ++i)
    std::this_thread::sleep_for(5ms);
  EXPECT_LT(done_inputs.load(), kInputs);  // killed in the middle of the work
  EXPECT_EQ(d->Stop(SIGKILL), -1);
  killed = true;
  d = std::make_unique<Daemon>(dir.Sub("data"), port);
  ASSERT_EQ(d->WaitListening(), port);
  a.join();
  b.join();

  EXPECT_EQ(done_inputs.load(), kInputs);
  auto c = Connect(port);
  std::multiset<int> outputs;
  Offset next(0);
  for (;;) {
    auto f = c->Fetch("out", PartitionId(0), next);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    if (f->events == 0) break;
    for (const auto& p : Payloads(f->records)) outputs.insert(std::stoi(p));
    next = f->next_offset;
  }
  ASSERT_EQ(outputs.size(), static_cast<std::size_t>(kInputs));
  for (int i = 0; i < kInputs; ++i) EXPECT_EQ(outputs.count(2 * i), 1u) << i;
}

}  // namespace
}  // namespace lockstep
