// Proves the server and the client together over loopback TCP: produce then consume, a parked
// long-poll answered as soon as a new event is durable (well before its timeout), transactions
// with conflicts and reads as of an LSN, a client that reconnects and whose queued commit is
// applied once, and the bad-input catalogue — random bytes, truncated frames, a 4 GiB length
// prefix, invalid FlatBuffers, a wrong protocol version, an unknown request type, 1,000 idle
// connections, a client that never reads its responses — after each of which the server is up,
// other clients are served, and no data is lost.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <boost/asio.hpp>
#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "base/event_record.h"
#include "clients/client.h"
#include "clients/consumer.h"
#include "clients/producer.h"
#include "engine/engine.h"
#include "protocol/server/server.h"
#include "protocol/wire/frame.h"
#include "storage/io.h"
#include "tests/testing/temp_dir.h"

namespace lockstep {
namespace {

using namespace std::chrono_literals;
using base::Offset;
using base::PartitionId;
using base::Result;
using base::Status;
using base::StatusCode;
namespace asio = boost::asio;
using asio::ip::tcp;

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto io = storage::MakeIo();
    ASSERT_TRUE(io.ok());
    io_ = std::move(io).value();
    OpenEngine();
    StartServer();
    client_ = Connect();
    ASSERT_NE(client_, nullptr);
  }
  void TearDown() override {
    client_.reset();
    server_.reset();
    engine_.reset();
  }
  void OpenEngine() {
    engine::EngineOptions o;
    o.dir = dir_.Sub("data");
    o.io = io_.get();
    auto e = engine::Engine::Open(o);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    engine_ = std::move(e).value();
  }
  void StartServer(std::uint16_t port = 0) {
    server::ServerOptions so = server_options_;
    so.port = port;
    auto s = server::Server::Start(*engine_, so);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
    port_ = server_->port();
  }
  std::unique_ptr<client::Client> Connect(std::chrono::milliseconds deadline = 5000ms) {
    client::ClientOptions o;
    o.broker = "127.0.0.1:" + std::to_string(port_);
    o.retry_deadline = deadline;
    auto c = client::Client::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(c).value() : nullptr;
  }
  static client::EventAppend Event(std::string topic, std::string payload,
                                   std::optional<std::uint32_t> partition = 0) {
    client::EventAppend e;
    e.topic = std::move(topic);
    if (partition) e.partition = PartitionId(*partition);
    e.payload = std::move(payload);
    return e;
  }
  static std::vector<std::string> Payloads(const client::FetchResult& f) {
    std::vector<std::string> out;
    std::span<const std::byte> rest(f.records);
    while (!rest.empty()) {
      auto ev = base::DecodeEvent(rest);
      EXPECT_TRUE(ev.ok()) << ev.status().ToString();
      if (!ev.ok()) break;
      const auto payload = ev->payload();
      out.emplace_back(reinterpret_cast<const char*>(payload.data()), payload.size());
      rest = rest.subspan(ev->record().size());
    }
    return out;
  }
  // The server still serves, and what was committed before is all there.
  void ExpectHealthy() {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    auto committed = c->Commit(client::Transaction().Put("t", "health", "ok"));
    ASSERT_TRUE(committed.ok()) << committed.status().ToString();
    auto rows = c->Scan("t");
    ASSERT_TRUE(rows.ok()) << rows.status().ToString();
    EXPECT_GE(rows->size(), 1u);
  }

