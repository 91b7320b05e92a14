#pragma once
// The Lockstep server (docs/protocol.md): Boost.Asio in front of one engine. It speaks the
// framed FlatBuffers protocol of protocol/wire, pipelines requests per connection, answers
// commits when they are durable, parks long-poll fetches until new durable events arrive (never
// a busy loop or a sleep), and protects itself: connection, in-flight request and queued byte
// limits per connection (backpressure: it stops reading from a client that does not read its
// responses), handshake and idle timeouts, and malformed frames answered with an error and the
// connection closed.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"
#include "engine/engine.h"
#include "protocol/server/groups.h"

namespace lockstep::server {

using base::Lsn;
using base::Offset;
using base::PartitionId;
using base::Result;
using base::Status;

struct ServerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 7070;  // 0: pick a free port (see Server::port())
  std::uint32_t max_frame_bytes = 16u << 20;
  std::uint32_t max_connections = 4096;
  // Per connection: requests being worked on (commits in flight, parked fetches) and response
  // bytes queued but not yet written; past either, the server stops reading from it.
  std::uint32_t max_inflight_requests = 1024;
  std::uint64_t max_queued_bytes = 64u << 20;
  std::chrono::milliseconds handshake_timeout{10'000};
  std::chrono::milliseconds idle_timeout{600'000};
  std::chrono::milliseconds max_wait_cap{60'000};  // a long-poll waits at most this long
  std::uint32_t io_threads = 1;
  GroupOptions groups;
  // How often sessions of group members are checked for their end.
  std::chrono::milliseconds group_expiry_tick{100};
};

struct ServerStats {
  std::uint32_t connections = 0;
  std::uint32_t parked_fetches = 0;
  std::uint64_t requests = 0;
  std::uint64_t refused_connections = 0;  // over max_connections
  std::uint64_t bad_frames = 0;           // malformed, oversized, or invalid messages
  std::uint64_t events_out = 0;           // events sent in fetch responses
  std::uint64_t event_bytes_out = 0;      // their record bytes
};

class Server {
 public:
  // Binds, listens and starts serving `engine` (which must outlive the server).
  static Result<std::unique_ptr<Server>> Start(engine::Engine& engine, ServerOptions options);
  ~Server();  // Stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  const std::string& host() const;
  std::uint16_t port() const;  // the bound port, also when 0 was asked for
  ServerStats stats() const;

  // Stops accepting, answers parked fetches with what they have, waits up to `drain` for
  // in-flight commits to be answered and written, then closes every connection.
  void Stop(std::chrono::milliseconds drain = std::chrono::milliseconds(10'000));

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lockstep::server
