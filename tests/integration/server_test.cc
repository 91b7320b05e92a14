// Proves the server and the client together over loopback TCP: produce then consume, a parked
// long-poll answered as soon as a new event is durable (well before its timeout) or, with
// min_bytes, as soon as enough are; the handshake and idle timeouts and the connection limit;
// transactions with conflicts and reads as of an LSN, a client that reconnects and whose queued
// commit is applied once, and the bad-input catalogue — random bytes, truncated frames, a 4 GiB
// length prefix, invalid FlatBuffers, a wrong protocol version, an unknown request type, 1,000 idle
// connections, a client that never reads its responses — after each of which the server is up,
// other clients are served, and no data is lost.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <type_traits>

#include <fmt/format.h>

#include "base/endian.h"
#include "tests/integration/server_fixture.h"

namespace lockstep::integration {
namespace {

// As the engine's builder: a chain on a temporary stays an rvalue and moves into Commit.
TEST(ClientTransactionBuilder, AChainOnATemporaryMovesInsteadOfCopying) {
  static_assert(
      std::is_same_v<decltype(client::Transaction().Put("t", "k", "v")), client::Transaction&&>);
  client::Transaction named;
  static_assert(std::is_same_v<decltype(named.Put("t", "k", "v")), client::Transaction&>);
  std::string payload(1000, 'p');
  const char* buffer = payload.data();
  client::EventAppend ev;
  ev.topic = "audit";
  ev.payload = std::move(payload);
  client::Transaction built =
      client::Transaction().Put("t", "k", "v").Append(std::move(ev)).IdempotencyKey("once");
  ASSERT_EQ(built.events().size(), 1u);
  EXPECT_EQ(built.events()[0].payload.data(), buffer);
  EXPECT_EQ(built.writes().size(), 1u);
  EXPECT_EQ(built.idempotency_key(), "once");
}

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
  const auto acknowledged = std::chrono::steady_clock::now();
  auto got = pending.get();
  const auto answered = std::chrono::steady_clock::now();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(Payloads(*got), std::vector<std::string>{"now"});
  EXPECT_LT(answered - start, 10s) << "answered by its timeout, not by the event";
  // Woken by the commit, not found by a periodic re-check: a server that re-checked parked
  // fetches every few seconds would fail this most of the time (1 s leaves room for a slow,
  // sanitized build on a loaded machine; the wake-up itself takes microseconds).
  EXPECT_LT(answered - acknowledged, 1s);
  // A long-poll that sees nothing returns empty at its timeout.
  wait.max_wait = 300ms;
  auto empty = client_->Fetch("ticks", PartitionId(0), Offset(1), wait);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->events, 0u);
}

// A long-poll with min_bytes stays parked while the new events are fewer bytes than that, and
// is answered as soon as enough are durable, with all of them, well before its timeout.
TEST_F(ServerTest, ALongPollWaitsForMinBytes) {
  ASSERT_TRUE(client_->CreateTopic("drips", 1).ok());
  client::FetchOptions wait;
  wait.max_wait = 20'000ms;
  wait.min_bytes = 2048;
  const auto start = std::chrono::steady_clock::now();
  auto pending = std::async(
      std::launch::async, [&] { return client_->Fetch("drips", PartitionId(0), Offset(0), wait); });
  auto producer = Connect();
  const std::string hundred(100, 'd');
  ASSERT_TRUE(producer->Commit(client::Transaction().Append(Event("drips", hundred))).ok());
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(pending.wait_for(0ms), std::future_status::timeout)
      << "answered with one event, below min_bytes";
  // Thirty more: over 3,000 bytes of records in all.
  client::Transaction more;
  for (int i = 0; i < 30; ++i) more.Append(Event("drips", hundred));
  ASSERT_TRUE(producer->Commit(std::move(more)).ok());
  auto got = pending.get();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->events, 31u);
  EXPECT_GE(got->records.size(), 2048u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s) << "answered by its timeout";
}