  // A raw TCP connection for hostile input.
  tcp::socket Raw() {
    tcp::socket s(raw_io_);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
    return s;
  }
  static std::vector<std::byte> Frame(flatbuffers::FlatBufferBuilder& fbb) {
    const auto header = wire::EncodeFrameHeader(fbb.GetSize(), 0);
    std::vector<std::byte> out(header.size() + fbb.GetSize());
    std::memcpy(out.data(), header.data(), header.size());
    std::memcpy(out.data() + header.size(), fbb.GetBufferPointer(), fbb.GetSize());
    return out;
  }
  static std::vector<std::byte> Handshake(std::uint16_t major = wire::kMajorVersion) {
    flatbuffers::FlatBufferBuilder fbb;
    auto hs = wire::fb::CreateHandshakeRequest(fbb, major, 0, fbb.CreateString("test"));
    fbb.Finish(
        wire::fb::CreateRequestMessage(fbb, 1, wire::fb::Request::HandshakeRequest, hs.Union()));
    return Frame(fbb);
  }
  // Reads one response frame (or fails after 5 s): its error code, or kOk.
  static Result<StatusCode> ReadResponse(tcp::socket& s) {
    std::array<std::byte, 8> header;
    boost::system::error_code ec;
    asio::read(s, asio::buffer(header), ec);
    if (ec) return base::Unavailable(ec.message());
    auto h = wire::ParseFrameHeader(header, 1u << 30);
    if (!h.ok()) return h.status();
    std::vector<std::byte> body(h->body_bytes());
    asio::read(s, asio::buffer(body), ec);
    if (ec) return base::Unavailable(ec.message());
    auto m = wire::VerifyResponse(std::span(body.data(), h->message_bytes));
    if (!m.ok()) return m.status();
    return (*m)->error() ? wire::FromWire((*m)->error()->code()) : StatusCode::kOk;
  }
  // True once the server closed `s` (read returns EOF or an error), within 5 s.
  static bool ClosedByServer(tcp::socket& s) {
    s.non_blocking(false);
    timeval tv{5, 0};
    setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::array<char, 4096> buf;
    for (;;) {
      boost::system::error_code ec;
      s.read_some(asio::buffer(buf), ec);
      if (ec == asio::error::eof || ec == asio::error::connection_reset) return true;
      if (ec) return false;  // timed out
    }
  }

  testing::TempDir dir_;
  std::unique_ptr<storage::Io> io_;
  std::unique_ptr<engine::Engine> engine_;
  server::ServerOptions server_options_;
  std::unique_ptr<server::Server> server_;
  std::uint16_t port_ = 0;
  std::unique_ptr<client::Client> client_;
  asio::io_context raw_io_;
};

TEST_F(ServerTest, ProduceThenConsume) {
  ASSERT_TRUE(client_->CreateTopic("orders", 2).ok());
  EXPECT_EQ(client_->CreateTopic("orders", 2).code(), StatusCode::kAlreadyExists);
  std::vector<std::future<Result<client::CommitResult>>> acks;
  for (int i = 0; i < 100; ++i) {
    acks.push_back(client_->CommitAsync(
        client::Transaction().Append(Event("orders", "o" + std::to_string(i), i % 2))));
  }
  for (int i = 0; i < 100; ++i) {
    auto r = acks[i].get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->events.size(), 1u);
    EXPECT_EQ(r->events[0].partition.value(), static_cast<std::uint32_t>(i % 2));
    EXPECT_EQ(r->events[0].offset.value(), static_cast<std::uint64_t>(i / 2));
  }
  auto f = client_->Fetch("orders", PartitionId(1), Offset(0));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->events, 50u);
  EXPECT_EQ(f->next_offset.value(), 50u);
  EXPECT_EQ(f->high_watermark.value(), 50u);
  auto payloads = Payloads(*f);
  ASSERT_EQ(payloads.size(), 50u);
  EXPECT_EQ(payloads[0], "o1");
  EXPECT_EQ(payloads[49], "o99");
  // Limits, offsets, errors.
  client::FetchOptions small;
  small.max_events = 7;
  EXPECT_EQ(client_->Fetch("orders", PartitionId(0), Offset(10), small)->events, 7u);
  EXPECT_EQ(client_->Fetch("orders", PartitionId(0), Offset(51)).status().code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(client_->Fetch("nope", PartitionId(0), Offset(0)).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(client_->ListOffset("orders", PartitionId(0), client::OffsetSpec::kLatest)->value(),
            50u);
  EXPECT_EQ(client_->ListOffset("orders", PartitionId(0), client::OffsetSpec::kEarliest)->value(),
            0u);
  auto topics = client_->ListTopics();
  ASSERT_TRUE(topics.ok());
  ASSERT_EQ(topics->size(), 1u);
  EXPECT_EQ((*topics)[0].end_offsets[1].value(), 50u);
}

TEST_F(ServerTest, AParkedLongPollReturnsAsSoonAsANewEventIsDurable) {
  ASSERT_TRUE(client_->CreateTopic("ticks", 1).ok());
  client::FetchOptions wait;
  wait.max_wait = 20'000ms;
  const auto start = std::chrono::steady_clock::now();
  auto pending = std::async(
      std::launch::async, [&] { return client_->Fetch("ticks", PartitionId(0), Offset(0), wait); });
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(pending.wait_for(0ms), std::future_status::timeout) << "it did not wait";
  auto producer = Connect();
  ASSERT_TRUE(producer->Commit(client::Transaction().Append(Event("ticks", "now"))).ok());
  auto got = pending.get();
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(Payloads(*got), std::vector<std::string>{"now"});
  EXPECT_LT(waited, 10s) << "answered by its timeout, not by the event";
  // A long-poll that sees nothing returns empty at its timeout.
  wait.max_wait = 300ms;
  auto empty = client_->Fetch("ticks", PartitionId(0), Offset(1), wait);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->events, 0u);
}

