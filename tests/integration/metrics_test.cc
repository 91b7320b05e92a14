// The metrics listener (docs/operations.md, "Metrics"): /readyz follows recovery and shutdown,
// /metrics reports exactly the workload that ran (commits, conflicts, events in and out,
// consumer-group lag) and passes promtool's lint, and bad HTTP gets a clear answer or a closed
// connection without hurting the listener.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <fstream>
#include <regex>

#include "protocol/server/metrics.h"
#include "tests/integration/server_fixture.h"

namespace lockstep::integration {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;

struct HttpAnswer {
  unsigned status = 0;
  std::string body;
};

HttpAnswer Request(std::uint16_t port, http::verb method, const std::string& target) {
  asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(10s);
  stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> request(method, target, 11);
  request.set(http::field::host, "127.0.0.1");
  http::write(stream, request);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.skip(method == http::verb::head);  // a HEAD answer has a length but no body
  http::read(stream, buffer, parser);
  return {parser.get().result_int(), parser.get().body()};
}

HttpAnswer Get(std::uint16_t port, const std::string& target) {
  return Request(port, http::verb::get, target);
}

// The value of the sample `series` (name with its labels, exactly as exposed); NaN if absent.
double Sample(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nan("");
}

class MetricsTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    auto m = server::MetricsServer::Start("127.0.0.1", 0);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    metrics_ = std::move(m).value();
  }
  void TearDown() override {
    metrics_.reset();
    ServerTest::TearDown();
  }
  std::unique_ptr<server::MetricsServer> metrics_;
};

TEST_F(MetricsTest, ReadinessFollowsRecoveryAndShutdown) {
  // Started before the engine is attached, as lockstepd does before recovery.
  EXPECT_EQ(Get(metrics_->port(), "/livez").status, 200u);
  HttpAnswer ready = Get(metrics_->port(), "/readyz");
  EXPECT_EQ(ready.status, 503u);
  EXPECT_EQ(ready.body, "recovering\n");
  EXPECT_EQ(Sample(Get(metrics_->port(), "/metrics").body, "lockstep_ready"), 0);
  // Nothing of the engine is reported before it is attached.
  EXPECT_TRUE(std::isnan(Sample(metrics_->Render(), "lockstep_commits_total")));

  metrics_->Attach(*engine_, *server_);
  ready = Get(metrics_->port(), "/readyz");
  EXPECT_EQ(ready.status, 200u);
  EXPECT_EQ(ready.body, "ready\n");
  EXPECT_EQ(Sample(Get(metrics_->port(), "/metrics").body, "lockstep_ready"), 1);

  metrics_->Detach();
  ready = Get(metrics_->port(), "/readyz");
  EXPECT_EQ(ready.status, 503u);
  EXPECT_EQ(ready.body, "stopping\n");
  EXPECT_EQ(Get(metrics_->port(), "/livez").status, 200u);
}