// A partition whose records are damaged fails every fetch with DataLoss. Next to a busy
// partition, Poll still says so: the Poll after one that delivered events returns the error,
// and the busy partition is served on. (Polls here wait until both fetches are back, so every
// Poll finds events and the error together.)
TEST_F(ServerTest, ADamagedPartitionIsReportedWhileAnotherDelivers) {
  ASSERT_TRUE(client_->CreateTopic("mixed", 2).ok());
  for (int events : {3, 2}) {  // partition 0: a run of offsets 0-2, then one of 3-4
    client::Transaction txn;
    for (int i = 0; i < events; ++i) txn.Append(Event("mixed", "lost", 0));
    ASSERT_TRUE(client_->Commit(std::move(txn)).ok());
  }
  for (int t = 0; t < 5; ++t) {
    client::Transaction busy;
    for (int i = 0; i < 100; ++i) busy.Append(Event("mixed", "kept", 1));
    ASSERT_TRUE(client_->Commit(std::move(busy)).ok());
  }
  // Partition 0's run header (docs/engine-records.md): kind 6, topic id, partition 0, count 3.
  // Its count becomes 5, in the file the server has mapped: a run that fits the fetch (offsets
  // 0-4 exist, 5 <= fetch_max_events below) goes out whole after its records are counted.
  bool corrupted = false;
  for (const auto& entry : std::filesystem::directory_iterator(dir_.Sub("data") + "/log")) {
    if (entry.path().extension() != ".seg" || corrupted) continue;
    std::fstream file(entry.path(), std::ios::in | std::ios::out | std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    for (std::size_t i = 0; i + 13 <= bytes.size(); ++i) {
      const auto* at = reinterpret_cast<const std::byte*>(bytes.data() + i);
      if (at[0] == std::byte{6} && base::LoadLe32(at + 1) < 16 && base::LoadLe32(at + 5) == 0 &&
          base::LoadLe32(at + 9) == 3) {
        file.clear();
        file.seekp(static_cast<std::streamoff>(i + 9));
        const char five[4] = {5, 0, 0, 0};
        file.write(five, 4);
        file.flush();
        corrupted = file.good();
        break;
      }
    }
  }
  ASSERT_TRUE(corrupted) << "no run header of partition 0 found";
  client::ConsumerOptions co;
  co.fetch_max_events = 5;  // partition 1 has events for every Poll below
  auto consumer = client::Consumer::Create(*client_, co);
  ASSERT_TRUE(consumer.ok());
  ASSERT_TRUE((*consumer)->Assign("mixed").ok());
  std::size_t busy_events = 0;
  std::optional<Status> error;
  for (int round = 0; round < 40 && !error; ++round) {
    std::this_thread::sleep_for(30ms);
    auto batch = (*consumer)->Poll(1000ms);
    if (!batch.ok()) {
      error = batch.status();
      break;
    }
    for (const auto& e : *batch) {
      EXPECT_EQ(e.partition, PartitionId(1));
      ++busy_events;
    }
  }
  ASSERT_TRUE(error.has_value()) << "40 polls and the damaged partition was never reported";
  EXPECT_EQ(error->code(), StatusCode::kDataLoss) << error->ToString();
  EXPECT_NE(error->message().find("mixed/0"), std::string::npos) << error->ToString();
  EXPECT_GT(busy_events, 0u) << "the error came before any event of the busy partition";
  auto after = (*consumer)->Poll(1000ms);
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_FALSE(after->empty()) << "the busy partition must be served after the error";
}

// A seek does not wait for the prefetch already out, which may be parked in a long-poll at the
// partition's end until its max_wait: a fetch from the new position goes out at once.
TEST_F(ServerTest, ASeekDoesNotWaitForAParkedPrefetch) {
  ASSERT_TRUE(client_->CreateTopic("replay", 1).ok());
  for (const char* p : {"a", "b", "c"}) {
    ASSERT_TRUE(client_->Commit(client::Transaction().Append(Event("replay", p))).ok());
  }
  client::ConsumerOptions co;
  co.max_wait = 2'000ms;  // the consumer's end waits for its last parked prefetch: not longer
  auto consumer = client::Consumer::Create(*client_, co);
  ASSERT_TRUE(consumer.ok());
  ASSERT_TRUE((*consumer)->Assign("replay").ok());
  std::vector<std::string> seen;
  // Polls until `n` payloads arrived into `seen` (emptied first), at most `rounds` polls of 1 s.
  auto poll_until = [&](std::size_t n, int rounds) {
    seen.clear();
    for (int round = 0; round < rounds && seen.size() < n; ++round) {
      auto batch = (*consumer)->Poll(1000ms);
      ASSERT_TRUE(batch.ok()) << batch.status().ToString();
      for (const auto& e : *batch) seen.push_back(e.payload);
    }
  };
  poll_until(3, 50);
  ASSERT_EQ(seen, (std::vector<std::string>{"a", "b", "c"}));
  // The next prefetch is parked at offset 3 now, for up to 2 s.
  std::this_thread::sleep_for(100ms);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE((*consumer)->Seek("replay", PartitionId(0), Offset(1)).ok());
  poll_until(2, 50);
  EXPECT_EQ(seen, (std::vector<std::string>{"b", "c"}));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms)
      << "the seek waited for the parked fetch";
  // Seeks in a row never pile up parked fetches: with two out (the one the first seek left
  // behind, and the one parked at the end since), a seek sends nothing and the first of them
  // back — here answered by a new event — sends the fetch from the newest position instead.
  ASSERT_TRUE((*consumer)->Seek("replay", PartitionId(0), Offset(3)).ok());
  ASSERT_TRUE((*consumer)->Seek("replay", PartitionId(0), Offset(3)).ok());
  ASSERT_TRUE((*consumer)->Seek("replay", PartitionId(0), Offset(2)).ok());
  ASSERT_TRUE(client_->Commit(client::Transaction().Append(Event("replay", "d"))).ok());
  poll_until(2, 10);
  EXPECT_EQ(seen, (std::vector<std::string>{"c", "d"}));
  // The stale fetches' answers are dropped: nothing is delivered twice.
  auto more = (*consumer)->Poll(300ms);
  ASSERT_TRUE(more.ok()) << more.status().ToString();
  EXPECT_TRUE(more->empty());
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

TEST_F(ServerTest, AMultiGetReadsSeveralKeysAtOneSnapshot) {
  ASSERT_TRUE(client_->CreateTable("accounts").ok());
  auto first =
      client_->Commit(client::Transaction().Put("accounts", "a", "1").Put("accounts", "b", "2"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second =
      client_->Commit(client::Transaction().Put("accounts", "a", "3").Delete("accounts", "b"));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  auto now = client_->MultiGet("accounts", {"b", "a", "zz", "a"});
  ASSERT_TRUE(now.ok()) << now.status().ToString();
  EXPECT_EQ(now->as_of, second->lsn);
  const auto& rows = now->rows;
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_FALSE(rows[0].has_value());
  ASSERT_TRUE(rows[1].has_value());
  EXPECT_EQ(rows[1]->key, "a");
  EXPECT_EQ(rows[1]->value, "3");
  EXPECT_EQ(rows[1]->version, second->lsn);
  EXPECT_FALSE(rows[2].has_value());
  EXPECT_EQ(rows[3]->value, "3");
  auto then = client_->MultiGet("accounts", {"a", "b"}, first->lsn);
  ASSERT_TRUE(then.ok()) << then.status().ToString();
  EXPECT_EQ(then->as_of, first->lsn);
  ASSERT_EQ(then->rows.size(), 2u);
  EXPECT_EQ(then->rows[0]->value, "1");
  EXPECT_EQ(then->rows[1]->value, "2");
  EXPECT_EQ(then->rows[1]->version, first->lsn);
  auto none = client_->MultiGet("accounts", {});
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_TRUE(none->rows.empty());
  EXPECT_EQ(client_->MultiGet("nope", {"a"}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(
      client_->MultiGet("accounts", {"a"}, base::Lsn(second->lsn.value() + 100)).status().code(),
      StatusCode::kOutOfRange);
  // The bound: 10,000 keys are read, one more is refused, and the connection serves on.
  std::vector<std::string> many(engine::Engine::kMultiGetKeysMax, "a");
  auto all = client_->MultiGet("accounts", many);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->rows.size(), many.size());
  many.push_back("a");
  auto refused = client_->MultiGet("accounts", many);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("at most 10000"), std::string::npos)
      << refused.status().ToString();
  EXPECT_EQ(client_->Get("accounts", "a")->value().value, "3");
}

// A writer sets 50 keys to one value per transaction, again and again; every multi-get of all
// 50, taken while it commits, must see one value (one snapshot), named by as_of.
TEST_F(ServerTest, AMultiGetNeverSeesHalfATransaction) {
  ASSERT_TRUE(client_->CreateTable("accounts").ok());
  std::vector<std::string> keys;
  for (int k = 0; k < 50; ++k) keys.push_back("acct" + std::to_string(k));
  auto set_all = [&](client::Client& c, int value) {
    client::Transaction txn;
    for (const std::string& k : keys) txn.Put("accounts", k, std::to_string(value));
    return c.Commit(std::move(txn)).status();
  };
  ASSERT_TRUE(set_all(*client_, 0).ok());
  auto writer_client = Connect();
  ASSERT_NE(writer_client, nullptr);
  std::atomic<bool> stop{false};
  std::atomic<int> transfers{0};
  Status writer_status = Status::Ok();  // read after the join
  std::thread writer([&] {
    for (int i = 1; i <= 2000 && !stop.load(); ++i) {
      if (Status s = set_all(*writer_client, i); !s.ok()) {
        writer_status = s;
        return;
      }
      ++transfers;
    }
  });
  // Stops and joins the writer however the test ends.
  struct Join {
    std::atomic<bool>& stop;
    std::thread& thread;
    ~Join() {
      stop = true;
      if (thread.joinable()) thread.join();
    }
  } join{stop, writer};
  for (int i = 0; i < 500 && transfers.load() == 0; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_GT(transfers.load(), 0) << "the writer committed nothing in 5 s";
  std::set<std::uint64_t> snapshots;
  for (int reads = 0; reads < 2000 && transfers.load() < 300; ++reads) {
    auto r = client_->MultiGet("accounts", keys);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->rows.size(), keys.size());
    snapshots.insert(r->as_of.value());
    for (const auto& row : r->rows) {
      ASSERT_TRUE(row.has_value());
      ASSERT_EQ(row->value, r->rows[0]->value) << "read " << reads << " as of " << r->as_of.value();
      ASSERT_LE(row->version, r->as_of);
    }
  }
  stop = true;
  writer.join();
  EXPECT_TRUE(writer_status.ok()) << writer_status.ToString();
  EXPECT_GE(snapshots.size(), 2u) << "every read saw the same snapshot: nothing was tested";
}

// No answer may outgrow a frame: a multi-get or scan whose rows would is refused before it is
// built, and the connection serves on.
TEST_F(ServerTest, AReadWhoseRowsWouldNotFitInAFrameIsRefused) {
  server_.reset();
  server_options_.max_frame_bytes = 64 << 10;
  StartServer();
  client_ = Connect();
  ASSERT_NE(client_, nullptr);
  ASSERT_TRUE(client_->CreateTable("blobs").ok());
  const std::string value(10'000, 'v');
  std::vector<std::string> keys;
  for (int i = 0; i < 10; ++i) {
    keys.push_back("k" + std::to_string(i));
    ASSERT_TRUE(client_->Commit(client::Transaction().Put("blobs", keys.back(), value)).ok());
  }
  auto few = client_->MultiGet("blobs", {"k0", "k1", "k2"});
  ASSERT_TRUE(few.ok()) << few.status().ToString();
  EXPECT_EQ(few->rows[2]->value, value);
  auto all = client_->MultiGet("blobs", keys);
  EXPECT_EQ(all.status().code(), StatusCode::kInvalidArgument) << all.status().ToString();
  EXPECT_NE(all.status().message().find("ask for fewer"), std::string::npos)
      << all.status().ToString();
  auto scan = client_->Scan("blobs");
  EXPECT_EQ(scan.status().code(), StatusCode::kInvalidArgument) << scan.status().ToString();
  EXPECT_NE(scan.status().message().find("ask for fewer"), std::string::npos)
      << scan.status().ToString();
  client::ScanOptions some;
  some.limit = 3;
  auto limited = client_->Scan("blobs", some);
  ASSERT_TRUE(limited.ok()) << limited.status().ToString();
  EXPECT_EQ(limited->size(), 3u);
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

// A stand-in server that answers the handshake, then reads requests and never answers them —
// or, with `hang_up`, closes the connection at the first one: what a client sees when a server
// stalls, or dies, after a request reached it.
class MuteServer {
 public:
  explicit MuteServer(bool hang_up) : hang_up_(hang_up) {
    Accept();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~MuteServer() {
    io_.stop();
    thread_.join();
  }
  std::string address() const {
    return "127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
  }

 private:
  struct Conn {
    explicit Conn(tcp::socket s) : socket(std::move(s)) {}
    tcp::socket socket;
    std::array<std::byte, wire::kFrameHeaderBytes> header{};
    std::vector<std::byte> body;
    bool handshaken = false;
  };
  void Accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (ec) return;
      auto conn = std::make_shared<Conn>(std::move(socket));
      conns_.push_back(conn);
      Read(conn);
      Accept();
    });
  }
  void Read(const std::shared_ptr<Conn>& c) {
    asio::async_read(
        c->socket, asio::buffer(c->header), [this, c](boost::system::error_code ec, std::size_t) {
          if (ec) return;
          auto h = wire::ParseFrameHeader(c->header, 1u << 24);
          if (!h.ok()) return;
          c->body.resize(h->body_bytes());
          asio::async_read(
              c->socket, asio::buffer(c->body),
              [this, c](boost::system::error_code e, std::size_t) {
                if (e) return;
                if (!c->handshaken) {
                  c->handshaken = true;
                  flatbuffers::FlatBufferBuilder fbb;
                  auto hs = wire::fb::CreateHandshakeResponse(fbb, wire::kMajorVersion,
                                                              wire::kMinorVersion,
                                                              fbb.CreateString("mute"), 1u << 24);
                  fbb.Finish(wire::fb::CreateResponseMessage(
                      fbb, 0, 0, wire::fb::Response::HandshakeResponse, hs.Union()));
                  const auto header = wire::EncodeFrameHeader(fbb.GetSize(), 0);
                  std::array<asio::const_buffer, 2> out = {
                      asio::buffer(header), asio::buffer(fbb.GetBufferPointer(), fbb.GetSize())};
                  asio::write(c->socket, out, e);
                } else if (hang_up_) {
                  c->socket.close(e);
                  return;
                }
                Read(c);
              });
        });
  }

  const bool hang_up_;
  asio::io_context io_;
  tcp::acceptor acceptor_{io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  std::vector<std::shared_ptr<Conn>> conns_;
  std::thread thread_;
};

TEST(ClientOutcomes, ACommitSentButNeverAnsweredFailsAtItsDeadlineSayingTheOutcomeIsUnknown) {
  MuteServer mute(/*hang_up=*/false);
  auto c = ConnectTo(mute.address(), 1000ms);
  ASSERT_NE(c, nullptr);
  const auto start = std::chrono::steady_clock::now();
  auto r = c->Commit(client::Transaction().Put("t", "k", "v"));
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
  EXPECT_NE(r.status().message().find("the request was sent: its outcome is unknown"),
            std::string::npos)
      << r.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s) << "not bounded by its deadline";
}

TEST(ClientOutcomes, ACatalogChangeCutOffByALostConnectionSaysItsOutcomeIsUnknown) {
  MuteServer dies(/*hang_up=*/true);
  auto c = ConnectTo(dies.address(), 5000ms);
  ASSERT_NE(c, nullptr);
  // Not resent (a second "already exists" would hide whether the first took effect): it fails
  // at once, without waiting for its deadline.
  const auto start = std::chrono::steady_clock::now();
  Status s = c->CreateTopic("orders", 1);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("its outcome is unknown"), std::string::npos) << s.ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

// Backpressure: with the server not answering, a producer's buffer fills; Send then waits for
// room for send_timeout, and refuses with ResourceExhausted.
TEST(ClientOutcomes, AProducerWhoseBufferStaysFullWaitsThenRefuses) {
  MuteServer mute(/*hang_up=*/false);
  auto c = ConnectTo(mute.address(), 1000ms);
  ASSERT_NE(c, nullptr);
  client::ProducerOptions po;
  po.buffer_bytes = 8 << 10;
  po.send_timeout = 300ms;
  auto producer = client::Producer::Create(*c, po);
  ASSERT_TRUE(producer.ok()) << producer.status().ToString();
  int accepted = 0;
  Status refused = Status::Ok();
  std::chrono::steady_clock::duration waited{};
  for (int i = 0; i < 100 && refused.ok(); ++i) {
    client::EventAppend e;
    e.topic = "t";
    e.payload = std::string(1000, 'x');
    const auto start = std::chrono::steady_clock::now();
    Status sent = (*producer)->Send(std::move(e));
    if (sent.ok()) {
      ++accepted;
    } else {
      refused = sent;
      waited = std::chrono::steady_clock::now() - start;
    }
  }
  EXPECT_EQ(refused.code(), StatusCode::kResourceExhausted) << refused.ToString();
  EXPECT_GE(waited, 250ms) << "refused without waiting for room";
  EXPECT_GE(accepted, 4);
  EXPECT_LE(accepted, 8) << "more than 8 KiB buffered";
}

// ---- Producer and consumer -----------------------------------------------------------------

// A batch the server refuses at once (an unknown topic) is answered before an earlier batch
// still waiting for its sync; the producer still runs the callbacks in the order Send was
// called.
TEST_F(ServerTest, AProducersCallbacksKeepSendOrderWhenALaterBatchFailsFirst) {
  ASSERT_TRUE(client_->CreateTopic("slow", 1).ok());
  client::ProducerOptions po;
  po.batch_events = 1;  // every event its own batch
  po.linger = 0ms;
  auto producer = client::Producer::Create(*client_, po);
  ASSERT_TRUE(producer.ok());
  std::mutex mu;
  std::vector<std::string> order;
  auto record = [&](std::string name) {
    return [&, name](Result<client::EventPosition> r) {
      std::lock_guard lock(mu);
      order.push_back(name + (r.ok() ? ":ok" : ":failed: " + r.status().ToString()));
    };
  };
  constexpr int kRounds = 20;
  for (int i = 0; i < kRounds; ++i) {
    // Three megabytes to write and sync, then a commit refused before it reaches the log.
    ASSERT_TRUE((*producer)->Send(Event("slow", std::string(3 << 20, 'x')), record("big")).ok());
    ASSERT_TRUE((*producer)->Send(Event("missing", "y"), record("lost")).ok());
  }
  ASSERT_TRUE((*producer)->Flush(30s).ok());
  std::lock_guard lock(mu);
  ASSERT_EQ(order.size(), 2u * kRounds);
  for (int i = 0; i < kRounds; ++i) {
    EXPECT_EQ(order[2 * i], "big:ok") << "callback " << 2 * i;
    EXPECT_EQ(order[2 * i + 1].rfind("lost:failed: not_found", 0), 0u)
        << "callback " << 2 * i + 1 << ": " << order[2 * i + 1];
  }
}

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

// PollBatch hands events out in place: each batch owns the bytes its events point into, so a
// batch held while later polls go on still reads exactly what was written, field by field.
// Polls batches until `events` arrived (at most 200 polls of up to 1 s), keeping every batch.
void PollAndHoldBatches(client::Consumer& consumer, std::size_t events,
                        std::vector<client::ConsumedBatch>* held) {
  std::size_t seen = 0;
  for (int round = 0; round < 200 && seen < events; ++round) {
    auto batch = consumer.PollBatch(1000ms);
    ASSERT_TRUE(batch.ok()) << batch.status().ToString();
    seen += batch->size();
    held->push_back(std::move(*batch));
  }
  ASSERT_EQ(seen, events);
}

// Fetch responses of 256 KiB and more are read straight into blocks the batches keep (the
// client's in-place reads): 3 MiB of 1 KiB events in responses of up to 1 MiB, every batch held
// until the consumer is gone, then every payload checked byte for byte.
TEST_F(ServerTest, LargeFetchesAreKeptAsReceivedAndOutliveLaterPolls) {
  ASSERT_TRUE(client_->CreateTopic("bulk", 1).ok());
  constexpr int kEvents = 3000;
  auto payload = [](int i) {
    std::string p(1000 + static_cast<std::size_t>(i % 50), ' ');
    for (std::size_t j = 0; j < p.size(); ++j) p[j] = static_cast<char>('a' + (i + j) % 26);
    return p;
  };
  for (int i = 0; i < kEvents; i += 100) {
    client::Transaction txn;
    for (int j = i; j < i + 100; ++j) {
      client::EventAppend e;
      e.topic = "bulk";
      e.payload = payload(j);
      txn.Append(std::move(e));
    }
    ASSERT_TRUE(client_->Commit(std::move(txn)).ok());
  }
  client::ConsumerOptions co;
  co.max_wait = 100ms;
  co.fetch_max_bytes = 1 << 20;
  co.fetch_max_events = 10'000;
  auto consumer = client::Consumer::Create(*client_, co);
  ASSERT_TRUE(consumer.ok());
  ASSERT_TRUE((*consumer)->Assign("bulk").ok());
  std::vector<client::ConsumedBatch> held;
  ASSERT_NO_FATAL_FAILURE(PollAndHoldBatches(**consumer, kEvents, &held));
  consumer->reset();
  std::uint64_t next = 0;
  for (const client::ConsumedBatch& batch : held) {
    for (client::ConsumedEventRef e : batch) {
      ASSERT_EQ(e.event.offset().value(), next);
      ASSERT_EQ(e.payload(), payload(static_cast<int>(next))) << next;
      ++next;
    }
  }
  EXPECT_EQ(next, static_cast<std::uint64_t>(kEvents));
}

TEST_F(ServerTest, PolledBatchesReadInPlaceAndOutliveLaterPolls) {
  ASSERT_TRUE(client_->CreateTopic("audit", 2).ok());
  constexpr int kEvents = 120;
  auto expected = [](int i) {
    client::EventAppend e;
    e.topic = "audit";
    e.partition = PartitionId(static_cast<std::uint32_t>(i % 2));
    if (i % 3 != 0) e.key = "k" + std::to_string(i);
    e.payload = std::string(static_cast<std::size_t>(i), 'a' + static_cast<char>(i % 26));
    e.type = i % 4 == 0 ? "" : "Audited";
    e.schema_version = static_cast<std::uint16_t>(i % 5);
    for (int h = 0; h < i % 3; ++h)
      e.headers.emplace_back("h" + std::to_string(h), "v" + std::to_string(i));
    e.timestamp_ms = 1'700'000'000'000 + i;
    return e;
  };
  for (int i = 0; i < kEvents; i += 10) {
    client::Transaction txn;
    for (int j = i; j < i + 10; ++j) txn.Append(expected(j));
    ASSERT_TRUE(client_->Commit(std::move(txn)).ok());
  }
  client::ConsumerOptions co;
  co.max_wait = 100ms;
  co.fetch_max_events = 7;  // many small batches
  auto consumer = client::Consumer::Create(*client_, co);
  ASSERT_TRUE(consumer.ok());
  ASSERT_TRUE((*consumer)->Assign("audit").ok());
  std::vector<client::ConsumedBatch> held;
  ASSERT_NO_FATAL_FAILURE(PollAndHoldBatches(**consumer, kEvents, &held));
  ASSERT_GT(held.size(), 2u);
  // Moving a batch moves its events with it and leaves an empty batch behind.
  ASSERT_FALSE(held.front().empty());
  client::ConsumedBatch moved = std::move(held.front());
  EXPECT_TRUE(held.front().empty());
  EXPECT_TRUE(held.front().begin() == held.front().end());
  EXPECT_EQ(static_cast<std::size_t>(std::distance(moved.begin(), moved.end())), moved.size());
  held.front() = std::move(moved);
  // The consumer is gone; read all the held batches now.
  consumer->reset();
  std::map<std::uint32_t, std::uint64_t> next{{0, 0}, {1, 0}};
  std::size_t iterated = 0;
  for (const client::ConsumedBatch& batch : held) {
    std::size_t in_batch = 0;
    const std::vector<client::ConsumedEvent> copies = batch.Copy();
    for (client::ConsumedEventRef e : batch) {
      ASSERT_EQ(e.topic, "audit");
      const std::uint32_t p = e.partition.value();
      ASSERT_LT(p, 2u);
      ASSERT_EQ(e.event.offset().value(), next[p]++) << "partition " << p;
      const int i = static_cast<int>(2 * e.event.offset().value() + p);
      const client::EventAppend want = expected(i);
      EXPECT_EQ(e.payload(), want.payload) << i;
      ASSERT_EQ(e.key().has_value(), want.key.has_value()) << i;
      EXPECT_EQ(e.key(), want.key) << i;
      EXPECT_EQ(e.event.type(), want.type) << i;
      EXPECT_EQ(e.event.schema_version(), want.schema_version) << i;
      EXPECT_EQ(e.event.timestamp_ms(), *want.timestamp_ms) << i;
      const client::ConsumedEvent& copy = copies[in_batch];
      EXPECT_EQ(copy.offset, e.event.offset());
      EXPECT_EQ(copy.partition, e.partition);
      EXPECT_EQ(copy.payload, want.payload);
      EXPECT_EQ(copy.key, want.key);
      EXPECT_EQ(copy.type, want.type);
      EXPECT_EQ(copy.headers, want.headers) << i;
      ++in_batch;
    }
    EXPECT_EQ(in_batch, batch.size());
    EXPECT_EQ(copies.size(), batch.size());
    iterated += in_batch;
  }
  EXPECT_EQ(iterated, static_cast<std::size_t>(kEvents));
  EXPECT_EQ(next[0], kEvents / 2u);
  EXPECT_EQ(next[1], kEvents / 2u);
  // A batch with nothing in it iterates nothing.
  client::ConsumedBatch none;
  EXPECT_TRUE(none.empty());
  EXPECT_TRUE(none.begin() == none.end());
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
  ExpectEveryInputDoubledOnce(kInputs);
}

// The server's fetches do not hash batches again; each event's own checksum is verified by
// the consumer on every read. Damage that appears after the data was written reaches the consumer,
// which refuses it (kDataLoss) instead of handing out wrong bytes.
TEST_F(ServerTest, AnEventDamagedOnDiskIsCaughtByTheConsumer) {
  ASSERT_TRUE(client_->CreateTopic("t1", 1).ok());
  const std::string needle = "needle-4c1f9e";
  ASSERT_TRUE(client_->Commit(client::Transaction().Append(Event("t1", needle))).ok());
  ASSERT_TRUE(client_->Fetch("t1", PartitionId(0), Offset(0)).ok());  // the server read it once
  // Damage one byte of the payload in the segment file (the server's mapping shows it).
  bool damaged = false;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir_.Sub("data"))) {
    if (entry.path().extension() != ".seg") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::string bytes(std::filesystem::file_size(entry.path()), '\0');
    in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));  // whole (64 MiB) at once
    const auto at = bytes.find(needle);
    if (at == std::string::npos) continue;
    std::fstream out(entry.path(), std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(static_cast<std::streamoff>(at));
    out.put('N');
    damaged = true;
  }
  ASSERT_TRUE(damaged);
  client::ConsumerOptions co;
  co.max_wait = 50ms;
  auto consumer = client::Consumer::Create(*client_, co);
  ASSERT_TRUE(consumer.ok());
  ASSERT_TRUE((*consumer)->Assign("t1").ok());
  auto polled = (*consumer)->Poll(2s);
  EXPECT_EQ(polled.status().code(), StatusCode::kDataLoss) << polled.status().ToString();
}