TEST_F(ServerTest, TransactionsConflictsAndReadsAsOfAnLsn) {
  ASSERT_TRUE(client_->CreateTable("accounts").ok());
  ASSERT_TRUE(client_->CreateTopic("transfers", 1).ok());
  auto first = client_->Commit(client::Transaction()
                                   .RequireAbsent("accounts", "a")
                                   .Put("accounts", "a", "100")
                                   .Put("accounts", "b", "0"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto transfer = client_->Commit(client::Transaction()
                                      .RequireVersion("accounts", "a", first->lsn)
                                      .RequireVersion("accounts", "b", first->lsn)
                                      .Put("accounts", "a", "60")
                                      .Put("accounts", "b", "40")
                                      .Append(Event("transfers", "a->b 40")));
  ASSERT_TRUE(transfer.ok()) << transfer.status().ToString();
  auto stale = client_->Commit(
      client::Transaction().RequireVersion("accounts", "a", first->lsn).Put("accounts", "a", "0"));
  EXPECT_EQ(stale.status().code(), StatusCode::kConflict) << stale.status().ToString();
  EXPECT_EQ(client_->Get("accounts", "a")->value().value, "60");
  EXPECT_EQ(client_->Get("accounts", "a", first->lsn)->value().value, "100");
  EXPECT_FALSE(client_->Get("accounts", "zz")->has_value());
  auto rows = client_->Scan("accounts");
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[1].value, "40");
  auto feed = client_->Changes(transfer->lsn);
  ASSERT_TRUE(feed.ok()) << feed.status().ToString();
  ASSERT_EQ(feed->transactions.size(), 1u);
  EXPECT_EQ(feed->transactions[0].changes[0].before, "100");
  EXPECT_EQ(feed->transactions[0].events.size(), 1u);
  // An explicit idempotency key: the retry gets the original result.
  auto once = client_->Commit(client::Transaction().IdempotencyKey("k1").Put("accounts", "c", "1"));
  auto again =
      client_->Commit(client::Transaction().IdempotencyKey("k1").Put("accounts", "c", "2"));
  ASSERT_TRUE(once.ok() && again.ok());
  EXPECT_EQ(once->lsn, again->lsn);
  EXPECT_EQ(client_->Get("accounts", "c")->value().value, "1");
  // Offsets and groups.
  ASSERT_TRUE(client_->CommitOffsets({{"g", 0, "transfers", PartitionId(0), Offset(1)}}).ok());
  auto group = client_->DescribeGroup("g");
  ASSERT_TRUE(group.ok()) << group.status().ToString();
  ASSERT_EQ(group->offsets.size(), 1u);
  EXPECT_EQ(group->offsets[0].offset.value(), 1u);
  EXPECT_EQ(client_->ListGroups().value(), std::vector<std::string>{"g"});
  EXPECT_EQ(client_->GroupLag("g")->at(0).events, 0u);
  auto stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_GE(stats->connections, 1u);
  EXPECT_EQ(stats->visible_lsn, engine_->visible_lsn());
}

TEST_F(ServerTest, AClientReconnectsAndItsQueuedCommitIsAppliedOnce) {
  ASSERT_TRUE(client_->CreateTable("t").ok());
  server_.reset();  // every connection drops
  auto queued = client_->CommitAsync(client::Transaction().Put("t", "k", "v"));
  std::this_thread::sleep_for(100ms);
  StartServer(port_);  // the same port: the client's reconnect finds it
  auto r = queued.get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GE(client_->reconnects(), 1u);
  EXPECT_EQ(client_->Get("t", "k")->value().value, "v");
  EXPECT_EQ(client_->Scan("t")->size(), 1u);
}

TEST_F(ServerTest, ACallPastItsDeadlineSaysWhetherItHappened) {
  ASSERT_TRUE(client_->CreateTable("t").ok());
  auto c = Connect(300ms);
  server_.reset();
  auto r = c->Commit(client::Transaction().Put("t", "k", "v"));
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(r.status().message().find("never sent"), std::string::npos) << r.status().ToString();
}

// ---- Producer and consumer -----------------------------------------------------------------

TEST_F(ServerTest, AProducerBatchesAndDeliversInOrderAndAConsumerReadsItAll) {
  ASSERT_TRUE(client_->CreateTopic("clicks", 3).ok());
  client::ProducerOptions po;
  po.batch_events = 64;
  auto producer = client::Producer::Create(*client_, po);
  ASSERT_TRUE(producer.ok());
  constexpr int kEvents = 3000;
  std::mutex mu;
  std::vector<int> delivered;
  std::map<std::uint32_t, std::uint64_t> next_offset;
  bool in_order = true;
  for (int i = 0; i < kEvents; ++i) {
    client::EventAppend e;
    e.topic = "clicks";
    e.key = "user" + std::to_string(i % 10);  // same key, same partition, in order
    e.payload = std::to_string(i);
    ASSERT_TRUE((*producer)
                    ->Send(std::move(e),
                           [&, i](Result<client::EventPosition> r) {
                             std::lock_guard lock(mu);
                             if (!r.ok()) return;
                             delivered.push_back(i);
                             auto& n = next_offset[r->partition.value()];
                             if (r->offset.value() != n) in_order = false;
                             n = r->offset.value() + 1;
                           })
                    .ok());
  }
  ASSERT_TRUE((*producer)->Flush().ok());
  {
    std::lock_guard lock(mu);
    ASSERT_EQ(delivered.size(), static_cast<std::size_t>(kEvents));
    EXPECT_TRUE(std::is_sorted(delivered.begin(), delivered.end())) << "callbacks out of order";
    EXPECT_TRUE(in_order) << "offsets skipped or repeated";
  }
  // Fewer transactions than events: batching happened.
  EXPECT_LT(engine_->visible_lsn().value(), static_cast<std::uint64_t>(kEvents / 4));

  client::ConsumerOptions co;
  co.group = "readers";
  co.max_wait = 100ms;
  auto consumer = client::Consumer::Create(*client_, co);
  ASSERT_TRUE(consumer.ok());
  ASSERT_TRUE((*consumer)->Assign("clicks").ok());
  std::map<std::string, std::vector<int>> by_key;
  int seen = 0;
  for (int round = 0; round < 200 && seen < kEvents; ++round) {
    auto batch = (*consumer)->Poll(1000ms);
    ASSERT_TRUE(batch.ok()) << batch.status().ToString();
    for (const auto& e : *batch) {
      by_key[*e.key].push_back(std::stoi(e.payload));
      ++seen;
    }
  }
  ASSERT_EQ(seen, kEvents);
  for (const auto& [key, values] : by_key) {
    EXPECT_TRUE(std::is_sorted(values.begin(), values.end())) << key;
  }
  ASSERT_TRUE((*consumer)->Commit().ok());
  consumer->reset();
  // A new member of the group starts where the group committed: nothing is left.
  auto again = client::Consumer::Create(*client_, co);
  ASSERT_TRUE((*again)->Assign("clicks").ok());
  auto rest = (*again)->Poll(300ms);
  ASSERT_TRUE(rest.ok());
  EXPECT_TRUE(rest->empty());
  auto lag = client_->GroupLag("readers");
  ASSERT_TRUE(lag.ok());
  EXPECT_FALSE(lag->empty());
  for (const auto& l : *lag) EXPECT_EQ(l.events, 0u) << l.topic << "/" << l.partition.value();
}

TEST_F(ServerTest, AProducerSendsALoneEventAfterItsLinger) {
  ASSERT_TRUE(client_->CreateTopic("lone", 1).ok());
  client::ProducerOptions po;
  po.linger = 20ms;
  auto producer = client::Producer::Create(*client_, po);
  ASSERT_TRUE(producer.ok());
  std::promise<Result<client::EventPosition>> delivered;
  ASSERT_TRUE((*producer)
                  ->Send(Event("lone", "only"),
                         [&](Result<client::EventPosition> r) { delivered.set_value(r); })
                  .ok());
  // No Flush: the linger alone must send it.
  auto future = delivered.get_future();
  ASSERT_EQ(future.wait_for(5s), std::future_status::ready) << "the batch never left";
  EXPECT_TRUE(future.get().ok());
}

TEST_F(ServerTest, ARequestAboveTheFrameLimitIsRefusedAtOnce) {
  server_.reset();
  server_options_.max_frame_bytes = 1 << 20;
  StartServer(port_);
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->CreateTable("t").ok());
  const auto start = std::chrono::steady_clock::now();
  auto r = c->Commit(client::Transaction().Put("t", "k", std::string(2 << 20, 'v')));
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s) << "it was retried, not refused";
  EXPECT_EQ(c->reconnects(), 0u);
}

