// Proves fetch: a consumer gets a partition's events in offset order, byte-for-byte as committed
// (decodable event records), from any offset — the start, the middle, through the sparse index
// after a reopen — honouring max_events and max_bytes (at least one event always), runs of a
// batch sent whole or split exactly at the limits, a damaged run count refused, with clear
// errors past the end, for unknown topics and partitions; and a long-poll wakes up when a new
// event becomes durable, or times out.
#include <gtest/gtest.h>

#include <array>
#include <thread>

#include <fmt/format.h>

#include "base/endian.h"
#include "engine/engine.h"
#include "storage/fault_io.h"
#include "tests/engine/engine_fixture.h"

namespace lockstep::engine {
namespace {

using base::StatusCode;

std::vector<base::EventView> Decode(const FetchResult& r) {
  std::vector<base::EventView> out;
  base::Bytes rest = r.records;
  while (!rest.empty()) {
    auto v = base::DecodeEvent(rest);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    if (!v.ok()) break;
    out.push_back(*v);
    rest = rest.subspan(v->record().size());
  }
  return out;
}

std::string Str(base::Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

class FetchTest : public EngineFixture {
 protected:
  // 300 events into partition 0 of "orders" (2 partitions) mixed with noise in partition 1 and
  // table writes, so the fetcher must pick its events out of the log.
  void Fill(Engine& e) {
    ASSERT_TRUE(e.CreateTopic("orders", 2).ok());
    ASSERT_TRUE(e.CreateTable("t").ok());
    for (int i = 0; i < 300; ++i) {
      EventAppend ev;
      ev.topic = "orders";
      ev.partition = PartitionId(0);
      ev.type = "OrderPlaced";
      ev.payload = "order-" + std::to_string(i);
      ev.key = "customer-" + std::to_string(i % 7);
      EventAppend noise = ev;
      noise.partition = PartitionId(1);
      noise.payload = "noise";
      Transaction t;
      t.Append(ev).Put("t", "k" + std::to_string(i % 5), "v");
      if (i % 3 == 0) t.Append(noise);
      ASSERT_TRUE(e.Commit(std::move(t)).get().ok());
    }
  }
};

TEST_F(FetchTest, EventsComeBackInOrderAsCommitted) {
  auto e = std::move(Engine::Open(Options())).value();
  Fill(*e);
  auto r = e->Fetch("orders", PartitionId(0), Offset(0));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->events, 300u);
  EXPECT_EQ(r->next_offset, Offset(300));
  EXPECT_EQ(r->high_watermark, Offset(300));
  auto events = Decode(*r);
  ASSERT_EQ(events.size(), 300u);
  for (std::size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].offset(), Offset(i));
    EXPECT_EQ(Str(events[i].payload()), "order-" + std::to_string(i));
    EXPECT_EQ(events[i].type(), "OrderPlaced");
    if (i > 0) {
      EXPECT_GT(events[i].lsn(), events[i - 1].lsn());
    }
  }
  auto noise = e->Fetch("orders", PartitionId(1), Offset(0));
  ASSERT_TRUE(noise.ok());
  EXPECT_EQ(noise->events, 100u);
}

TEST_F(FetchTest, FromAnyOffsetWithLimits) {
  auto e = std::move(Engine::Open(Options())).value();
  Fill(*e);
  for (std::uint64_t from : {1ull, 63ull, 64ull, 65ull, 150ull, 299ull}) {
    auto r = e->Fetch("orders", PartitionId(0), Offset(from), {.max_events = 10});
    ASSERT_TRUE(r.ok());
    auto events = Decode(*r);
    ASSERT_EQ(events.size(), std::min<std::uint64_t>(10, 300 - from)) << from;
    EXPECT_EQ(events.front().offset(), Offset(from));
    EXPECT_EQ(r->next_offset, Offset(from + events.size()));
  }
  // max_bytes: a budget smaller than one record still returns exactly one.
  auto one = e->Fetch("orders", PartitionId(0), Offset(5), {.max_events = 100, .max_bytes = 1});
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->events, 1u);
  auto some = e->Fetch("orders", PartitionId(0), Offset(5), {.max_events = 100, .max_bytes = 1000});
  ASSERT_TRUE(some.ok());
  EXPECT_GT(some->events, 1u);
  EXPECT_LE(some->records.size(), 1000u);
}