// ---- Consumer positions: the reset policy, seeking by timestamp, auto-commit --------------------

// Polls until `count` events came (or 5 s passed); their payloads, in order.
std::vector<std::string> PollPayloads(client::Consumer& consumer, std::size_t count,
                                      std::vector<std::uint64_t>* offsets = nullptr) {
  std::vector<std::string> out;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (out.size() < count && std::chrono::steady_clock::now() < deadline) {
    auto polled = consumer.Poll(200ms);
    EXPECT_TRUE(polled.ok()) << polled.status().ToString();
    if (!polled.ok()) break;
    for (const auto& e : *polled) {
      out.push_back(e.payload);
      if (offsets != nullptr) offsets->push_back(e.offset.value());
    }
  }
  return out;
}

// A position past the end of the partition ("offset out of range", as after retention deleted
// what a consumer was about to read) is reset by the consumer's policy: to the earliest event,
// to the latest (only new events come), or not at all (Poll fails, saying why).
TEST_F(ServerTest, AnOutOfRangePositionIsResetByTheConsumersPolicy) {
  CreateTopicOf("r", 10, "e");
  // A group with a committed offset: a consumer that may never reset needs a valid start.
  client::OffsetCommit start;
  start.group = "readers";
  start.topic = "r";
  start.partition = PartitionId(0);
  start.offset = Offset(5);
  ASSERT_TRUE(client_->CommitOffsets({start}).ok());
  auto consumer_with = [&](client::ResetPolicy policy) {
    client::ConsumerOptions co;
    co.group = "readers";
    co.reset = policy;
    co.max_wait = 50ms;
    auto c = client::Consumer::Create(*client_, co);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    if (!c.ok()) return std::unique_ptr<client::Consumer>();
    EXPECT_TRUE((*c)->Assign("r").ok());
    EXPECT_TRUE((*c)->Seek("r", PartitionId(0), Offset(50)).ok());  // the end is 10
    return std::move(c).value();
  };
  {
    auto earliest = consumer_with(client::ResetPolicy::kEarliest);
    ASSERT_NE(earliest, nullptr);
    std::vector<std::uint64_t> offsets;
    auto got = PollPayloads(*earliest, 10, &offsets);
    ASSERT_EQ(got.size(), 10u);
    EXPECT_EQ(got.front(), "e0");
    EXPECT_EQ(offsets.front(), 0u);
  }
  {
    auto latest = consumer_with(client::ResetPolicy::kLatest);
    ASSERT_NE(latest, nullptr);
    auto before = latest->Poll(300ms);
    ASSERT_TRUE(before.ok()) << before.status().ToString();
    EXPECT_TRUE(before->empty()) << "the old events came: reset to the earliest, not the latest";
    ASSERT_TRUE(client_->Commit(client::Transaction().Append(Event("r", "new"))).ok());
    std::vector<std::uint64_t> offsets;
    auto got = PollPayloads(*latest, 1, &offsets);
    ASSERT_EQ(got, std::vector<std::string>{"new"});
    EXPECT_EQ(offsets, std::vector<std::uint64_t>{10});
  }
  {
    auto strict = consumer_with(client::ResetPolicy::kFail);
    ASSERT_NE(strict, nullptr);
    Status failed = Status::Ok();
    for (int i = 0; i < 25 && failed.ok(); ++i) {
      auto polled = strict->Poll(200ms);
      if (!polled.ok()) failed = polled.status();
      EXPECT_TRUE(!polled.ok() || polled->empty()) << "events from a position out of range";
    }
    EXPECT_EQ(failed.code(), StatusCode::kFailedPrecondition) << failed.ToString();
  }
}

