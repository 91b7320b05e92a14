#include "bench/network_workloads.h"

#include <fmt/format.h>

#include <atomic>
#include <boost/asio.hpp>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "clients/client.h"
#include "clients/consumer.h"
#include "clients/producer.h"
#include "engine/engine.h"
#include "protocol/server/server.h"

namespace lockstep::bench {

namespace {

using base::Lsn;
using base::MonotonicNs;
using base::Offset;
using base::PartitionId;
using base::Result;
using base::Status;
namespace asio = boost::asio;
using asio::ip::tcp;

// The server the workload talks to: --broker, or one started here over the bench's folder.
class Broker {
 public:
  static base::Result<std::unique_ptr<Broker>> Start(const NetworkWorkload& w) {
    auto b = std::unique_ptr<Broker>(new Broker());
    if (!w.broker.empty()) {
      b->address_ = w.broker;
      return b;
    }
    engine::EngineOptions o;
    o.dir = w.dir;
    o.io = w.io;
    o.log = w.log;
    LOCKSTEP_ASSIGN_OR_RETURN(b->engine_, engine::Engine::Open(o));
    server::ServerOptions so;
    so.port = 0;
    LOCKSTEP_ASSIGN_OR_RETURN(b->server_, server::Server::Start(*b->engine_, so));
    b->address_ = fmt::format("127.0.0.1:{}", b->server_->port());
    return b;
  }
  ~Broker() {
    server_.reset();
    engine_.reset();
  }
  base::Result<std::unique_ptr<client::Client>> Connect() const {
    client::ClientOptions o;
    o.broker = address_;
    return client::Client::Connect(o);
  }

 private:
  Broker() = default;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<server::Server> server_;
  std::string address_;
};

// A fresh topic name per run, so a shared --broker never mixes runs: a short prefix and the low
// 40 bits of the clock in hex (they repeat every 18 minutes, to the nanosecond). At most 15
// characters, as the embedded workloads' names: a longer one would cost the remote run a heap
// allocation per copy of the name (client transactions, the server's conversion) that the
// embedded run does not pay.
std::string TopicName(const char* what) {
  return fmt::format("{}{:010x}", what,
                     static_cast<std::uint64_t>(MonotonicNs()) & ((1ull << 40) - 1));
}

struct TimeWindow {
  std::int64_t start;
  std::int64_t end;
  TimeWindow(const NetworkWorkload& w)
      : start(MonotonicNs() + static_cast<std::int64_t>(w.warmup_seconds * 1e9)),
        end(start + static_cast<std::int64_t>(w.seconds * 1e9)) {}
  bool Counts(std::int64_t t) const { return t >= start && t <= end; }
};

}  // namespace

base::Result<NetworkRow> RunTcp(const NetworkWorkload& w) {
  constexpr std::size_t kWrite = 1 << 20;
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  std::atomic<std::uint64_t> received{0};
  std::thread reader([&] {
    tcp::socket s = acceptor.accept();
    std::vector<char> buffer(kWrite);
    boost::system::error_code ec;
    while (!ec) received += s.read_some(asio::buffer(buffer), ec);
  });
  tcp::socket s(io);
  s.connect(acceptor.local_endpoint());
  std::vector<char> chunk(kWrite, 'x');
  TimeWindow window(w);
  NetworkRow row;
  row.payload_bytes_per_op = kWrite;
  for (std::int64_t now = MonotonicNs(); now < window.end; now = MonotonicNs()) {
    asio::write(s, asio::buffer(chunk));
    const std::int64_t done = MonotonicNs();
    if (window.Counts(now)) {
      ++row.ops;
      row.latency.RecordNs(done - now);
    }
  }
  row.seconds = w.seconds;
  s.shutdown(tcp::socket::shutdown_both);
  s.close();
  reader.join();
  return row;
}

base::Result<NetworkRow> RunProduce(const NetworkWorkload& w) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto broker, Broker::Start(w));
  LOCKSTEP_ASSIGN_OR_RETURN(auto client, broker->Connect());
  const std::string topic = TopicName("prod");
  LOCKSTEP_RETURN_IF_ERROR(client->CreateTopic(topic, 16));
  LOCKSTEP_ASSIGN_OR_RETURN(auto producer, client::Producer::Create(*client));
  const std::string payload(w.record_bytes, 'p');
  TimeWindow window(w);
  NetworkRow row;
  row.payload_bytes_per_op = w.record_bytes;
  std::mutex mu;  // delivery callbacks run on the client's thread; the row is read at the end
  Status failed = Status::Ok();
  for (std::int64_t now = MonotonicNs(); now < window.end; now = MonotonicNs()) {
    client::EventAppend e;
    e.topic = topic;
    e.payload = payload;
    LOCKSTEP_RETURN_IF_ERROR(
        producer->Send(std::move(e), [&, sent = now](Result<client::EventPosition> r) {
          const std::int64_t at = MonotonicNs();
          std::lock_guard lock(mu);
          if (!r.ok()) {
            if (failed.ok()) failed = r.status();
            return;
          }
          if (window.Counts(at)) {
            ++row.ops;
            row.latency.RecordNs(at - sent);
          }
        }));
  }
  LOCKSTEP_RETURN_IF_ERROR(producer->Flush());
  std::lock_guard lock(mu);
  LOCKSTEP_RETURN_IF_ERROR(failed);
  row.seconds = w.seconds;
  return row;
}