// Exactly-once consume-transform-produce: outputs and input offsets commit in one transaction.
// A consumer that dies before committing leaves neither; one fenced by a new generation cannot
// commit; in the end every input appears exactly once in the outputs.
TEST_F(ServerTest, ConsumeTransformProduceCountsEveryInputExactlyOnce) {
  ASSERT_TRUE(client_->CreateTopic("in", 1).ok());
  ASSERT_TRUE(client_->CreateTopic("out", 1).ok());
  constexpr int kInputs = 200;
  for (int i = 0; i < kInputs; ++i) {
    ASSERT_TRUE(client_->Commit(client::Transaction().Append(Event("in", std::to_string(i)))).ok());
  }
  auto process = [&](std::uint64_t generation, int max_batches, bool commit) -> Status {
    client::ConsumerOptions co;
    co.group = "doubler";
    co.generation = generation;
    co.max_wait = 50ms;
    co.fetch_max_events = 20;  // several batches, so a crash can fall between them
    auto consumer = client::Consumer::Create(*client_, co);
    LOCKSTEP_RETURN_IF_ERROR(consumer.status());
    LOCKSTEP_RETURN_IF_ERROR((*consumer)->Assign("in"));
    for (int b = 0; b < max_batches; ++b) {
      auto batch = (*consumer)->Poll(500ms);
      LOCKSTEP_RETURN_IF_ERROR(batch.status());
      if (batch->empty()) break;
      client::Transaction txn;
      for (const auto& e : *batch) {
        txn.Append(Event("out", std::to_string(2 * std::stoi(e.payload))));
      }
      for (auto& position : (*consumer)->Positions()) txn.CommitOffset(std::move(position));
      if (!commit) return Status::Ok();  // it dies here: nothing of this batch was committed
      LOCKSTEP_RETURN_IF_ERROR(client_->Commit(std::move(txn)).status());
    }
    return Status::Ok();
  };
  ASSERT_TRUE(process(0, 2, true).ok());
  ASSERT_TRUE(process(0, 1, false).ok());  // crashed after reading, before committing
  // A rebalance: the group moves to generation 1; a member still at 0 is fenced off.
  auto generation = engine_->NewGroupGeneration("doubler");
  ASSERT_TRUE(generation.ok());
  Status stale = process(0, 1, true);
  EXPECT_EQ(stale.code(), StatusCode::kFailedPrecondition) << stale.ToString();
  ASSERT_TRUE(process(*generation, 1000, true).ok());
  // Every input doubled exactly once.
  std::multiset<int> outputs;
  Offset next(0);
  for (;;) {
    auto f = client_->Fetch("out", PartitionId(0), next);
    ASSERT_TRUE(f.ok());
    if (f->events == 0) break;
    for (const auto& p : Payloads(*f)) outputs.insert(std::stoi(p));
    next = f->next_offset;
  }
  ASSERT_EQ(outputs.size(), static_cast<std::size_t>(kInputs));
  for (int i = 0; i < kInputs; ++i) EXPECT_EQ(outputs.count(2 * i), 1u) << i;
}

