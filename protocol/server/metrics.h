#pragma once
// The metrics listener (docs/operations.md, "Metrics"): a small HTTP/1.1 server, separate from
// the protocol port, that answers
//   GET /metrics  the Prometheus text exposition of the engine's and the server's figures
//   GET /livez    200 while the process serves HTTP at all
//   GET /readyz   200 once recovery finished and the server accepts clients; 503 before, while
//                 stopping, and after a storage error stopped the engine
// It starts before the engine opens (so /readyz can say "not yet" during a long recovery) and
// is attached to the engine and the server once they run. Every scrape reads atomics and
// snapshots: it never waits on the commit path.
#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"

namespace lockstep::engine {
class Engine;
}

namespace lockstep::server {

class Server;

class MetricsServer {
 public:
  // Binds HOST:PORT (port 0 picks a free one) and serves on a thread of its own.
  static base::Result<std::unique_ptr<MetricsServer>> Start(const std::string& host,
                                                            std::uint16_t port);
  ~MetricsServer();  // closes the listener and every connection, joins the thread
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  std::uint16_t port() const;

  // From now on /metrics reports `engine` and `server`, and /readyz is 200 while the engine
  // has not failed. Both must outlive Detach() (or this object).
  void Attach(const engine::Engine& engine, const Server& server);
  // Not ready any more (shutting down); /metrics reports nothing but the process figures.
  void Detach();

  // The exposition text as /metrics serves it (tests and the lint use the HTTP path too).
  std::string Render() const;

  class Impl;

 private:
  explicit MetricsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lockstep::server