// A run of a partition's events that fits goes out whole as one view; a fetch that starts, or
// stops (at max_events or max_bytes), inside a run takes its events one by one. Every start and
// every limit gives exactly the greatest prefix of the events from there that fits.
TEST_F(FetchTest, RunsGoOutWholeOrEventByEventAtTheEdges) {
  auto e = std::move(Engine::Open(Options())).value();
  ASSERT_TRUE(e->CreateTopic("batches", 2).ok());
  ASSERT_TRUE(e->CreateTable("t").ok());
  std::vector<std::string> payloads;  // partition 0's, by offset
  for (int i = 0; i < 12; ++i) {
    Transaction t;
    t.Put("t", "k", "v");
    for (int j = 0; j <= i % 4; ++j) {  // runs of 1 to 4 events, a lone event every fourth
      payloads.push_back(
          fmt::format("p{}-{}{}", i, j, std::string(static_cast<std::size_t>(j * 7), 'x')));
      EventAppend ev;
      ev.topic = "batches";
      ev.partition = PartitionId(0);
      ev.payload = payloads.back();
      t.Append(ev);
    }
    for (int j = 0; j < 3; ++j) {  // another partition's run in the same record
      EventAppend other;
      other.topic = "batches";
      other.partition = PartitionId(1);
      other.payload = "other";
      t.Append(other);
    }
    ASSERT_TRUE(e->Commit(std::move(t)).get().ok());
  }
  const std::uint64_t total = payloads.size();
  // Each event's record size, from one fetch of everything.
  auto all = e->FetchViews("batches", PartitionId(0), Offset(0), {.max_events = 1000});
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->events, total);
  EXPECT_LT(all->records.size(), total) << "runs did not go out whole";
  std::vector<std::size_t> sizes;
  for (Bytes piece : all->records) {
    while (!piece.empty()) {
      auto ev = base::DecodeEvent(piece);
      ASSERT_TRUE(ev.ok()) << ev.status().ToString();
      sizes.push_back(ev->record().size());
      piece = piece.subspan(ev->record().size());
    }
  }
  ASSERT_EQ(sizes.size(), total);
  for (std::uint64_t from = 0; from <= total; ++from) {
    for (std::uint32_t max_events : {1u, 2u, 3u, 5u, 1000u}) {
      for (std::uint32_t max_bytes : {1u, 150u, 400u, 1u << 20}) {
        SCOPED_TRACE(
            fmt::format("from {} max_events {} max_bytes {}", from, max_events, max_bytes));
        // The greatest prefix that fits, at least one event.
        std::uint64_t want = 0;
        std::size_t bytes = 0;
        while (from + want < total && want < max_events &&
               (want == 0 || bytes + sizes[from + want] <= max_bytes)) {
          bytes += sizes[from + want];
          ++want;
        }
        auto got = e->FetchViews("batches", PartitionId(0), Offset(from),
                                 {.max_events = max_events, .max_bytes = max_bytes});
        ASSERT_TRUE(got.ok()) << got.status().ToString();
        ASSERT_EQ(got->events, want);
        EXPECT_EQ(got->bytes, bytes);
        EXPECT_EQ(got->next_offset, Offset(from + want));
        std::uint64_t offset = from;
        for (Bytes piece : got->records) {
          while (!piece.empty()) {
            auto ev = base::DecodeEvent(piece);
            ASSERT_TRUE(ev.ok()) << ev.status().ToString();
            ASSERT_LT(offset, total);
            EXPECT_EQ(ev->offset(), Offset(offset));
            EXPECT_EQ(Str(ev->payload()), payloads[offset]);
            piece = piece.subspan(ev->record().size());
            ++offset;
          }
        }
        EXPECT_EQ(offset, from + want);
      }
    }
  }
}

