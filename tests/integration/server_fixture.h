#pragma once
// The fixture of the in-process integration tests: an engine over real files, a server on a free
// loopback port, a connected client, and helpers for raw (hostile) connections.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <boost/asio.hpp>
#include <cerrno>
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

namespace lockstep::integration {

using namespace std::chrono_literals;
using base::Offset;
using base::PartitionId;
using base::Result;
using base::Status;
using base::StatusCode;
namespace asio = boost::asio;
using asio::ip::tcp;

// A client of the server at `address` (HOST:PORT), or null (a test failure) if it cannot
// connect within `deadline`.
inline std::unique_ptr<client::Client> ConnectTo(const std::string& address,
                                                 std::chrono::milliseconds deadline) {
  client::ClientOptions o;
  o.broker = address;
  o.retry_deadline = deadline;
  auto c = client::Client::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c).value() : nullptr;
}

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
    return ConnectTo("127.0.0.1:" + std::to_string(port_), deadline);
  }
  // Creates `topic` with one partition holding `count` events: prefix + "0", prefix + "1", ...
  void CreateTopicOf(const std::string& topic, int count, const std::string& prefix) {
    ASSERT_TRUE(client_->CreateTopic(topic, 1).ok());
    client::Transaction events;
    for (int i = 0; i < count; ++i) events.Append(Event(topic, prefix + std::to_string(i)));
    ASSERT_TRUE(client_->Commit(std::move(events)).ok());
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
  // Consume-transform-produce tests: topic "out" (one partition) holds 2 * i for every input
  // i < inputs, each exactly once.
  void ExpectEveryInputDoubledOnce(int inputs) {
    std::multiset<int> outputs;
    Offset next(0);
    for (;;) {
      auto f = client_->Fetch("out", PartitionId(0), next);
      ASSERT_TRUE(f.ok()) << f.status().ToString();
      if (f->events == 0) break;
      for (const auto& p : Payloads(*f)) outputs.insert(std::stoi(p));
      next = f->next_offset;
    }
    ASSERT_EQ(outputs.size(), static_cast<std::size_t>(inputs));
    for (int i = 0; i < inputs; ++i) EXPECT_EQ(outputs.count(2 * i), 1u) << i;
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
  tcp::socket Raw(std::uint16_t port = 0) {  // 0: the server's
    tcp::socket s(raw_io_);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port != 0 ? port : port_));
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
  // A stats request: the simplest request a server must answer once handshaken.
  static std::vector<std::byte> StatsRequest(std::uint64_t id) {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.Finish(wire::fb::CreateRequestMessage(fbb, id, wire::fb::Request::StatsRequest,
                                              wire::fb::CreateStatsRequest(fbb).Union()));
    return Frame(fbb);
  }
  // Reads exactly `out.size()` bytes, each wait for more bounded by 5 s: an error (EOF, reset,
  // or "no data within 5 s") otherwise. Waits with poll(2): Asio's blocking reads wait again
  // without a limit after SO_RCVTIMEO expires, so a test would hang instead of failing.
  static Status ReadExactly(tcp::socket& s, std::span<std::byte> out) {
    std::size_t got = 0;
    while (got < out.size()) {
      pollfd p{s.native_handle(), POLLIN, 0};
      const int ready = ::poll(&p, 1, 5000);
      if (ready == 0) return base::DeadlineExceeded("no data within 5 s");
      if (ready < 0) return base::Unavailable(std::strerror(errno));
      const ssize_t n = ::recv(s.native_handle(), out.data() + got, out.size() - got, 0);
      if (n == 0) return base::Unavailable("closed by the server");
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return base::Unavailable(std::strerror(errno));
      }
      got += static_cast<std::size_t>(n);
    }
    return Status::Ok();
  }
  // A response's error code (kOk for none) and message.
  struct Answer {
    StatusCode code = StatusCode::kOk;
    std::string message;
  };
  // Reads one response frame (or fails after 5 s without data).
  static Result<Answer> ReadAnswer(tcp::socket& s) {
    std::array<std::byte, 8> header;
    LOCKSTEP_RETURN_IF_ERROR(ReadExactly(s, header));
    auto h = wire::ParseFrameHeader(header, 1u << 30);
    if (!h.ok()) return h.status();
    std::vector<std::byte> body(h->body_bytes());
    LOCKSTEP_RETURN_IF_ERROR(ReadExactly(s, body));
    auto m = wire::VerifyResponse(std::span(body.data(), h->message_bytes));
    if (!m.ok()) return m.status();
    const wire::fb::Error* error = (*m)->error();
    if (error == nullptr) return Answer{};
    return Answer{wire::FromWire(error->code()), error->message() ? error->message()->str() : ""};
  }
  // The same, its code alone.
  static Result<StatusCode> ReadResponse(tcp::socket& s) {
    LOCKSTEP_ASSIGN_OR_RETURN(Answer answer, ReadAnswer(s));
    return answer.code;
  }
  // The same, a failure to read reported as its code (kUnavailable, kDeadlineExceeded): a test
  // asserting kOk then fails instead of stopping at a Result without a value.
  static StatusCode ResponseCode(tcp::socket& s) {
    auto r = ReadResponse(s);
    return r.ok() ? *r : r.status().code();
  }
  // True once the server closed `s` (EOF or a reset; what it sent before is skipped); false if
  // it stays open 5 s without sending anything.
  static bool ClosedByServer(tcp::socket& s) {
    std::array<std::byte, 4096> buf;
    for (;;) {
      pollfd p{s.native_handle(), POLLIN, 0};
      const int ready = ::poll(&p, 1, 5000);
      if (ready <= 0) return false;
      const ssize_t n = ::recv(s.native_handle(), buf.data(), buf.size(), 0);
      if (n == 0) return true;
      if (n < 0 && errno != EINTR && errno != EAGAIN) return errno == ECONNRESET;
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

}  // namespace lockstep::integration