base::Result<NetworkRow> RunConsume(const NetworkWorkload& w) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto broker, Broker::Start(w));
  LOCKSTEP_ASSIGN_OR_RETURN(auto client, broker->Connect());
  const std::string topic = TopicName("cons");
  constexpr std::uint32_t kPartitions = 4;
  LOCKSTEP_RETURN_IF_ERROR(client->CreateTopic(topic, kPartitions));
  // Write first: events already durable, so the consumer alone is measured. About 256 MiB, or
  // what --seconds of producing gives, whichever is less.
  const std::uint64_t want_events =
      std::max<std::uint64_t>(1000, (256ull << 20) / std::max<std::uint32_t>(w.record_bytes, 1));
  {
    LOCKSTEP_ASSIGN_OR_RETURN(auto producer, client::Producer::Create(*client));
    const std::string payload(w.record_bytes, 'c');
    const std::int64_t stop = MonotonicNs() + static_cast<std::int64_t>(w.seconds * 2e9);
    for (std::uint64_t i = 0; i < want_events && MonotonicNs() < stop; ++i) {
      client::EventAppend e;
      e.topic = topic;
      e.payload = payload;
      LOCKSTEP_RETURN_IF_ERROR(producer->Send(std::move(e)));
    }
    LOCKSTEP_RETURN_IF_ERROR(producer->Flush());
  }
  std::uint64_t total = 0;
  LOCKSTEP_ASSIGN_OR_RETURN(auto topics, client->ListTopics());
  for (const auto& t : topics) {
    if (t.name != topic) continue;
    for (Offset end : t.end_offsets) total += end.value();
  }
  client::ConsumerOptions co;
  co.max_wait = std::chrono::milliseconds(100);
  co.fetch_max_bytes = 4 << 20;
  co.fetch_max_events = 10'000;
  LOCKSTEP_ASSIGN_OR_RETURN(auto consumer, client::Consumer::Create(*client, co));
  LOCKSTEP_RETURN_IF_ERROR(consumer->Assign(topic));
  NetworkRow row;
  row.payload_bytes_per_op = w.record_bytes;
  // Whole passes over the events, from the beginning each time, until --seconds have gone by
  // (at least one): a single pass lasts a tenth of a second, too short to measure steadily.
  const std::int64_t start = MonotonicNs();
  const std::int64_t until = start + static_cast<std::int64_t>(w.seconds * 1e9);
  std::uint64_t bytes = 0;
  do {
    if (row.ops > 0) {
      for (std::uint32_t p = 0; p < kPartitions; ++p) {
        LOCKSTEP_RETURN_IF_ERROR(consumer->Seek(topic, PartitionId(p), Offset(0)));
      }
    }
    for (std::uint64_t consumed = 0; consumed < total;) {
      const std::int64_t before = MonotonicNs();
      LOCKSTEP_ASSIGN_OR_RETURN(auto batch, consumer->PollBatch(std::chrono::milliseconds(1000)));
      if (batch.empty()) return base::Internal("the consumer stopped short of the end");
      consumed += batch.size();
      for (client::ConsumedEventRef e : batch) bytes += e.payload().size();
      row.latency.RecordNs(MonotonicNs() - before);  // per PollBatch()
    }
    row.ops += total;
  } while (MonotonicNs() < until);
  row.seconds = static_cast<double>(MonotonicNs() - start) / 1e9;
  row.payload_bytes_per_op = static_cast<double>(bytes) / static_cast<double>(row.ops);
  return row;
}