// Seeking to a timestamp in the middle of a partition starts at the first event stamped at or
// after it.
TEST_F(ServerTest, SeekingToATimestampStartsAtTheFirstEventAtOrAfterIt) {
  ASSERT_TRUE(client_->CreateTopic("ts", 1).ok());
  for (int i = 0; i < 5; ++i) {
    auto e = Event("ts", "at" + std::to_string(i));
    e.timestamp_ms = 1'000'000 + i * 1000;
    ASSERT_TRUE(client_->Commit(client::Transaction().Append(std::move(e))).ok());
  }
  client::ConsumerOptions co;
  co.max_wait = 50ms;
  auto consumer = client::Consumer::Create(*client_, co);
  ASSERT_TRUE(consumer.ok());
  ASSERT_TRUE((*consumer)->Assign("ts").ok());
  ASSERT_TRUE((*consumer)->SeekToTimestamp("ts", PartitionId(0), 1'002'500).ok());
  EXPECT_EQ(PollPayloads(**consumer, 2), (std::vector<std::string>{"at3", "at4"}));
  ASSERT_TRUE((*consumer)->SeekToTimestamp("ts", PartitionId(0), 1'002'000).ok());  // exactly
  EXPECT_EQ(PollPayloads(**consumer, 3), (std::vector<std::string>{"at2", "at3", "at4"}));
}