// ---- The bad-input catalogue ---------------------------------------------------------------

class BadInput : public ServerTest {
 protected:
  void SetUp() override {
    server_options_.max_queued_bytes = 1 << 20;  // a reader that stalls is cut off sooner
    ServerTest::SetUp();
    ASSERT_TRUE(client_->CreateTable("t").ok());
    ASSERT_TRUE(client_->Commit(client::Transaction().Put("t", "before", "x")).ok());
  }
  void TearDown() override {
    ExpectHealthy();
    EXPECT_EQ(client_->Get("t", "before")->value().value, "x");
    ServerTest::TearDown();
  }
};

TEST_F(BadInput, RandomBytes) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 20; ++round) {
    auto s = Raw();
    std::vector<std::uint8_t> junk(1 + rng() % 4096);
    for (auto& b : junk) b = static_cast<std::uint8_t>(rng());
    boost::system::error_code ec;
    asio::write(s, asio::buffer(junk), ec);
    s.shutdown(tcp::socket::shutdown_send, ec);  // so a short header does not just wait
    EXPECT_TRUE(ClosedByServer(s)) << "round " << round;
  }
}

TEST_F(BadInput, ATruncatedFrameThenAHangUp) {
  auto hs = Handshake();
  auto s = Raw();
  asio::write(s, asio::buffer(hs.data(), hs.size() - 3));
  s.close();
  std::this_thread::sleep_for(50ms);
}