base::Result<NetworkRow> RunEndToEnd(const NetworkWorkload& w) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto broker, Broker::Start(w));
  LOCKSTEP_ASSIGN_OR_RETURN(auto producer_client, broker->Connect());
  LOCKSTEP_ASSIGN_OR_RETURN(auto consumer_client, broker->Connect());
  const std::string topic = TopicName("e2e");
  LOCKSTEP_RETURN_IF_ERROR(producer_client->CreateTopic(topic, 1));
  const double total_seconds = w.warmup_seconds + w.seconds;
  const auto count = static_cast<std::size_t>(total_seconds * w.rate) + 1;
  std::vector<std::atomic<std::int64_t>> sent(count), acked(count), received(count);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> seen{0};
  Status consumer_failed = Status::Ok();
  client::ConsumerOptions co;
  co.max_wait = std::chrono::milliseconds(200);
  co.reset = client::ResetPolicy::kEarliest;
  LOCKSTEP_ASSIGN_OR_RETURN(auto consumer, client::Consumer::Create(*consumer_client, co));
  LOCKSTEP_RETURN_IF_ERROR(consumer->Assign(topic));
  std::thread reader([&] {
    while (!stop.load() || seen.load() < count) {
      auto batch = consumer->Poll(std::chrono::milliseconds(200));
      const std::int64_t now = MonotonicNs();
      if (!batch.ok()) {
        consumer_failed = batch.status();
        return;
      }
      for (const auto& e : *batch) {
        const std::size_t i = std::stoul(e.payload.substr(0, e.payload.find(' ')));
        if (i < count) received[i] = now;
        ++seen;
      }
      if (stop.load() && batch->empty()) return;
    }
  });
  const std::string pad(w.record_bytes > 16 ? w.record_bytes - 16 : 0, 'e');
  const std::int64_t begin = MonotonicNs();
  std::atomic<std::size_t> answered{0};
  Status producer_failed = Status::Ok();
  std::mutex mu;
  for (std::size_t i = 0; i < count; ++i) {
    // A steady rate: event i leaves at begin + i / rate.
    const std::int64_t due =
        begin + static_cast<std::int64_t>(1e9 * static_cast<double>(i) / w.rate);
    std::this_thread::sleep_until(
        std::chrono::steady_clock::time_point(std::chrono::nanoseconds(due)));
    client::EventAppend e;
    e.topic = topic;
    e.partition = PartitionId(0);
    e.payload = std::to_string(i) + " " + pad;
    sent[i] = MonotonicNs();
    producer_client->Commit(client::Transaction().Append(std::move(e)),
                            [&, i](Result<client::CommitResult> r) {
                              acked[i] = MonotonicNs();
                              if (!r.ok()) {
                                std::lock_guard lock(mu);
                                producer_failed = r.status();
                              }
                              ++answered;
                            });
  }
  while (answered.load() < count) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  for (int i = 0; i < 5000 && seen.load() < count; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  stop = true;
  reader.join();
  LOCKSTEP_RETURN_IF_ERROR(producer_failed);
  LOCKSTEP_RETURN_IF_ERROR(consumer_failed);
  NetworkRow row;
  row.payload_bytes_per_op = w.record_bytes;
  const auto warm = static_cast<std::size_t>(w.warmup_seconds * w.rate);
  for (std::size_t i = warm; i < count; ++i) {
    if (received[i] == 0) return base::Internal(fmt::format("event {} never arrived", i));
    ++row.ops;
    // An event can reach the consumer before its producer hears the acknowledgement: 0 then.
    row.latency.RecordNs(std::max<std::int64_t>(0, received[i] - acked[i]));
    row.commit_latency.RecordNs(acked[i] - sent[i]);
  }
  row.seconds = w.seconds;
  return row;
}