// With auto_commit, each Poll first commits the positions the previous ones reached: a new
// member of the group starts after them.
TEST_F(ServerTest, AutoCommitCommitsWhatEarlierPollsDelivered) {
  CreateTopicOf("ac", 3, "old");
  client::ConsumerOptions co;
  co.group = "auto";
  co.auto_commit = true;
  co.max_wait = 50ms;
  {
    auto first = client::Consumer::Create(*client_, co);
    ASSERT_TRUE(first.ok());
    ASSERT_TRUE((*first)->Assign("ac").ok());
    ASSERT_EQ(PollPayloads(**first, 3).size(), 3u);
    ASSERT_TRUE((*first)->Poll(50ms).ok());  // commits offset 3 before it polls
  }
  ASSERT_TRUE(client_->Commit(client::Transaction().Append(Event("ac", "fresh"))).ok());
  co.auto_commit = false;
  auto second = client::Consumer::Create(*client_, co);
  ASSERT_TRUE(second.ok());
  ASSERT_TRUE((*second)->Assign("ac").ok());
  EXPECT_EQ(PollPayloads(**second, 1), std::vector<std::string>{"fresh"});
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

// Random message bytes in a well-formed frame, on a handshaken connection: answered with an
// error, then closed (the fixture's teardown checks the server serves on and lost nothing).
TEST_F(BadInput, RandomBytesAfterTheHandshake) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 20; ++round) {
    auto s = Raw();
    asio::write(s, asio::buffer(Handshake()));
    ASSERT_EQ(ResponseCode(s), StatusCode::kOk);
    std::vector<std::byte> frame(8 + 1 + rng() % 4096);
    for (auto& b : frame) b = static_cast<std::byte>(rng());
    const auto header = wire::EncodeFrameHeader(static_cast<std::uint32_t>(frame.size() - 8), 0);
    std::copy(header.begin(), header.end(), frame.begin());
    asio::write(s, asio::buffer(frame));
    EXPECT_EQ(ResponseCode(s), StatusCode::kInvalidArgument) << "round " << round;
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

// Half a request on a live connection: the server waits for the rest without holding up anyone
// else, and answers it once it is whole.
TEST_F(BadInput, HalfAFrameOnAnOpenConnectionHoldsUpNobody) {
  auto s = Raw();
  asio::write(s, asio::buffer(Handshake()));
  ASSERT_EQ(ResponseCode(s), StatusCode::kOk);
  const auto stats = StatsRequest(4);
  asio::write(s, asio::buffer(stats.data(), stats.size() / 2));
  ExpectHealthy();
  asio::write(s, asio::buffer(stats.data() + stats.size() / 2, stats.size() - stats.size() / 2));
  EXPECT_EQ(ResponseCode(s), StatusCode::kOk);
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
  auto r = ReadAnswer(s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->code, StatusCode::kFailedPrecondition);
  // It names both versions and which side to upgrade.
  EXPECT_NE(r->message.find("protocol version 9.0 is not supported"), std::string::npos)
      << r->message;
  EXPECT_NE(r->message.find(
                fmt::format("this server speaks {}.{}", wire::kMajorVersion, wire::kMinorVersion)),
            std::string::npos)
      << r->message;
  EXPECT_NE(r->message.find("upgrade the server"), std::string::npos) << r->message;
  EXPECT_TRUE(ClosedByServer(s));
}

TEST_F(BadInput, ARequestBeforeTheHandshakeIsRefused) {
  auto s = Raw();
  asio::write(s, asio::buffer(StatsRequest(5)));
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
  ASSERT_EQ(ResponseCode(s), StatusCode::kOk);
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::fb::CreateStatsRequest(fbb);
  fbb.Finish(
      wire::fb::CreateRequestMessage(fbb, 7, static_cast<wire::fb::Request>(200), body.Union()));
  asio::write(s, asio::buffer(Frame(fbb)));
  EXPECT_EQ(ResponseCode(s), StatusCode::kInvalidArgument);
  // Still served on the same connection.
  asio::write(s, asio::buffer(StatsRequest(8)));
  EXPECT_EQ(ResponseCode(s), StatusCode::kOk);
}

TEST_F(BadInput, AMultiGetWithHollowKeysIsAnsweredAndTheConnectionStays) {
  ASSERT_TRUE(client_->CreateTable("accounts").ok());
  auto s = Raw();
  asio::write(s, asio::buffer(Handshake()));
  ASSERT_EQ(ResponseCode(s), StatusCode::kOk);
  // No table name, no keys vector: an unknown table.
  flatbuffers::FlatBufferBuilder bare;
  wire::fb::MultiGetRequestBuilder b(bare);
  auto empty = b.Finish();
  bare.Finish(
      wire::fb::CreateRequestMessage(bare, 1, wire::fb::Request::MultiGetRequest, empty.Union()));
  asio::write(s, asio::buffer(Frame(bare)));
  EXPECT_EQ(ResponseCode(s), StatusCode::kNotFound);
  // Keys without bytes read as the empty key, which no row has.
  flatbuffers::FlatBufferBuilder hollow;
  std::vector<flatbuffers::Offset<wire::fb::Key>> keys(3, wire::fb::KeyBuilder(hollow).Finish());
  auto request = wire::fb::CreateMultiGetRequest(hollow, hollow.CreateString("accounts"),
                                                 hollow.CreateVector(keys));
  hollow.Finish(wire::fb::CreateRequestMessage(hollow, 2, wire::fb::Request::MultiGetRequest,
                                               request.Union()));
  asio::write(s, asio::buffer(Frame(hollow)));
  EXPECT_EQ(ResponseCode(s), StatusCode::kOk);
  asio::write(s, asio::buffer(StatsRequest(3)));
  EXPECT_EQ(ResponseCode(s), StatusCode::kOk);
  ExpectHealthy();
}

TEST_F(BadInput, AThousandIdleConnections) {
  // Both ends of every connection live in this process: about 2,000 descriptors, above the
  // usual soft limit of 1,024 (lockstepd raises its own limit the same way).
  rlimit files{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &files), 0);
  if (files.rlim_cur < 4096 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = std::min<rlim_t>(files.rlim_max, 4096);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &files), 0);
  }
  ASSERT_GE(files.rlim_cur, 2100u) << "this test needs about 2,100 descriptors";
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

