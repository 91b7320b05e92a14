#include "protocol/server/metrics.h"

#include <fmt/format.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <limits>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/histogram.h"
#include "engine/engine.h"
#include "protocol/server/server.h"

namespace lockstep::server {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

constexpr auto kIoTimeout = std::chrono::seconds(10);
constexpr double kNanosPerSecond = 1e9;

// The families of one scrape, in the order they are added.
class Exposition {
 public:
  using Labels = std::vector<ClientMetric::Label>;

  void Counter(const char* name, const char* help, double value, Labels labels = {}) {
    ClientMetric& m = Add(name, help, MetricType::Counter, std::move(labels));
    m.counter.value = value;
  }
  void Gauge(const char* name, const char* help, double value, Labels labels = {}) {
    ClientMetric& m = Add(name, help, MetricType::Gauge, std::move(labels));
    m.gauge.value = value;
  }
  // `scale` divides recorded values and bounds (nanoseconds into seconds, say).
  void Histogram(const char* name, const char* help, const base::AtomicHistogram& histogram,
                 double scale) {
    const base::AtomicHistogram::Snapshot s = histogram.Take();
    ClientMetric& m = Add(name, help, MetricType::Histogram, {});
    m.histogram.sample_count = s.count;
    m.histogram.sample_sum = static_cast<double>(s.sum) / scale;
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < s.counts.size(); ++i) {
      cumulative += s.counts[i];
      const double bound = i < s.bounds.size() ? static_cast<double>(s.bounds[i]) / scale
                                               : std::numeric_limits<double>::infinity();
      m.histogram.bucket.push_back({cumulative, bound});
    }
  }

  std::string Text() const { return prometheus::TextSerializer().Serialize(families_); }

 private:
  // A family is created on first use; later metrics of the same name join it (labelled series).
  ClientMetric& Add(const char* name, const char* help, MetricType type, Labels labels) {
    if (families_.empty() || families_.back().name != name) {
      MetricFamily& f = families_.emplace_back();
      f.name = name;
      f.help = help;
      f.type = type;
    }
    ClientMetric& m = families_.back().metric.emplace_back();
    m.label = std::move(labels);
    return m;
  }

  std::vector<MetricFamily> families_;
};

