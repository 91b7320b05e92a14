#pragma once
// Producer: event appends batched into transactions (docs/protocol.md, "The client"). Events
// queue in a bounded buffer; a sender thread commits them in batches — when a batch is full
// (events or bytes) or its first event has waited `linger` — each batch one transaction tagged
// with this producer's id and the next sequence number, so a batch resent after a lost
// connection commits once (idempotent by default). Delivery callbacks run in the order Send was
// called. When the buffer is full, Send waits for room (backpressure), up to `send_timeout`.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "clients/client.h"

namespace lockstep::client {

struct ProducerOptions {
  std::chrono::milliseconds linger{2};
  std::uint32_t batch_events = 1000;
  std::uint32_t batch_bytes = 512 << 10;
  std::uint64_t buffer_bytes = 32u << 20;  // queued and in flight
  std::chrono::milliseconds send_timeout{30'000};
  std::uint32_t max_in_flight_batches = 16;
  // Identifies this producer's batches (id, sequence 1, 2, ...) so that a resent batch commits
  // once. 0 (the default): a random id per Producer. A fixed id must never be reused by a new
  // Producer while the server still remembers the old one's batches (the idempotency horizon):
  // its sequences start at 1 again and would be answered with the old batches' results.
  std::uint64_t producer_id = 0;
};

using DeliveryCallback = std::function<void(Result<EventPosition>)>;

class Producer {
 public:
  // `client` must outlive the producer.
  static Result<std::unique_ptr<Producer>> Create(Client& client, ProducerOptions options = {});
  ~Producer();  // flushes, then stops
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;

  // Queues `event`; `done` (optional) runs on the client's network thread once it is durable or
  // failed. kResourceExhausted when the buffer stayed full for send_timeout; kFailedPrecondition
  // after Close.
  Status Send(EventAppend event, DeliveryCallback done = {});
  // Waits until every event sent so far is acknowledged (or failed). kDeadlineExceeded after
  // `timeout`.
  Status Flush(std::chrono::milliseconds timeout = std::chrono::milliseconds(60'000));

  std::uint64_t producer_id() const { return options_.producer_id; }

 private:
  Producer(Client& client, ProducerOptions options);
  void SenderLoop();
  void Finish(std::uint64_t bytes, std::size_t events);
  // A batch's answer, and the callbacks of its events.
  struct Batch {
    std::shared_ptr<std::vector<DeliveryCallback>> callbacks;
    Result<CommitResult> result;
    std::uint64_t bytes = 0;
  };
  void Answered(std::uint64_t sequence, Batch batch);
  void Deliver(const Batch& batch);

  struct Queued {
    EventAppend event;
    DeliveryCallback done;
    std::uint64_t bytes;
  };

  Client& client_;
  ProducerOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;  // room in the buffer, a batch to send, flushes, stop
  std::deque<Queued> queue_;
  std::chrono::steady_clock::time_point first_queued_;
  std::uint64_t buffered_bytes_ = 0;  // queued + in flight
  std::uint64_t unacknowledged_ = 0;  // events queued or in flight
  std::uint32_t in_flight_ = 0;       // batches
  std::uint64_t next_sequence_ = 1;
  // The client's network thread only: batches answered before an earlier one, by sequence, and
  // the sequence whose callbacks run next.
  std::map<std::uint64_t, Batch> answered_;
  std::uint64_t next_to_deliver_ = 1;
  bool flushing_ = false;
  bool stopping_ = false;
  std::thread sender_;
};

}  // namespace lockstep::client