TEST_F(MetricsTest, MetricsReportTheWorkloadAndPassPromtool) {
  metrics_->Attach(*engine_, *server_);
  ASSERT_TRUE(client_->CreateTopic("orders", 2).ok());
  ASSERT_TRUE(client_->CreateTable("accounts").ok());
  // 10 transactions with one event each: 6 to partition 0, 4 to partition 1; the first also
  // creates a row that a later transaction's precondition says is absent (a conflict).
  for (int i = 0; i < 10; ++i) {
    client::Transaction txn;
    txn.Append(Event("orders", "order-" + std::to_string(i), i < 6 ? 0 : 1));
    if (i == 0) txn.Put("accounts", "alice", "100");
    ASSERT_TRUE(client_->Commit(std::move(txn)).ok());
  }
  auto conflict = client_->Commit(
      client::Transaction().RequireAbsent("accounts", "alice").Put("accounts", "alice", "0"));
  ASSERT_EQ(conflict.status().code(), StatusCode::kConflict);
  // A consumer reads 4 events of partition 0 and commits offset 4: 2 events behind.
  client::FetchOptions four;
  four.max_events = 4;
  auto fetched = client_->Fetch("orders", PartitionId(0), Offset(0), four);
  ASSERT_TRUE(fetched.ok());
  ASSERT_EQ(fetched->events, 4u);
  ASSERT_TRUE(client_->CommitOffsets({{"billing", 0, "orders", PartitionId(0), Offset(4)}}).ok());
  std::this_thread::sleep_for(50ms);  // the oldest unconsumed event is at least this old

  const HttpAnswer scrape = Get(metrics_->port(), "/metrics");
  ASSERT_EQ(scrape.status, 200u);
  const std::string& text = scrape.body;
  // The offset commit is a transaction too: 11 committed, 1 conflict.
  EXPECT_EQ(Sample(text, "lockstep_commits_total"), 11);
  EXPECT_EQ(Sample(text, "lockstep_transactions_answered_total{result=\"ok\"}"), 11);
  EXPECT_EQ(Sample(text, "lockstep_transactions_answered_total{result=\"conflict\"}"), 1);
  EXPECT_EQ(Sample(text, "lockstep_commit_latency_seconds_count"), 11);
  EXPECT_EQ(Sample(text, "lockstep_commit_latency_seconds_bucket{le=\"+Inf\"}"), 11);
  EXPECT_EQ(Sample(text, "lockstep_events_in_total"), 10);
  EXPECT_EQ(Sample(text, "lockstep_events_out_total"), 4);
  EXPECT_EQ(Sample(text, "lockstep_event_bytes_out_total"),
            static_cast<double>(fetched->records.size()));
  EXPECT_GT(Sample(text, "lockstep_event_bytes_in_total"),
            static_cast<double>(fetched->records.size()));
  EXPECT_EQ(Sample(text, "lockstep_partition_end_offset{topic=\"orders\",partition=\"0\"}"), 6);
  EXPECT_EQ(Sample(text, "lockstep_partition_end_offset{topic=\"orders\",partition=\"1\"}"), 4);
  EXPECT_EQ(
      Sample(text, "lockstep_group_lag_events{group=\"billing\",topic=\"orders\",partition=\"0\"}"),
      2);
  EXPECT_EQ(Sample(text,
                   "lockstep_group_committed_offset{group=\"billing\",topic=\"orders\",partition="
                   "\"0\"}"),
            4);
  const double lag_seconds = Sample(
      text, "lockstep_group_lag_seconds{group=\"billing\",topic=\"orders\",partition=\"0\"}");
  EXPECT_GE(lag_seconds, 0.05);
  EXPECT_LT(lag_seconds, 60);
  EXPECT_EQ(Sample(text, "lockstep_durable_lsn"),
            static_cast<double>(engine_->visible_lsn().value()));
  EXPECT_GE(Sample(text, "lockstep_connections"), 1);
  EXPECT_EQ(Sample(text, "lockstep_engine_failed"), 0);
  EXPECT_GE(Sample(text, "lockstep_log_segments"), 1);
  // Every record went through a group commit, each timed.
  const double batches = Sample(text, "lockstep_log_batches_total");
  EXPECT_GE(batches, 1);
  EXPECT_EQ(Sample(text, "lockstep_group_commit_records_count"), batches);
  EXPECT_EQ(Sample(text, "lockstep_log_write_sync_seconds_count"), batches);

  // promtool (package prometheus, installed by tools/setup.sh) lints the exposition: it must be
  // there, and say nothing.
  const std::string file = dir_.Sub("metrics.txt");
  std::ofstream(file) << text;
  const std::string command = "promtool check metrics < " + file + " 2>&1";
  FILE* lint = popen(command.c_str(), "r");
  ASSERT_NE(lint, nullptr);
  std::string said;
  char chunk[512];
  while (std::fgets(chunk, sizeof chunk, lint) != nullptr) said += chunk;
  const int status = pclose(lint);
  EXPECT_EQ(status, 0) << "promtool check metrics failed (is promtool installed?): " << said;
  EXPECT_EQ(said, "") << text;
}

TEST_F(MetricsTest, BadRequestsGetClearAnswersAndTheListenerGoesOn) {
  metrics_->Attach(*engine_, *server_);
  const HttpAnswer missing = Get(metrics_->port(), "/nope");
  EXPECT_EQ(missing.status, 404u);
  EXPECT_NE(missing.body.find("/metrics"), std::string::npos) << missing.body;
  EXPECT_EQ(Request(metrics_->port(), http::verb::post, "/metrics").status, 405u);
  EXPECT_EQ(Request(metrics_->port(), http::verb::head, "/livez").status, 200u);
  EXPECT_EQ(Get(metrics_->port(), "/metrics?name[]=x").status, 200u);

  // Garbage, and a header far beyond the parser's limit: the connection is closed.
  for (const std::string& hostile :
       {std::string("\x01\x02 not http at all\r\n\r\n"),
        "GET /metrics HTTP/1.1\r\nX-Big: " + std::string(200'000, 'a') + "\r\n\r\n"}) {
    tcp::socket raw = Raw(metrics_->port());
    boost::system::error_code ec;
    asio::write(raw, asio::buffer(hostile), ec);
    char byte;
    raw.read_some(asio::buffer(&byte, 1), ec);  // EOF or reset, not a hang (the test's timeout)
    EXPECT_TRUE(ec) << "the connection stayed open after hostile input";
  }
  EXPECT_EQ(Get(metrics_->port(), "/livez").status, 200u);
}

}  // namespace
}  // namespace lockstep::integration
