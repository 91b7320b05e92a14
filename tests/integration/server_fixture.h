#pragma once
// The fixture of the in-process integration tests: an engine over real files, a server on a free
// loopback port, a connected client, and helpers for raw (hostile) connections.
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

namespace lockstep::integration {

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
  // The same, a failure to read reported as its code (kUnavailable): a test asserting kOk then
  // fails instead of stopping at a Result without a value.
  static StatusCode ResponseCode(tcp::socket& s) {
    auto r = ReadResponse(s);
    return r.ok() ? *r : r.status().code();
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

}  // namespace lockstep::integration