TEST_F(BadInput, AFourGibLengthPrefixIsAnsweredAndClosed) {
  auto s = Raw();
  const std::array<std::uint8_t, 8> header = {0xff, 0xff, 0xff, 0xff, 0x10, 0, 0, 0};
  asio::write(s, asio::buffer(header));
  auto r = ReadResponse(s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, StatusCode::kInvalidArgument);
  EXPECT_TRUE(ClosedByServer(s));
}

TEST_F(BadInput, AValidFrameWithInvalidFlatBuffersIsAnsweredAndClosed) {
  auto s = Raw();
  std::vector<std::byte> frame(8 + 64, std::byte{0x5a});
  auto header = wire::EncodeFrameHeader(64, 0);
  std::copy(header.begin(), header.end(), frame.begin());
  asio::write(s, asio::buffer(frame));
  auto r = ReadResponse(s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, StatusCode::kInvalidArgument);
  EXPECT_TRUE(ClosedByServer(s));
}

TEST_F(BadInput, AWrongProtocolVersionIsRefusedClearly) {
  auto s = Raw();
  auto hs = Handshake(/*major=*/9);
  asio::write(s, asio::buffer(hs));
  auto r = ReadResponse(s);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, StatusCode::kFailedPrecondition);
  EXPECT_TRUE(ClosedByServer(s));
}

