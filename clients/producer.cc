#include "clients/producer.h"

#include <fmt/format.h>

#include <random>

namespace lockstep::client {

namespace {

std::uint64_t EventBytes(const EventAppend& e) {
  std::uint64_t bytes = 64 + e.topic.size() + e.payload.size() + e.type.size();
  if (e.key) bytes += e.key->size();
  for (const auto& [name, value] : e.headers) bytes += name.size() + value.size() + 8;
  return bytes;
}

}  // namespace

Producer::Producer(Client& client, ProducerOptions options)
    : client_(client), options_(std::move(options)) {
  if (options_.producer_id == 0) {
    std::random_device device;
    std::mt19937_64 rng((static_cast<std::uint64_t>(device()) << 32) ^ device());
    do {
      options_.producer_id = rng();
    } while (options_.producer_id == 0);
  }
}

Result<std::unique_ptr<Producer>> Producer::Create(Client& client, ProducerOptions options) {
  if (options.batch_events == 0 || options.batch_bytes == 0 || options.buffer_bytes == 0 ||
      options.max_in_flight_batches == 0) {
    return base::InvalidArgument("producer options: batch and buffer limits must be positive");
  }
  std::unique_ptr<Producer> p(new Producer(client, std::move(options)));
  p->sender_ = std::thread([raw = p.get()] { raw->SenderLoop(); });
  return p;
}

Producer::~Producer() {
  (void)Flush();
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  sender_.join();
}

Status Producer::Send(EventAppend event, DeliveryCallback done) {
  const std::uint64_t bytes = EventBytes(event);
  std::unique_lock lock(mu_);
  if (stopping_) return base::FailedPrecondition("the producer is closed");
  // Backpressure: wait for room (an event larger than the whole buffer goes when it is empty).
  const bool room = cv_.wait_for(lock, options_.send_timeout, [&] {
    return stopping_ || buffered_bytes_ == 0 || buffered_bytes_ + bytes <= options_.buffer_bytes;
  });
  if (!room) {
    return base::ResourceExhausted(fmt::format(
        "the producer's buffer ({} bytes) stayed full for {} ms: the server is slower than the "
        "producer, or unreachable",
        options_.buffer_bytes, options_.send_timeout.count()));
  }
  if (stopping_) return base::FailedPrecondition("the producer is closed");
  const bool first = queue_.empty();
  if (first) first_queued_ = std::chrono::steady_clock::now();
  queue_.push_back({std::move(event), std::move(done), bytes});
  buffered_bytes_ += bytes;
  ++unacknowledged_;
  // The sender sleeps without a deadline while the queue is empty: the first event starts its
  // linger clock, a full batch goes at once.
  if (first || queue_.size() >= options_.batch_events) {
    lock.unlock();
    cv_.notify_all();
  }
  return Status::Ok();
}

Status Producer::Flush(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  flushing_ = true;
  cv_.notify_all();
  const bool done = cv_.wait_for(lock, timeout, [&] { return unacknowledged_ == 0; });
  flushing_ = false;
  if (!done) {
    return base::DeadlineExceeded(fmt::format("{} events still unacknowledged after {} ms",
                                              unacknowledged_, timeout.count()));
  }
  return Status::Ok();
}

void Producer::Finish(std::uint64_t bytes, std::size_t events) {
  // Notified under the lock: once unacknowledged_ reaches 0 a Flush in the destructor may return
  // and the producer go, so nothing of it may be touched after the lock is released.
  std::lock_guard lock(mu_);
  buffered_bytes_ -= bytes;
  unacknowledged_ -= events;
  --in_flight_;
  cv_.notify_all();
}

void Producer::SenderLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    // A batch goes when it is full, its first event has lingered long enough, or on a flush.
    auto ready = [&] {
      if (queue_.empty() || in_flight_ >= options_.max_in_flight_batches) return false;
      return flushing_ || stopping_ || queue_.size() >= options_.batch_events ||
             std::chrono::steady_clock::now() - first_queued_ >= options_.linger;
    };
    if (!ready()) {
      if (stopping_ && queue_.empty() && in_flight_ == 0) return;
      if (queue_.empty() || in_flight_ >= options_.max_in_flight_batches) {
        cv_.wait(lock);
      } else {
        cv_.wait_until(lock, first_queued_ + options_.linger);
      }
      continue;
    }
    Transaction txn;
    auto callbacks = std::make_shared<std::vector<DeliveryCallback>>();
    std::uint64_t bytes = 0;
    while (!queue_.empty() && callbacks->size() < options_.batch_events &&
           (callbacks->empty() || bytes + queue_.front().bytes <= options_.batch_bytes)) {
      Queued q = std::move(queue_.front());
      queue_.pop_front();
      bytes += q.bytes;
      txn.Append(std::move(q.event));
      callbacks->push_back(std::move(q.done));
    }
    if (!queue_.empty()) first_queued_ = std::chrono::steady_clock::now();
    const std::uint64_t sequence = next_sequence_++;
    txn.ProducerSequence(options_.producer_id, sequence);
    ++in_flight_;
    lock.unlock();
    client_.Commit(std::move(txn), [this, sequence, callbacks, bytes](Result<CommitResult> r) {
      Answered(sequence, Batch{std::move(callbacks), std::move(r), bytes});
    });
    lock.lock();
  }
}

// On the client's network thread, where every commit answer arrives. A batch can be answered
// before an earlier one: a commit the server refuses at once (an unknown topic, a frame too
// large) overtakes one still waiting for its sync. Its callbacks wait until every earlier
// batch's have run, so callbacks run in the order Send was called.
void Producer::Answered(std::uint64_t sequence, Batch batch) {
  answered_.emplace(sequence, std::move(batch));
  while (!answered_.empty() && answered_.begin()->first == next_to_deliver_) {
    Batch next = std::move(answered_.begin()->second);
    answered_.erase(answered_.begin());
    ++next_to_deliver_;
    Deliver(next);
    // The last Finish may let a destructor waiting in Flush go on: nothing of the producer is
    // touched after it. A batch still in answered_ holds unacknowledged events, so while the
    // loop goes on, that cannot have happened.
    const bool more = !answered_.empty() && answered_.begin()->first == next_to_deliver_;
    Finish(next.bytes, next.callbacks->size());
    if (!more) return;
  }
}

void Producer::Deliver(const Batch& batch) {
  const auto& callbacks = *batch.callbacks;
  const Result<CommitResult>& r = batch.result;
  for (std::size_t i = 0; i < callbacks.size(); ++i) {
    if (!callbacks[i]) continue;
    if (r.ok() && i < r->events.size()) {
      callbacks[i](r->events[i]);
    } else if (r.ok()) {
      callbacks[i](base::Internal("the commit answered fewer events than were sent"));
    } else {
      callbacks[i](r.status());
    }
  }
}

}  // namespace lockstep::client