void AddEngine(const engine::Engine& e, Exposition& out) {
  const engine::EngineCounters c = e.counters();
  out.Counter("lockstep_commits_total", "Transactions committed (durable) since start.",
              static_cast<double>(c.commits));
  const char* answered =
      "Transactions answered since start, by result: ok (committed, or a "
      "retry given its original result), conflict, or error.";
  out.Counter("lockstep_transactions_answered_total", answered, static_cast<double>(c.answered_ok),
              {{"result", "ok"}});
  out.Counter("lockstep_transactions_answered_total", answered, static_cast<double>(c.conflicts),
              {{"result", "conflict"}});
  out.Counter("lockstep_transactions_answered_total", answered, static_cast<double>(c.errors),
              {{"result", "error"}});
  out.Counter("lockstep_events_in_total", "Events appended by committed transactions.",
              static_cast<double>(c.events));
  out.Counter("lockstep_event_bytes_in_total", "Record bytes of the events appended.",
              static_cast<double>(c.event_bytes));
  out.Histogram("lockstep_commit_latency_seconds",
                "Time from a transaction's submission to its durable answer.",
                e.commit_latency_ns(), kNanosPerSecond);

  const storage::Log& log = e.log();
  const storage::LogStats ls = log.stats();
  out.Counter("lockstep_log_batches_total", "Group commits written (one fdatasync each).",
              static_cast<double>(ls.batches));
  out.Counter("lockstep_log_bytes_written_total", "Batch bytes written to the log.",
              static_cast<double>(ls.bytes));
  out.Histogram("lockstep_group_commit_records", "Records (transactions) per group commit.",
                log.batch_records(), 1.0);
  out.Histogram("lockstep_log_write_sync_seconds",
                "Time to write one group commit and fdatasync it.", log.write_sync_ns(),
                kNanosPerSecond);
  out.Gauge("lockstep_log_segments", "Log segment files held.", ls.segments);
  out.Gauge("lockstep_log_segment_bytes", "Capacity of the log segment files held.",
            static_cast<double>(ls.segment_bytes));
  out.Gauge("lockstep_durable_lsn", "Newest LSN that is durable and visible to reads.",
            static_cast<double>(e.visible_lsn().value()));
  out.Gauge("lockstep_checkpoint_lsn", "LSN of the newest durable checkpoint (0: none).",
            static_cast<double>(e.checkpoint_lsn().value()));
  out.Gauge("lockstep_table_bytes", "Bytes the tables hold (what --table-bytes-max limits).",
            static_cast<double>(e.table_bytes()));
  out.Gauge("lockstep_engine_failed",
            "1 once a storage error stopped the engine (it refuses commits; restart to recover).",
            e.status().ok() ? 0 : 1);

  const std::vector<engine::TopicInfo> topics = e.ListTopics();
  auto each_partition = [&](const char* name, const char* help, auto offsets) {
    for (const engine::TopicInfo& t : topics) {
      const std::vector<base::Offset>& o = offsets(t);
      for (std::size_t p = 0; p < o.size(); ++p) {
        out.Gauge(name, help, static_cast<double>(o[p].value()),
                  {{"topic", t.name}, {"partition", std::to_string(p)}});
      }
    }
  };
  each_partition(
      "lockstep_partition_start_offset",
      "Earliest offset a partition still holds (retention moves it up).",
      [](const engine::TopicInfo& t) -> auto& { return t.start_offsets; });
  each_partition(
      "lockstep_partition_end_offset", "Next offset of a partition (its high watermark).",
      [](const engine::TopicInfo& t) -> auto& { return t.end_offsets; });

  // Lag of every group in every partition it committed an offset for.
  std::vector<std::pair<std::string, engine::PartitionLag>> lags;
  for (const std::string& group : e.ListGroups()) {
    auto lag = e.GroupLag(group);
    if (!lag.ok()) continue;  // dropped meanwhile
    for (engine::PartitionLag& l : *lag) lags.emplace_back(group, std::move(l));
  }
  auto group_labels = [](const std::string& group, const engine::PartitionLag& l) {
    return Exposition::Labels{
        {"group", group}, {"topic", l.topic}, {"partition", std::to_string(l.partition.value())}};
  };
  for (const auto& [group, l] : lags) {
    out.Gauge("lockstep_group_lag_events",
              "Events of a partition after a consumer group's committed offset.",
              static_cast<double>(l.events), group_labels(group, l));
  }
  for (const auto& [group, l] : lags) {
    out.Gauge("lockstep_group_lag_seconds",
              "Age of the oldest event a consumer group has not consumed (0: none).",
              static_cast<double>(l.ms) / 1000.0, group_labels(group, l));
  }
  for (const auto& [group, l] : lags) {
    out.Gauge("lockstep_group_committed_offset", "A consumer group's committed offset.",
              static_cast<double>(l.committed.value()), group_labels(group, l));
  }
}

void AddServer(const Server& server, Exposition& out) {
  const ServerStats s = server.stats();
  out.Gauge("lockstep_connections", "Client connections open.", s.connections);
  out.Gauge("lockstep_parked_fetches", "Long-poll fetches waiting for events.", s.parked_fetches);
  out.Counter("lockstep_requests_total", "Requests received.", static_cast<double>(s.requests));
  out.Counter("lockstep_refused_connections_total", "Connections refused over the limit.",
              static_cast<double>(s.refused_connections));
  out.Counter("lockstep_bad_frames_total", "Malformed, oversized or invalid frames received.",
              static_cast<double>(s.bad_frames));
  out.Counter("lockstep_events_out_total", "Events sent in fetch responses.",
              static_cast<double>(s.events_out));
  out.Counter("lockstep_event_bytes_out_total", "Record bytes of the events sent.",
              static_cast<double>(s.event_bytes_out));
}

}  // namespace

class MetricsServer::Impl {
 public:
  Impl() : acceptor_(io_), retry_(io_) {}