// ---- Timeouts and limits ----------------------------------------------------------------------

class ServerLimits : public ServerTest {
 protected:
  void SetUp() override {}  // each test sets its options, then calls Start()
  void Start() {
    ServerTest::SetUp();
    ASSERT_NE(client_, nullptr);
    ASSERT_TRUE(client_->CreateTable("t").ok());
  }
  // How long until the server closes `s` (5 s: it did not).
  static std::chrono::milliseconds UntilClosed(tcp::socket& s) {
    const auto start = std::chrono::steady_clock::now();
    if (!ClosedByServer(s)) return 5000ms;
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start);
  }
};

TEST_F(ServerLimits, AConnectionThatNeverHandshakesIsClosedAtTheHandshakeTimeout) {
  server_options_.handshake_timeout = 1000ms;
  Start();
  auto silent = Raw();
  EXPECT_LT(UntilClosed(silent), 4000ms);
  ExpectHealthy();
}

TEST_F(ServerLimits, AnIdleConnectionIsClosedButABusyOneStays) {
  server_options_.idle_timeout = 1500ms;
  Start();
  auto idle = Raw();
  asio::write(idle, asio::buffer(Handshake()));
  ASSERT_EQ(ResponseCode(idle), StatusCode::kOk);
  auto busy = Raw();
  asio::write(busy, asio::buffer(Handshake()));
  ASSERT_EQ(ResponseCode(busy), StatusCode::kOk);
  // The busy one asks something every 100 ms for twice the idle timeout.
  for (int i = 0; i < 30; ++i) {
    asio::write(busy, asio::buffer(StatsRequest(10 + static_cast<std::uint64_t>(i))));
    ASSERT_EQ(ResponseCode(busy), StatusCode::kOk) << "request " << i;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(ClosedByServer(idle));
  asio::write(busy, asio::buffer(StatsRequest(99)));
  EXPECT_EQ(ResponseCode(busy), StatusCode::kOk);
}

TEST_F(ServerLimits, AConnectionPastTheLimitIsToldWhyAndClosed) {
  server_options_.max_connections = 3;
  Start();  // the fixture's client is the first
  auto second = Raw();
  auto third = Raw();
  for (int i = 0; i < 200 && server_->stats().connections < 3; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(server_->stats().connections, 3u);
  auto refused = Raw();
  auto r = ReadResponse(refused);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, StatusCode::kResourceExhausted);
  EXPECT_TRUE(ClosedByServer(refused));
  EXPECT_GE(server_->stats().refused_connections, 1u);
  // The connections within the limit are served meanwhile.
  EXPECT_TRUE(client_->Commit(client::Transaction().Put("t", "k", "v")).ok());
  asio::write(second, asio::buffer(Handshake()));
  EXPECT_EQ(ResponseCode(second), StatusCode::kOk);
  // Once two leave, a new client gets in (the fixture's health check connects one).
  second.close();
  third.close();
  for (int i = 0; i < 200 && server_->stats().connections > 1; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(server_->stats().connections, 1u);
  ExpectHealthy();
}

}  // namespace
}  // namespace lockstep::integration