TEST_F(BadInput, ARequestBeforeTheHandshakeIsRefused) {
  auto s = Raw();
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(wire::fb::CreateRequestMessage(fbb, 5, wire::fb::Request::StatsRequest,
                                            wire::fb::CreateStatsRequest(fbb).Union()));
  asio::write(s, asio::buffer(Frame(fbb)));
  auto r = ReadResponse(s);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, StatusCode::kFailedPrecondition);
  EXPECT_TRUE(ClosedByServer(s));
}

TEST_F(BadInput, ARequestWithoutItsBodyIsRefusedNotDereferenced) {
  // The verifier accepts a union whose member is absent; a server that trusted the type alone
  // would read through a null pointer.
  auto s = Raw();
  flatbuffers::FlatBufferBuilder fbb;
  wire::fb::RequestMessageBuilder b(fbb);
  b.add_correlation_id(3);
  b.add_request_type(wire::fb::Request::HandshakeRequest);
  fbb.Finish(b.Finish());
  asio::write(s, asio::buffer(Frame(fbb)));
  auto r = ReadResponse(s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, StatusCode::kInvalidArgument);
  EXPECT_TRUE(ClosedByServer(s));
}

TEST_F(BadInput, AnUnknownRequestTypeIsAnsweredAndTheConnectionStays) {
  auto s = Raw();
  asio::write(s, asio::buffer(Handshake()));
  ASSERT_EQ(ReadResponse(s).value(), StatusCode::kOk);
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::fb::CreateStatsRequest(fbb);
  fbb.Finish(
      wire::fb::CreateRequestMessage(fbb, 7, static_cast<wire::fb::Request>(200), body.Union()));
  asio::write(s, asio::buffer(Frame(fbb)));
  EXPECT_EQ(ReadResponse(s).value(), StatusCode::kInvalidArgument);
  // Still served on the same connection.
  flatbuffers::FlatBufferBuilder stats;
  stats.Finish(wire::fb::CreateRequestMessage(stats, 8, wire::fb::Request::StatsRequest,
                                              wire::fb::CreateStatsRequest(stats).Union()));
  asio::write(s, asio::buffer(Frame(stats)));
  EXPECT_EQ(ReadResponse(s).value(), StatusCode::kOk);
}

TEST_F(BadInput, AThousandIdleConnections) {
  std::vector<tcp::socket> idle;
  for (int i = 0; i < 1000; ++i) idle.push_back(Raw());
  ExpectHealthy();
  for (int i = 0; i < 100 && server_->stats().connections < 1001; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GE(server_->stats().connections, 1001u);
}

TEST_F(BadInput, AClientThatNeverReadsItsResponsesIsThrottled) {
  // Responses of about 64 KiB each: the server queues at most max_queued_bytes, then stops
  // reading from this client, whose unread requests stay in the socket buffers.
  ASSERT_TRUE(client_->CreateTopic("big", 1).ok());
  const std::string payload(60'000, 'p');
  ASSERT_TRUE(client_->Commit(client::Transaction().Append(Event("big", payload))).ok());
  auto s = Raw();
  asio::write(s, asio::buffer(Handshake()));
  flatbuffers::FlatBufferBuilder fbb;
  auto fetch = wire::fb::CreateFetchRequest(fbb, fbb.CreateString("big"), 0, 0);
  fbb.Finish(
      wire::fb::CreateRequestMessage(fbb, 9, wire::fb::Request::FetchRequest, fetch.Union()));
  const auto frame = Frame(fbb);
  s.non_blocking(true);
  std::size_t sent = 0;
  constexpr int kMax = 400'000;  // about 25 MB of requests: far more than socket buffers hold
  int i = 0;
  for (; i < kMax; ++i) {  // until the socket refuses more: the server stopped reading
    boost::system::error_code ec;
    const std::size_t n = s.write_some(asio::buffer(frame), ec);
    if (ec == asio::error::would_block) break;
    ASSERT_FALSE(ec) << ec.message();
    sent += n;
    if (n < frame.size()) break;  // the buffers are full mid-frame
  }
  EXPECT_LT(i, kMax) << "the server kept reading";
  EXPECT_LE(server_->stats().connections, 3u);
  ExpectHealthy();
}

}  // namespace
}  // namespace lockstep