  Status Listen(const std::string& host, std::uint16_t port) {
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(host, ec);
    if (ec)
      return base::InvalidArgument(fmt::format("metrics address {:?}: {}", host, ec.message()));
    const tcp::endpoint endpoint(address, port);
    if (acceptor_.open(endpoint.protocol(), ec); !ec) {
      acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
      acceptor_.bind(endpoint, ec);
    }
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return base::Unavailable(
          fmt::format("cannot listen for metrics on {}:{}: {}", host, port, ec.message()));
    }
    port_ = acceptor_.local_endpoint().port();
    Accept();
    thread_ = std::thread([this] { io_.run(); });
    return Status::Ok();
  }

  void Stop() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  std::string Render() const {
    Exposition out;
    std::lock_guard lock(mu_);
    out.Gauge("lockstep_ready", "1 once recovery finished and clients are served.",
              Ready().empty() ? 1 : 0);
    out.Gauge("lockstep_uptime_seconds", "Seconds since the process started serving metrics.",
              static_cast<double>(base::MonotonicNs() - started_ns_) / kNanosPerSecond);
    if (engine_ != nullptr) AddEngine(*engine_, out);
    if (server_ != nullptr) AddServer(*server_, out);
    return out.Text();
  }

  // Empty when ready; else why not. REQUIRES: mu_ held.
  std::string Ready() const {
    if (engine_ == nullptr) return stopping_ ? "stopping" : "recovering";
    if (Status s = engine_->status(); !s.ok()) return "engine stopped: " + s.ToString();
    return {};
  }

  http::response<http::string_body> Handle(const http::request<http::string_body>& request) {
    http::response<http::string_body> response;
    response.version(request.version());
    response.keep_alive(request.keep_alive());
    response.set(http::field::content_type, "text/plain; charset=utf-8");
    std::string_view target = request.target();
    target = target.substr(0, target.find('?'));
    if (request.method() != http::verb::get && request.method() != http::verb::head) {
      response.result(http::status::method_not_allowed);
      response.set(http::field::allow, "GET, HEAD");
      response.body() = "only GET and HEAD\n";
    } else if (target == "/metrics") {
      response.result(http::status::ok);
      response.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      response.body() = Render();
    } else if (target == "/livez") {
      response.result(http::status::ok);
      response.body() = "ok\n";
    } else if (target == "/readyz") {
      std::lock_guard lock(mu_);
      const std::string why = Ready();
      response.result(why.empty() ? http::status::ok : http::status::service_unavailable);
      response.body() = why.empty() ? "ready\n" : why + "\n";
    } else {
      response.result(http::status::not_found);
      response.body() = "not found: try /metrics, /livez or /readyz\n";
    }
    if (request.method() == http::verb::head) {
      response.content_length(response.body().size());
      response.body().clear();
      return response;
    }
    response.prepare_payload();
    return response;
  }

  asio::io_context io_;
  tcp::acceptor acceptor_;
  asio::steady_timer retry_;
  std::thread thread_;
  std::uint16_t port_ = 0;
  std::int64_t started_ns_ = base::MonotonicNs();
  mutable std::mutex mu_;
  const engine::Engine* engine_ = nullptr;  // under mu_
  const Server* server_ = nullptr;          // under mu_
  bool stopping_ = false;                   // under mu_

 private:
  void Accept();
};

namespace {

// One HTTP connection: requests answered in turn, kept alive while the client asks, closed
// after kIoTimeout of silence or on any malformed request.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket socket, MetricsServer::Impl& impl)
      : stream_(std::move(socket)), impl_(impl) {}

  void Read() {
    request_ = {};
    stream_.expires_after(kIoTimeout);
    http::async_read(stream_, buffer_, request_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       if (ec) return self->Close();
                       self->Respond();
                     });
  }

 private:
  void Respond() {
    response_ = impl_.Handle(request_);
    stream_.expires_after(kIoTimeout);
    http::async_write(stream_, response_,
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        if (ec || !self->response_.keep_alive()) return self->Close();
                        self->Read();
                      });
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  beast::tcp_stream stream_;
  MetricsServer::Impl& impl_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
};

}  // namespace

void MetricsServer::Impl::Accept() {
  acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      std::make_shared<HttpSession>(std::move(socket), *this)->Read();
      return Accept();
    }
    // Out of descriptors, say: try again shortly rather than spin on the error.
    spdlog::warn("metrics listener: accept failed: {}", ec.message());
    retry_.expires_after(std::chrono::milliseconds(100));
    retry_.async_wait([this](boost::system::error_code wait_ec) {
      if (!wait_ec) Accept();
    });
  });
}

base::Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& host,
                                                                  std::uint16_t port) {
  auto impl = std::make_unique<Impl>();
  if (Status s = impl->Listen(host, port); !s.ok()) return s;
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl)));
}

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MetricsServer::~MetricsServer() { impl_->Stop(); }

std::uint16_t MetricsServer::port() const { return impl_->port_; }

void MetricsServer::Attach(const engine::Engine& engine, const Server& server) {
  std::lock_guard lock(impl_->mu_);
  impl_->engine_ = &engine;
  impl_->server_ = &server;
}

void MetricsServer::Detach() {
  std::lock_guard lock(impl_->mu_);
  impl_->engine_ = nullptr;
  impl_->server_ = nullptr;
  impl_->stopping_ = true;
}

std::string MetricsServer::Render() const { return impl_->Render(); }

}  // namespace lockstep::server