base::Result<NetworkRow> RunTransferRemote(const NetworkWorkload& w) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto broker, Broker::Start(w));
  LOCKSTEP_ASSIGN_OR_RETURN(auto client, broker->Connect());
  const std::string table = TopicName("bal");
  const std::string topic = TopicName("xfer");
  LOCKSTEP_RETURN_IF_ERROR(client->CreateTable(table));
  LOCKSTEP_RETURN_IF_ERROR(client->CreateTopic(topic, 16));
  auto key = [](std::uint32_t i) { return fmt::format("acct{:08}", i); };
  for (std::uint32_t first = 0; first < w.accounts; first += 1000) {
    client::Transaction load;
    for (std::uint32_t i = first; i < std::min(w.accounts, first + 1000); ++i) {
      load.Put(table, key(i), "1000000");
    }
    LOCKSTEP_RETURN_IF_ERROR(client->Commit(std::move(load)).status());
  }
  struct Slot {
    std::mt19937_64 rng;
    std::int64_t began = 0;
    std::uint64_t conflicts = 0;
    std::string from, to;
    std::optional<client::Row> a, b;
  };
  std::vector<Slot> slots(w.outstanding);
  for (std::uint32_t i = 0; i < w.outstanding; ++i) slots[i].rng.seed(i + 1);
  TimeWindow window(w);
  std::mutex mu;
  NetworkRow row;
  row.payload_bytes_per_op = w.record_bytes;
  Status failed = Status::Ok();
  std::atomic<std::uint32_t> in_flight{w.outstanding};
  const std::string payload(w.record_bytes, 'x');
  // Callbacks run on the client's one network thread: a slot is touched by one at a time.
  std::function<void(std::uint32_t)> attempt, start;
  auto fail = [&](const Status& s) {
    std::lock_guard lock(mu);
    if (failed.ok()) failed = s;
    in_flight.fetch_sub(1);
  };
  auto commit = [&](std::uint32_t i) {
    Slot& s = slots[i];
    const long amount = static_cast<long>(s.rng() % 100);
    client::EventAppend e;
    e.topic = topic;
    e.key = s.from;
    e.type = "TransferCompleted";
    e.payload = payload;
    client::Transaction txn;
    txn.RequireVersion(table, s.from, s.a->version)
        .RequireVersion(table, s.to, s.b->version)
        .Put(table, s.from, std::to_string(std::stol(s.a->value) - amount))
        .Put(table, s.to, std::to_string(std::stol(s.b->value) + amount))
        .Append(std::move(e));
    client->Commit(std::move(txn), [&, i](Result<client::CommitResult> r) {
      Slot& slot = slots[i];
      if (r.status().code() == base::StatusCode::kConflict) {
        ++slot.conflicts;
        return attempt(i);
      }
      if (!r.ok()) return fail(r.status());
      const std::int64_t now = MonotonicNs();
      {
        std::lock_guard lock(mu);
        if (window.Counts(now)) {
          ++row.ops;
          row.conflicts += slot.conflicts;
          row.latency.RecordNs(now - slot.began);
        }
      }
      if (now < window.end) return start(i);
      in_flight.fetch_sub(1);
    });
  };
  attempt = [&](std::uint32_t i) {
    Slot& s = slots[i];
    const auto from = static_cast<std::uint32_t>(s.rng() % w.accounts);
    auto to = static_cast<std::uint32_t>(s.rng() % (w.accounts - 1));
    if (to >= from) ++to;
    s.from = key(from);
    s.to = key(to);
    // Both balances in one round trip, read at one snapshot.
    client->MultiGet(table, {s.from, s.to}, Lsn(), [&, i](Result<client::MultiGetResult> r) {
      Slot& slot = slots[i];
      if (!r.ok() || !r->rows[0] || !r->rows[1]) {
        return fail(r.ok() ? base::Internal("an account is missing") : r.status());
      }
      slot.a = std::move(*r->rows[0]);
      slot.b = std::move(*r->rows[1]);
      commit(i);
    });
  };
  start = [&](std::uint32_t i) {
    slots[i].began = MonotonicNs();
    slots[i].conflicts = 0;
    attempt(i);
  };
  for (std::uint32_t i = 0; i < w.outstanding; ++i) start(i);
  std::this_thread::sleep_until(
      std::chrono::steady_clock::time_point(std::chrono::nanoseconds(window.end)));
  while (in_flight.load() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::lock_guard lock(mu);
  LOCKSTEP_RETURN_IF_ERROR(failed);
  row.seconds = w.seconds;
  return row;
}

}  // namespace lockstep::bench