// A run's count is covered by no checksum on the fetch path (batches are not hashed again, and
// each event's checksum covers the event alone): a damaged count must be refused, never let the
// walk skip events or repeat them.
TEST_F(FetchTest, ADamagedRunCountIsRefusedNotFollowed) {
  auto e = std::move(Engine::Open(Options())).value();
  ASSERT_TRUE(e->CreateTopic("t", 1).ok());
  for (int events : {3, 2}) {  // a run of offsets 0-2, then one of 3-4
    Transaction txn;
    for (int i = 0; i < events; ++i) txn.Append(Event("t", "payload"));
    ASSERT_TRUE(e->Commit(std::move(txn)).get().ok());
  }
  // The first run's header: kind 6, the topic's id, partition 0, count 3.
  std::string segment;
  std::size_t count_at = 0;
  auto names = io_.ListDir("db/log");
  ASSERT_TRUE(names.ok());
  for (const std::string& name : *names) {
    auto bytes = io_.ReadAll("db/log/" + name);
    if (!bytes.ok()) continue;
    for (std::size_t i = 0; i + 13 <= bytes->size() && segment.empty(); ++i) {
      if ((*bytes)[i] == std::byte{6} && base::LoadLe32(bytes->data() + i + 5) == 0 &&
          base::LoadLe32(bytes->data() + i + 9) == 3) {
        segment = "db/log/" + name;
        count_at = i + 9;
      }
    }
  }
  ASSERT_FALSE(segment.empty()) << "no run header found";
  auto clean = e->FetchViews("t", PartitionId(0), Offset(0));
  ASSERT_TRUE(clean.ok()) << clean.status().ToString();
  ASSERT_EQ(clean->events, 5u);
  for (std::uint32_t lie : {5u, 2u}) {
    SCOPED_TRACE(fmt::format("count {}", lie));
    std::array<std::byte, 4> count;
    base::StoreLe32(count.data(), lie);
    ASSERT_TRUE(io_.Corrupt(segment, count_at, count).ok());
    auto got = e->FetchViews("t", PartitionId(0), Offset(0));
    EXPECT_EQ(got.status().code(), StatusCode::kDataLoss) << got.status().ToString();
  }
}

TEST_F(FetchTest, EdgesAndBadInput) {
  auto e = std::move(Engine::Open(Options())).value();
  Fill(*e);
  auto at_end = e->Fetch("orders", PartitionId(0), Offset(300));
  ASSERT_TRUE(at_end.ok());
  EXPECT_EQ(at_end->events, 0u);
  EXPECT_EQ(at_end->next_offset, Offset(300));
  auto past = e->Fetch("orders", PartitionId(0), Offset(301));
  EXPECT_EQ(past.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(past.status().message().find("past the end"), std::string::npos);
  EXPECT_EQ(e->Fetch("nope", PartitionId(0), Offset(0)).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(e->Fetch("orders", PartitionId(2), Offset(0)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(e->Fetch("orders", PartitionId(0), Offset(0), {.max_events = 0})->events, 0u);
}

TEST_F(FetchTest, TheIndexIsRebuiltOnReopen) {
  {
    auto e = std::move(Engine::Open(Options())).value();
    Fill(*e);
  }
  auto e = std::move(Engine::Open(Options())).value();
  auto r = e->Fetch("orders", PartitionId(0), Offset(200), {.max_events = 1000});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto events = Decode(*r);
  ASSERT_EQ(events.size(), 100u);
  EXPECT_EQ(Str(events.back().payload()), "order-299");
}

TEST_F(FetchTest, LongPollWakesOnANewEventOrTimesOut) {
  auto e = std::move(Engine::Open(Options())).value();
  ASSERT_TRUE(e->CreateTopic("t", 1).ok());
  auto timed_out = e->WaitForEvents("t", PartitionId(0), Offset(0), std::chrono::milliseconds(30));
  ASSERT_TRUE(timed_out.ok());
  EXPECT_EQ(*timed_out, Offset(0));
  std::thread producer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EventAppend ev;
    ev.topic = "t";
    ASSERT_TRUE(e->Commit(Transaction().Append(ev)).get().ok());
  });
  auto woke = e->WaitForEvents("t", PartitionId(0), Offset(0), std::chrono::seconds(10));
  producer.join();
  ASSERT_TRUE(woke.ok());
  EXPECT_EQ(*woke, Offset(1));
  EXPECT_EQ(e->Fetch("t", PartitionId(0), Offset(0))->events, 1u);
}

}  // namespace
}  // namespace lockstep::engine
