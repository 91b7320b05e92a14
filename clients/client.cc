#include "clients/client.h"

#include <fmt/format.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <span>
#include <thread>

#include <pthread.h>

#include "protocol/wire/frame.h"

namespace lockstep::client {

namespace asio = boost::asio;
using asio::ip::tcp;
namespace fb = wire::fb;
using flatbuffers::FlatBufferBuilder;
template <typename T>
using FbOffset = flatbuffers::Offset<T>;
using Clock = std::chrono::steady_clock;

// ---- Transaction ----------------------------------------------------------------------------

Transaction& Transaction::RequireAbsent(std::string table, std::string key) & {
  preconditions_.push_back({Precondition::Kind::kAbsent, std::move(table), std::move(key), {}});
  return *this;
}
Transaction& Transaction::RequireExists(std::string table, std::string key) & {
  preconditions_.push_back({Precondition::Kind::kExists, std::move(table), std::move(key), {}});
  return *this;
}
Transaction& Transaction::RequireVersion(std::string table, std::string key, Lsn version) & {
  preconditions_.push_back(
      {Precondition::Kind::kVersion, std::move(table), std::move(key), version});
  return *this;
}
Transaction& Transaction::Put(std::string table, std::string key, std::string value) & {
  writes_.push_back({false, std::move(table), std::move(key), std::move(value)});
  return *this;
}
Transaction& Transaction::Delete(std::string table, std::string key) & {
  writes_.push_back({true, std::move(table), std::move(key), {}});
  return *this;
}
Transaction& Transaction::Append(EventAppend event) & {
  events_.push_back(std::move(event));
  return *this;
}
Transaction& Transaction::CommitOffset(OffsetCommit commit) & {
  offsets_.push_back(std::move(commit));
  return *this;
}
Transaction& Transaction::IdempotencyKey(std::string key) & {
  idempotency_key_ = std::move(key);
  producer_sequence_.reset();
  return *this;
}
Transaction& Transaction::ProducerSequence(std::uint64_t producer_id, std::uint64_t sequence) & {
  producer_sequence_ = {producer_id, sequence};
  idempotency_key_.reset();
  return *this;
}

// ---- The connection ---------------------------------------------------------------------------

namespace {

// Responses from this size on are read straight into a block of their own (fetches of many
// events, which a consumer then keeps without copying them).
constexpr std::uint32_t kInPlaceFrameBytes = 256 << 10;

// A received response: the verified message and the attachment, pointing into the read buffer
// — valid only during the callback, which converts what it needs right away — or into `body`.
struct Response {
  const fb::ResponseMessage* message = nullptr;
  std::span<const std::byte> attachment;
  // A large response read in place (wire::FrameReader): `message` and `attachment` point into
  // it; a callback may move it out to keep the attachment (a fetch's records) without a copy.
  base::Block body;
};

struct Call {
  // Header and message, ready to write (again, after a reconnect). A write copies it into the
  // connection's outgoing buffer, so the call may end while that write is under way.
  std::vector<std::byte> frame;
  bool resend_safe = false;
  bool sent = false;  // written (maybe partly) on some connection
  Clock::time_point deadline;
  std::chrono::milliseconds budget{0};  // the deadline, from when the call was made
  std::function<void(Result<Response>)> done;
};

}  // namespace

class Client::Impl {
 public:
  explicit Impl(ClientOptions options)
      : options_(std::move(options)), socket_(io_), timer_(io_), sweeper_(io_) {}

  const std::string& client_name() const { return options_.client_name; }

  ~Impl() {
    asio::post(io_, [this] {
      closed_ = true;
      // Handlers of a connection attempt already under way (a resolve or connect whose
      // completion is queued) are ignored from now on: one of them would otherwise open the
      // socket again, reach a live server and keep this loop, and the join below, waiting.
      ++generation_;
      resolver_.cancel();
      FailAll(base::Unavailable("the client was closed"));
      boost::system::error_code ignored;
      socket_.close(ignored);
      timer_.cancel();
      sweeper_.cancel();
      work_.reset();
    });
    if (thread_.joinable()) thread_.join();
  }

  Status Start() {
    const auto colon = options_.broker.rfind(':');
    if (colon == std::string::npos) {
      return base::InvalidArgument(fmt::format("broker {:?} is not HOST:PORT", options_.broker));
    }
    host_ = options_.broker.substr(0, colon);
    port_ = options_.broker.substr(colon + 1);
    thread_ = std::thread([this] { io_.run(); });
    std::promise<Status> ready;
    auto future = ready.get_future();
    asio::post(io_, [this, &ready] {
      on_ready_ = [&ready](Status s) { ready.set_value(std::move(s)); };
      Sweep();
      Connect();
    });
    return future.get();
  }

  // Any thread: builds the frame now, then queues it on the network thread.
  // `extra`: time the server may legitimately take on top of the retry deadline (a long-poll's
  // wait).
  void Submit(FlatBufferBuilder& fbb, flatbuffers::Offset<void> request, fb::Request type,
              bool resend_safe, std::function<void(Result<Response>)> done,
              std::chrono::milliseconds extra = std::chrono::milliseconds(0)) {
    const std::uint64_t id = next_id_.fetch_add(1);
    fbb.Finish(fb::CreateRequestMessage(fbb, id, type, request));
    // A request the server would refuse as a frame (and close the connection for) is refused
    // here, with the reason: resending it could never succeed.
    const std::uint64_t limit =
        std::min<std::uint64_t>(options_.max_frame_bytes, server_max_frame_.load());
    if (fbb.GetSize() + 4 > limit) {
      Status too_big = base::InvalidArgument(
          fmt::format("the request is {} bytes, above the frame limit of {} bytes: split it",
                      fbb.GetSize(), limit));
      asio::post(io_, [done = std::move(done), too_big]() { done(too_big); });
      return;
    }
    Call call;
    const auto header = wire::EncodeFrameHeader(fbb.GetSize(), 0);
    call.frame.resize(header.size() + fbb.GetSize());
    std::memcpy(call.frame.data(), header.data(), header.size());
    std::memcpy(call.frame.data() + header.size(), fbb.GetBufferPointer(), fbb.GetSize());
    call.resend_safe = resend_safe;
    call.budget = options_.retry_deadline + extra;
    call.deadline = Clock::now() + call.budget;
    call.done = std::move(done);
    if (io_.get_executor().running_in_this_thread()) {
      // From a callback on the network thread (a pipelined caller refilling its window): one
      // post takes every call submitted in this turn, instead of one post each.
      if (submitted_.empty()) asio::post(io_, [this] { TakeSubmitted(); });
      submitted_.emplace_back(id, std::move(call));
      return;
    }
    asio::post(io_, [this, id, call = std::move(call)]() mutable {
      Queue(id, std::move(call));
      if (ready_) WriteNext();
    });
  }

  std::uint64_t reconnects() const { return reconnects_.load(); }
  bool connected() const { return connected_.load(std::memory_order_acquire); }

 private:
  void Connect() {
    if (closed_) return;
    const std::uint64_t gen = generation_;
    resolver_.async_resolve(
        host_, port_,
        [this, gen](boost::system::error_code ec, tcp::resolver::results_type endpoints) {
          if (gen != generation_) return;
          if (ec) return Lost(fmt::format("cannot resolve {}: {}", options_.broker, ec.message()));
          timer_.expires_after(options_.connect_timeout);
          timer_.async_wait([this](boost::system::error_code e) {
            if (!e) socket_.cancel();  // the connect took too long
          });
          asio::async_connect(
              socket_, endpoints, [this, gen](boost::system::error_code e, const tcp::endpoint&) {
                if (gen != generation_) return;
                timer_.cancel();
                if (e) {
                  return Lost(
                      fmt::format("cannot connect to {}: {}", options_.broker, e.message()));
                }
                boost::system::error_code ignored;
                socket_.set_option(tcp::no_delay(true), ignored);
                Handshake();
              });
        });
  }

  // Network thread: the calls submitted from its own callbacks, in the order they were made.
  void TakeSubmitted() {
    auto taken = std::exchange(submitted_, {});
    for (auto& [id, call] : taken) Queue(id, std::move(call));
    if (ready_) WriteNext();
    // Reused: the next turn's submissions allocate nothing for the list.
    taken.clear();
    if (submitted_.empty()) submitted_ = std::move(taken);
  }

  void Queue(std::uint64_t id, Call call) {
    if (closed_) return call.done(base::Unavailable("the client was closed"));
    calls_.emplace(id, std::move(call));
    queue_.push_back(id);
  }

  void Handshake() {
    FlatBufferBuilder fbb(128);
    auto hs = fb::CreateHandshakeRequest(fbb, wire::kMajorVersion, wire::kMinorVersion,
                                         fbb.CreateString(options_.client_name));
    fbb.Finish(fb::CreateRequestMessage(fbb, 0, fb::Request::HandshakeRequest, hs.Union()));
    const auto header = wire::EncodeFrameHeader(fbb.GetSize(), 0);
    handshake_.resize(header.size() + fbb.GetSize());
    std::memcpy(handshake_.data(), header.data(), header.size());
    std::memcpy(handshake_.data() + header.size(), fbb.GetBufferPointer(), fbb.GetSize());
    asio::async_write(socket_, asio::buffer(handshake_),
                      [this, gen = generation_](boost::system::error_code ec, std::size_t) {
                        if (gen != generation_) return;
                        if (ec) return Lost("handshake: " + ec.message());
                      });
    reader_.emplace(options_.max_frame_bytes, kInPlaceFrameBytes, blocks_);
    ReadMore();
  }

  // Reads whatever the socket has (one system call for many pipelined responses), then
  // handles every complete frame in it.
  void ReadMore() {
    const std::span<std::byte> room = reader_->Room();
    socket_.async_read_some(
        asio::buffer(room.data(), room.size()),
        [this, gen = generation_](boost::system::error_code ec, std::size_t n) {
          if (gen != generation_) return;
          if (ec) {
            return Lost(fmt::format("connection to {} lost: {}", options_.broker, ec.message()));
          }
          reader_->Filled(n);
          ProcessFrames(gen);
        });
  }

  // Handles the complete frames read, a turn of kFramesPerTurn at a time: what their callbacks
  // submitted goes out before the next turn, so the server starts on it while this thread works
  // on the rest of a large read, instead of both waiting for the other's whole batch.
  void ProcessFrames(std::uint64_t gen) {
    constexpr int kFramesPerTurn = 32;
    for (int handled = 0; handled < kFramesPerTurn; ++handled) {
      auto frame = reader_->Next();
      if (!frame.ok()) return Lost("bad frame from the server: " + frame.status().ToString());
      if (!*frame) return ReadMore();
      OnFrame(**frame);
      if (gen != generation_) return;  // the frame ended this connection
    }
    asio::post(io_, [this, gen] {
      if (gen == generation_) ProcessFrames(gen);
    });
  }

  void OnFrame(wire::FrameReader::Frame& frame) {
    auto message = wire::VerifyResponse(frame.message);
    if (!message.ok()) return Lost("bad response from the server: " + message.status().ToString());
    Response r;
    r.message = *message;
    r.attachment = frame.attachment;
    r.body = std::move(frame.body);
    const std::uint64_t id = r.message->correlation_id();
    if (!ready_) {
      // The handshake's answer (or a refusal: an old server, a full one).
      if (const fb::Error* error = r.message->error()) {
        const Status why(wire::FromWire(error->code()),
                         error->message() ? error->message()->str() : "");
        // A full server (its connection limit) is worth retrying; anything else is final.
        if (why.code() != base::StatusCode::kResourceExhausted) failed_handshake_ = why;
        return Lost("handshake refused: " + why.ToString());
      }
      if (r.message->response_type() != fb::Response::HandshakeResponse) {
        return Lost("the server did not answer the handshake");
      }
      if (const auto* hs = r.message->response_as_HandshakeResponse()) {
        server_max_frame_.store(hs->max_frame_bytes() == 0 ? UINT32_MAX : hs->max_frame_bytes());
      }
      ready_ = true;
      connected_.store(true, std::memory_order_release);
      last_error_.clear();  // a later timeout must not quote an outage that is over
      backoff_ = options_.backoff_initial;
      if (on_ready_) std::exchange(on_ready_, nullptr)(Status::Ok());
      // Everything not yet sent, once each, in the order it was made.
      queue_.clear();
      for (auto& [call_id, call] : calls_) {
        if (!call.sent) queue_.push_back(call_id);
      }
      return WriteNext();
    }
    auto it = calls_.find(id);
    if (it == calls_.end()) return;  // answered after its deadline
    auto done = std::move(it->second.done);
    calls_.erase(it);
    if (const fb::Error* error = r.message->error()) {
      done(Status(wire::FromWire(error->code()),
                  error->message() ? error->message()->str() : std::string()));
    } else {
      done(std::move(r));
    }
  }

  // Writes the queued requests, up to kWriteBytes at a time, with one write from one buffer:
  // copying a frame (a few hundred bytes) costs less than keeping it alive for the write and
  // gathering it, and the buffer is reused, so writing allocates nothing.
  void WriteNext() {
    if (writing_ || !ready_) return;
    constexpr std::size_t kWriteBytes = 256 << 10;
    out_.clear();
    while (!queue_.empty() && out_.size() < kWriteBytes) {
      auto it = calls_.find(queue_.front());
      queue_.pop_front();
      if (it == calls_.end()) continue;
      it->second.sent = true;
      out_.insert(out_.end(), it->second.frame.begin(), it->second.frame.end());
    }
    if (out_.empty()) return;
    writing_ = true;
    // out_ stays untouched until the completion (writing_); a connection that breaks cancels
    // the write when its socket is closed, before a new connection's write refills out_.
    asio::async_write(socket_, asio::buffer(out_),
                      [this, gen = generation_](boost::system::error_code ec, std::size_t) {
                        if (gen != generation_) return;
                        writing_ = false;
                        if (ec) return Lost("write: " + ec.message());
                        // One huge request does not pin its size in memory for good.
                        if (out_.capacity() > 4 * kWriteBytes) out_ = {};
                        WriteNext();
                      });
  }

  // The connection broke (or never came up): what may be sent again waits for the next one.
  void Lost(const std::string& why) {
    if (closed_) return;
    ++generation_;  // handlers of the broken connection are ignored from now on
    const bool was_ready = ready_;
    ready_ = false;
    connected_.store(false, std::memory_order_release);
    writing_ = false;
    boost::system::error_code ignored;
    socket_.close(ignored);
    socket_ = tcp::socket(io_);
    queue_.clear();
    for (auto it = calls_.begin(); it != calls_.end();) {
      Call& call = it->second;
      if (call.sent && !call.resend_safe) {
        auto done = std::move(call.done);
        it = calls_.erase(it);
        done(base::Unavailable(
            fmt::format("{}; the request was sent, so its outcome is unknown", why)));
      } else {
        call.sent = false;
        ++it;
      }
    }
    if (on_ready_ && !failed_handshake_.ok()) {
      std::exchange(on_ready_, nullptr)(failed_handshake_);
      return;
    }
    if (was_ready) reconnects_.fetch_add(1);
    last_error_ = why;
    timer_.expires_after(backoff_);
    backoff_ = std::min(backoff_ * 2, options_.backoff_max);
    timer_.async_wait([this](boost::system::error_code ec) {
      if (!ec) Connect();
    });
  }

  // Every 20 ms: calls past their deadline fail, saying whether they may have taken effect.
  void Sweep() {
    const auto now = Clock::now();
    for (auto it = calls_.begin(); it != calls_.end();) {
      if (it->second.deadline > now) {
        ++it;
        continue;
      }
      auto done = std::move(it->second.done);
      const bool sent = it->second.sent;
      const std::chrono::milliseconds budget = it->second.budget;
      it = calls_.erase(it);
      done(base::DeadlineExceeded(
          fmt::format("no answer from {} within {} ms ({}); {}", options_.broker, budget.count(),
                      last_error_.empty() ? "no error seen" : last_error_,
                      sent ? "the request was sent: its outcome is unknown"
                           : "the request was never sent: it did not happen")));
    }
    if (on_ready_ && start_deadline_ < now) {
      std::exchange(on_ready_, nullptr)(
          base::Unavailable(fmt::format("cannot reach {} within {} ms: {}", options_.broker,
                                        options_.retry_deadline.count(), last_error_)));
    }
    if (closed_) return;
    sweeper_.expires_after(std::chrono::milliseconds(20));
    sweeper_.async_wait([this](boost::system::error_code ec) {
      if (!ec) Sweep();
    });
  }

  void FailAll(const Status& why) {
    auto calls = std::move(calls_);
    calls_.clear();
    for (auto& [id, call] : calls) call.done(why);
  }

  ClientOptions options_;
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{
      asio::make_work_guard(io_)};
  tcp::resolver resolver_{io_};
  tcp::socket socket_;
  asio::steady_timer timer_;
  asio::steady_timer sweeper_;
  std::thread thread_;
  std::string host_, port_;
  std::atomic<std::uint64_t> next_id_{1};
  std::atomic<std::uint64_t> reconnects_{0};
  std::atomic<bool> connected_{false};                       // ready_, for other threads
  std::atomic<std::uint32_t> server_max_frame_{UINT32_MAX};  // from the handshake
  // Network thread only:
  std::map<std::uint64_t, Call> calls_;  // by id: resent in the order they were made
  std::deque<std::uint64_t> queue_;
  std::vector<std::pair<std::uint64_t, Call>> submitted_;  // see TakeSubmitted
  std::vector<std::byte> handshake_;
  std::vector<std::byte> out_;               // the requests being written (see WriteNext)
  std::optional<wire::FrameReader> reader_;  // per connection
  // Blocks for large responses, recycled once their holders (consumers' batches) let go: 16 MiB
  // keeps four 4 MiB fetches' blocks between a release and the next response.
  std::shared_ptr<base::BlockPool> blocks_ = base::BlockPool::Create(16 << 20);
  std::uint64_t generation_ = 0;  // of the current connection attempt
  bool ready_ = false;
  bool writing_ = false;
  bool closed_ = false;
  std::chrono::milliseconds backoff_{20};
  std::string last_error_;
  Status failed_handshake_ = Status::Ok();
  std::function<void(Status)> on_ready_;
  Clock::time_point start_deadline_ = Clock::now() + options_.retry_deadline;

  friend class Client;
};

// ---- Client -------------------------------------------------------------------------------

namespace {

template <typename T, typename Start>
Result<T> Wait(Start&& start) {
  std::promise<Result<T>> promise;
  auto future = promise.get_future();
  start([&promise](Result<T> r) { promise.set_value(std::move(r)); });
  return future.get();
}

std::string Str(const flatbuffers::String* s) { return s == nullptr ? std::string() : s->str(); }
std::string Str(const flatbuffers::Vector<std::uint8_t>* v) {
  return v == nullptr ? std::string()
                      : std::string(reinterpret_cast<const char*>(v->data()), v->size());
}
FbOffset<flatbuffers::Vector<std::uint8_t>> Bytes(FlatBufferBuilder& fbb, const std::string& s) {
  return fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

// Checks the response type; the caller converts the body.
template <typename T>
Result<const T*> As(const Result<Response>& r, const char* what) {
  if (!r.ok()) return r.status();
  const T* body = r->message->template response_as<T>();
  if (body == nullptr) {
    return base::Internal(fmt::format("the server answered {} with the wrong message", what));
  }
  return body;
}

// A key no other transaction has: a random 128-bit prefix (four words of the system's random
// device) drawn per process — again in a forked child, so parent and child never share one —
// then a counter. Consecutive keys sort next to each other, so the server's idempotency table
// inserts them along one warm path of its skip list instead of at a random place each (a cache
// miss per level). The fork handlers hold the lock across fork(), so a child never inherits it
// taken by a thread it does not have.
std::mutex key_mu;
std::string key_prefix;  // empty: draw one before the next key
std::uint64_t key_counter = 0;
std::once_flag key_fork_handlers;

std::string NewIdempotencyKey() {
  std::call_once(key_fork_handlers, [] {
    ::pthread_atfork([] { key_mu.lock(); }, [] { key_mu.unlock(); },
                     [] {
                       key_prefix.clear();
                       key_mu.unlock();
                     });
  });
  std::lock_guard lock(key_mu);
  if (key_prefix.empty()) {
    std::random_device device;
    std::uint32_t words[4];
    for (std::uint32_t& w : words) w = device();
    key_prefix =
        fmt::format("client-{:08x}{:08x}{:08x}{:08x}-", words[0], words[1], words[2], words[3]);
    key_counter = 0;
  }
  // The prefix, then the counter in 16 hex digits (by hand: this runs once per commit).
  std::string key;
  key.reserve(key_prefix.size() + 16);
  key = key_prefix;
  const std::uint64_t n = key_counter++;
  for (int shift = 60; shift >= 0; shift -= 4)
    key.push_back("0123456789abcdef"[(n >> shift) & 0xf]);
  return key;
}

// Strings written once per message: a lookup among the few already written (a linear scan —
// a transaction names a handful), else a new one.
class NameCache {
 public:
  explicit NameCache(FlatBufferBuilder& fbb) : fbb_(fbb) {}
  FbOffset<flatbuffers::String> Get(const std::string& name) {
    for (std::size_t i = 0; i < count_; ++i) {
      if (*names_[i] == name) return offsets_[i];
    }
    auto offset = fbb_.CreateString(name);
    if (count_ < kSlots) {
      names_[count_] = &name;
      offsets_[count_++] = offset;
    }
    return offset;
  }

 private:
  static constexpr std::size_t kSlots = 8;
  FlatBufferBuilder& fbb_;
  std::array<const std::string*, kSlots> names_{};
  std::array<FbOffset<flatbuffers::String>, kSlots> offsets_{};
  std::size_t count_ = 0;
};

FbOffset<fb::OffsetCommit> BuildOffset(FlatBufferBuilder& fbb, const OffsetCommit& o) {
  return fb::CreateOffsetCommit(fbb, fbb.CreateString(o.group), o.generation,
                                fbb.CreateString(o.topic), o.partition.value(), o.offset.value());
}

}  // namespace

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  LOCKSTEP_RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

std::uint64_t Client::reconnects() const { return impl_->reconnects(); }
bool Client::connected() const { return impl_->connected(); }

void Client::Commit(Transaction txn, Callback<CommitResult> done) {
  // Without a key of its own, a transaction gets a random one: resending it is then safe.
  if (!txn.idempotency_key() && !txn.producer_sequence()) txn.IdempotencyKey(NewIdempotencyKey());
  FlatBufferBuilder fbb(1024);
  // A transaction names its few tables and topics again and again (a read-check and a put of
  // each key): each name is written once and referred to after that.
  NameCache names(fbb);
  // The offset lists are reused by the thread's next commit: encoding allocates nothing for them.
  thread_local std::vector<FbOffset<fb::Precondition>> pre;
  thread_local std::vector<FbOffset<fb::Write>> writes;
  thread_local std::vector<FbOffset<fb::Event>> events;
  thread_local std::vector<FbOffset<fb::EventHeader>> headers;
  pre.clear();
  writes.clear();
  events.clear();
  for (const Precondition& p : txn.preconditions()) {
    pre.push_back(fb::CreatePrecondition(fbb, static_cast<fb::PreconditionKind>(p.kind),
                                         names.Get(p.table), Bytes(fbb, p.key), p.version.value()));
  }
  for (const TableWrite& w : txn.writes()) {
    writes.push_back(fb::CreateWrite(fbb, names.Get(w.table), Bytes(fbb, w.key),
                                     Bytes(fbb, w.value), w.is_delete));
  }
  for (const EventAppend& e : txn.events()) {
    FbOffset<flatbuffers::Vector<FbOffset<fb::EventHeader>>> header_list;
    if (!e.headers.empty()) {
      headers.clear();
      for (const auto& [name, value] : e.headers) {
        headers.push_back(fb::CreateEventHeader(fbb, names.Get(name), Bytes(fbb, value)));
      }
      header_list = fbb.CreateVector(headers);
    }
    events.push_back(fb::CreateEvent(
        fbb, names.Get(e.topic), e.partition ? static_cast<std::int64_t>(e.partition->value()) : -1,
        e.key ? Bytes(fbb, *e.key) : FbOffset<flatbuffers::Vector<std::uint8_t>>(),
        Bytes(fbb, e.payload), names.Get(e.type), e.schema_version, header_list,
        e.timestamp_ms.value_or(-1)));
  }
  std::vector<FbOffset<fb::OffsetCommit>> offsets;
  for (const OffsetCommit& o : txn.offsets()) offsets.push_back(BuildOffset(fbb, o));
  const auto producer = txn.producer_sequence();
  auto request =
      fb::CreateCommitRequest(fbb, fbb.CreateVector(pre), fbb.CreateVector(writes),
                              fbb.CreateVector(events), fbb.CreateVector(offsets),
                              txn.idempotency_key() ? Bytes(fbb, *txn.idempotency_key())
                                                    : FbOffset<flatbuffers::Vector<std::uint8_t>>(),
                              producer ? producer->first : 0, producer ? producer->second : 0);
  impl_->Submit(fbb, request.Union(), fb::Request::CommitRequest, /*resend_safe=*/true,
                [done = std::move(done)](Result<Response> r) {
                  auto body = As<fb::CommitResponse>(r, "a commit");
                  if (!body.ok()) return done(body.status());
                  CommitResult out;
                  out.lsn = Lsn((*body)->lsn());
                  if (const auto* positions = (*body)->events()) {
                    for (const fb::EventPosition* e : *positions) {
                      out.events.push_back(
                          {Str(e->topic()), PartitionId(e->partition()), Offset(e->offset())});
                    }
                  }
                  done(std::move(out));
                });
}

std::future<Result<CommitResult>> Client::CommitAsync(Transaction txn) {
  auto promise = std::make_shared<std::promise<Result<CommitResult>>>();
  auto future = promise->get_future();
  Commit(std::move(txn), [promise](Result<CommitResult> r) { promise->set_value(std::move(r)); });
  return future;
}

Result<CommitResult> Client::Commit(Transaction txn) { return CommitAsync(std::move(txn)).get(); }

Status Client::CommitOffsets(std::vector<OffsetCommit> offsets) {
  Transaction txn;
  for (auto& o : offsets) txn.CommitOffset(std::move(o));
  return Commit(std::move(txn)).status();
}

namespace {
Status EmptyOk(const Result<Response>& r) { return As<fb::Empty>(r, "a request").status(); }
}  // namespace

Status Client::CreateTopic(const std::string& name, std::uint32_t partitions,
                           std::int64_t retention_ms, std::uint64_t retention_bytes) {
  std::promise<Status> promise;
  auto future = promise.get_future();
  FlatBufferBuilder fbb(128);
  auto request = fb::CreateCreateTopicRequest(fbb, fbb.CreateString(name), partitions, retention_ms,
                                              retention_bytes);
  // Catalog changes are not resent after a lost connection: a second "exists" would hide
  // whether the first one took effect.
  impl_->Submit(fbb, request.Union(), fb::Request::CreateTopicRequest, /*resend_safe=*/false,
                [&promise](Result<Response> r) { promise.set_value(EmptyOk(r)); });
  return future.get();
}

namespace {
template <typename Req>
Status SimpleCatalog(Client::Impl* impl, const std::string& name, fb::Request type,
                     FbOffset<Req> (*create)(FlatBufferBuilder&, FbOffset<flatbuffers::String>)) {
  std::promise<Status> promise;
  auto future = promise.get_future();
  FlatBufferBuilder fbb(64);
  auto request = create(fbb, fbb.CreateString(name));
  impl->Submit(fbb, request.Union(), type, false,
               [&promise](Result<Response> r) { promise.set_value(EmptyOk(r)); });
  return future.get();
}
}  // namespace

Status Client::DropTopic(const std::string& name) {
  return SimpleCatalog<fb::DropTopicRequest>(impl_.get(), name, fb::Request::DropTopicRequest,
                                             &fb::CreateDropTopicRequest);
}
Status Client::CreateTable(const std::string& name) {
  return SimpleCatalog<fb::CreateTableRequest>(impl_.get(), name, fb::Request::CreateTableRequest,
                                               &fb::CreateCreateTableRequest);
}
Status Client::DropTable(const std::string& name) {
  return SimpleCatalog<fb::DropTableRequest>(impl_.get(), name, fb::Request::DropTableRequest,
                                             &fb::CreateDropTableRequest);
}

namespace {
template <typename T, typename Build, typename Parse>
Result<T> Request(Client::Impl* impl, fb::Request type, bool resend_safe, Build&& build,
                  Parse&& parse) {
  std::promise<Result<T>> promise;
  auto future = promise.get_future();
  FlatBufferBuilder fbb(256);
  auto request = build(fbb);
  impl->Submit(fbb, request.Union(), type, resend_safe,
               [&promise, &parse](Result<Response> r) { promise.set_value(parse(r)); });
  return future.get();
}
}  // namespace

Result<std::vector<TopicInfo>> Client::ListTopics() {
  return Request<std::vector<TopicInfo>>(
      impl_.get(), fb::Request::ListTopicsRequest, true,
      [](FlatBufferBuilder& fbb) { return fb::CreateListTopicsRequest(fbb); },
      [](const Result<Response>& r) -> Result<std::vector<TopicInfo>> {
        LOCKSTEP_ASSIGN_OR_RETURN(const fb::ListTopicsResponse* body,
                                  As<fb::ListTopicsResponse>(r, "list topics"));
        std::vector<TopicInfo> out;
        if (body->topics() == nullptr) return out;
        for (const fb::Topic* t : *body->topics()) {
          TopicInfo info{
              Str(t->name()), t->partitions(), t->retention_ms(), t->retention_bytes(), {}, {}};
          if (t->start_offsets()) {
            for (std::uint64_t o : *t->start_offsets()) info.start_offsets.emplace_back(o);
          }
          if (t->end_offsets()) {
            for (std::uint64_t o : *t->end_offsets()) info.end_offsets.emplace_back(o);
          }
          out.push_back(std::move(info));
        }
        return out;
      });
}

namespace {
std::vector<std::string> Strings(const flatbuffers::Vector<FbOffset<flatbuffers::String>>* v) {
  std::vector<std::string> out;
  if (v != nullptr) {
    for (const flatbuffers::String* s : *v) out.push_back(Str(s));
  }
  return out;
}
Row ToRow(const fb::Row* r) { return {Str(r->key()), Str(r->value()), Lsn(r->version())}; }
std::vector<TopicPartitions> Assignment(
    const flatbuffers::Vector<FbOffset<fb::TopicPartitions>>* v) {
  std::vector<TopicPartitions> out;
  if (v == nullptr) return out;
  for (const fb::TopicPartitions* t : *v) {
    TopicPartitions tp{Str(t->topic()), {}};
    if (t->partitions() != nullptr) {
      for (std::uint32_t p : *t->partitions()) tp.partitions.emplace_back(p);
    }
    out.push_back(std::move(tp));
  }
  return out;
}
Result<Membership> ToMembership(const Result<Response>& r) {
  LOCKSTEP_ASSIGN_OR_RETURN(const fb::MemberAssignment* body,
                            As<fb::MemberAssignment>(r, "a group membership request"));
  return Membership{Str(body->member_id()), body->generation(), Assignment(body->assignment()),
                    std::chrono::milliseconds(body->heartbeat_interval_ms())};
}
}  // namespace

Result<std::vector<std::string>> Client::ListTables() {
  return Request<std::vector<std::string>>(
      impl_.get(), fb::Request::ListTablesRequest, true,
      [](FlatBufferBuilder& fbb) { return fb::CreateListTablesRequest(fbb); },
      [](const Result<Response>& r) -> Result<std::vector<std::string>> {
        LOCKSTEP_ASSIGN_OR_RETURN(const fb::ListTablesResponse* body,
                                  As<fb::ListTablesResponse>(r, "list tables"));
        return Strings(body->names());
      });
}

Result<TableInfo> Client::DescribeTable(const std::string& name) {
  return Request<TableInfo>(
      impl_.get(), fb::Request::DescribeTableRequest, true,
      [&name](FlatBufferBuilder& fbb) {
        return fb::CreateDescribeTableRequest(fbb, fbb.CreateString(name));
      },
      [](const Result<Response>& r) -> Result<TableInfo> {
        LOCKSTEP_ASSIGN_OR_RETURN(const fb::DescribeTableResponse* body,
                                  As<fb::DescribeTableResponse>(r, "describe table"));
        TableInfo t;
        t.name = body->name() != nullptr ? body->name()->str() : std::string();
        t.created = Lsn(body->created_lsn());
        t.as_of = Lsn(body->as_of_lsn());
        t.rows = body->rows();
        t.key_bytes = body->key_bytes();
        t.value_bytes = body->value_bytes();
        t.newest_version = Lsn(body->newest_version());
        t.memory_bytes = body->memory_bytes();
        return t;
      });
}

void Client::Get(const std::string& table, const std::string& key, Lsn as_of,
                 Callback<std::optional<Row>> done) {
  FlatBufferBuilder fbb(128);
  auto request = fb::CreateGetRequest(fbb, fbb.CreateString(table), Bytes(fbb, key), as_of.value());
  impl_->Submit(fbb, request.Union(), fb::Request::GetRequest, true,
                [done = std::move(done)](Result<Response> r) {
                  auto body = As<fb::GetResponse>(r, "a get");
                  if (!body.ok()) return done(body.status());
                  if ((*body)->row() == nullptr) return done(std::optional<Row>());
                  done(std::optional<Row>(ToRow((*body)->row())));
                });
}

Result<std::optional<Row>> Client::Get(const std::string& table, const std::string& key,
                                       Lsn as_of) {
  return Wait<std::optional<Row>>(
      [&](Callback<std::optional<Row>> done) { Get(table, key, as_of, std::move(done)); });
}

void Client::MultiGet(const std::string& table, const std::vector<std::string>& keys, Lsn as_of,
                      Callback<MultiGetResult> done) {
  FlatBufferBuilder fbb(128 + 32 * keys.size());
  std::vector<FbOffset<fb::Key>> wire_keys;
  wire_keys.reserve(keys.size());
  for (const std::string& k : keys) wire_keys.push_back(fb::CreateKey(fbb, Bytes(fbb, k)));
  auto request = fb::CreateMultiGetRequest(fbb, fbb.CreateString(table),
                                           fbb.CreateVector(wire_keys), as_of.value());
  impl_->Submit(
      fbb, request.Union(), fb::Request::MultiGetRequest, true,
      [done = std::move(done), asked = keys.size()](Result<Response> r) {
        auto body = As<fb::MultiGetResponse>(r, "a multi-get");
        if (!body.ok()) return done(body.status());
        const auto* rows = (*body)->rows();
        const std::size_t answered = rows == nullptr ? 0 : rows->size();
        if (answered != asked) {
          return done(base::Internal(fmt::format(
              "the server answered {} rows for a multi-get of {} keys", answered, asked)));
        }
        MultiGetResult out;
        out.as_of = Lsn((*body)->as_of());
        out.rows.reserve(answered);
        for (std::size_t i = 0; i < answered; ++i) {
          const fb::FoundRow* found = rows->Get(static_cast<flatbuffers::uoffset_t>(i));
          if (found == nullptr || found->row() == nullptr) {
            out.rows.emplace_back();
          } else {
            out.rows.emplace_back(ToRow(found->row()));
          }
        }
        done(std::move(out));
      });
}

Result<MultiGetResult> Client::MultiGet(const std::string& table,
                                        const std::vector<std::string>& keys, Lsn as_of) {
  return Wait<MultiGetResult>(
      [&](Callback<MultiGetResult> done) { MultiGet(table, keys, as_of, std::move(done)); });
}

Result<std::vector<Row>> Client::Scan(const std::string& table, const ScanOptions& o, Lsn as_of) {
  return Request<std::vector<Row>>(
      impl_.get(), fb::Request::ScanRequest, true,
      [&](FlatBufferBuilder& fbb) {
        return fb::CreateScanRequest(fbb, fbb.CreateString(table), Bytes(fbb, o.from),
                                     Bytes(fbb, o.to), Bytes(fbb, o.prefix), o.limit, o.reverse,
                                     as_of.value());
      },
      [](const Result<Response>& r) -> Result<std::vector<Row>> {
        LOCKSTEP_ASSIGN_OR_RETURN(const fb::ScanResponse* body, As<fb::ScanResponse>(r, "a scan"));
        std::vector<Row> rows;
        if (body->rows() != nullptr) {
          for (const fb::Row* row : *body->rows()) rows.push_back(ToRow(row));
        }
        return rows;
      });
}

void Client::FetchInPlace(const std::string& topic, PartitionId partition, Offset offset,
                          const FetchOptions& o, std::function<void(Result<FetchView>)> done) {
  FlatBufferBuilder fbb(128);
  auto request = fb::CreateFetchRequest(
      fbb, fbb.CreateString(topic), partition.value(), offset.value(), o.max_bytes, o.max_events,
      static_cast<std::uint32_t>(o.max_wait.count()), o.min_bytes);
  impl_->Submit(
      fbb, request.Union(), fb::Request::FetchRequest, true,
      [done = std::move(done)](Result<Response> r) {
        auto body = As<fb::FetchResponse>(r, "a fetch");
        if (!body.ok()) return done(body.status());
        if ((*body)->records_bytes() != r->attachment.size()) {
          return done(base::Internal(
              fmt::format("a fetch response announces {} record bytes but carries {}",
                          (*body)->records_bytes(), r->attachment.size())));
        }
        done(FetchView{r->attachment, (*body)->events(), Offset((*body)->next_offset()),
                       Offset((*body)->high_watermark()), std::move(r->body)});
      },
      o.max_wait);  // a long-poll may rightly take its whole wait
}

void Client::Fetch(const std::string& topic, PartitionId partition, Offset offset,
                   const FetchOptions& o, Callback<FetchResult> done) {
  FetchInPlace(topic, partition, offset, o, [done = std::move(done)](Result<FetchView> r) {
    if (!r.ok()) return done(r.status());
    FetchResult out;
    out.records.assign(r->records.begin(), r->records.end());
    out.events = r->events;
    out.next_offset = r->next_offset;
    out.high_watermark = r->high_watermark;
    done(std::move(out));
  });
}

Result<FetchResult> Client::Fetch(const std::string& topic, PartitionId partition, Offset offset,
                                  const FetchOptions& options) {
  return Wait<FetchResult>([&](Callback<FetchResult> done) {
    Fetch(topic, partition, offset, options, std::move(done));
  });
}

Result<Offset> Client::ListOffset(const std::string& topic, PartitionId partition, OffsetSpec spec,
                                  std::int64_t timestamp_ms) {
  return Request<Offset>(
      impl_.get(), fb::Request::ListOffsetsRequest, true,
      [&](FlatBufferBuilder& fbb) {
        return fb::CreateListOffsetsRequest(fbb, fbb.CreateString(topic), partition.value(),
                                            static_cast<fb::OffsetSpec>(spec), timestamp_ms);
      },
      [](const Result<Response>& r) -> Result<Offset> {
        LOCKSTEP_ASSIGN_OR_RETURN(const fb::ListOffsetsResponse* body,
                                  As<fb::ListOffsetsResponse>(r, "list offsets"));
        return Offset(body->offset());
      });
}

Result<GroupInfo> Client::DescribeGroup(const std::string& group) {
  return Request<GroupInfo>(
      impl_.get(), fb::Request::DescribeGroupRequest, true,
      [&](FlatBufferBuilder& fbb) {
        return fb::CreateDescribeGroupRequest(fbb, fbb.CreateString(group));
      },
      [](const Result<Response>& r) -> Result<GroupInfo> {
        LOCKSTEP_ASSIGN_OR_RETURN(const fb::DescribeGroupResponse* body,
                                  As<fb::DescribeGroupResponse>(r, "describe group"));
        GroupInfo info{Str(body->group()), body->generation(), {}, {}};
        if (body->offsets() != nullptr) {
          for (const fb::CommittedOffset* o : *body->offsets()) {
            info.offsets.push_back({Str(o->topic()), PartitionId(o->partition()),
                                    Offset(o->offset()), o->generation(), o->commit_ms()});
          }
        }
        if (body->members() != nullptr) {
          for (const fb::GroupMember* m : *body->members()) {
            info.members.push_back({Str(m->member_id()), Str(m->client()), Strings(m->topics()),
                                    Assignment(m->assignment())});
          }
        }
        return info;
      });
}

Result<std::vector<std::string>> Client::ListGroups() {
  return Request<std::vector<std::string>>(
      impl_.get(), fb::Request::ListGroupsRequest, true,
      [](FlatBufferBuilder& fbb) { return fb::CreateListGroupsRequest(fbb); },
      [](const Result<Response>& r) -> Result<std::vector<std::string>> {
        LOCKSTEP_ASSIGN_OR_RETURN(const fb::ListGroupsResponse* body,
                                  As<fb::ListGroupsResponse>(r, "list groups"));
        return Strings(body->names());
      });
}

Result<std::vector<PartitionLag>> Client::GroupLag(const std::string& group) {
  return Request<std::vector<PartitionLag>>(
      impl_.get(), fb::Request::GroupLagRequest, true,
      [&](FlatBufferBuilder& fbb) {
        return fb::CreateGroupLagRequest(fbb, fbb.CreateString(group));
      },
      [](const Result<Response>& r) -> Result<std::vector<PartitionLag>> {
        LOCKSTEP_ASSIGN_OR_RETURN(const fb::GroupLagResponse* body,
                                  As<fb::GroupLagResponse>(r, "group lag"));
        std::vector<PartitionLag> out;
        if (body->partitions() != nullptr) {
          for (const fb::PartitionLag* l : *body->partitions()) {
            out.push_back({Str(l->topic()), PartitionId(l->partition()), Offset(l->committed()),
                           Offset(l->end()), l->events(), l->ms()});
          }
        }
        return out;
      });
}

// A join resent after a lost connection may leave a second member behind, which the server
// removes when its session ends (a rebalance later); nothing is lost, so it is resent.
Result<Membership> Client::JoinGroup(const std::string& group,
                                     const std::vector<std::string>& topics,
                                     const JoinOptions& options) {
  if (options.session_timeout.count() <= 0 ||
      options.session_timeout >
          std::chrono::milliseconds(std::numeric_limits<std::uint32_t>::max())) {
    return base::InvalidArgument(
        fmt::format("session timeout {} ms is out of range", options.session_timeout.count()));
  }
  return Request<Membership>(
      impl_.get(), fb::Request::JoinGroupRequest, true,
      [&](FlatBufferBuilder& fbb) {
        return fb::CreateJoinGroupRequest(
            fbb, fbb.CreateString(group), fbb.CreateString(options.member_id),
            fbb.CreateVectorOfStrings(topics),
            static_cast<std::uint32_t>(options.session_timeout.count()),
            fbb.CreateString(impl_->client_name()));
      },
      &ToMembership);
}

Result<Membership> Client::Heartbeat(const std::string& group, const std::string& member_id) {
  return Request<Membership>(
      impl_.get(), fb::Request::HeartbeatRequest, true,
      [&](FlatBufferBuilder& fbb) {
        return fb::CreateHeartbeatRequest(fbb, fbb.CreateString(group),
                                          fbb.CreateString(member_id));
      },
      &ToMembership);
}

void Client::LeaveGroup(const std::string& group, const std::string& member_id,
                        std::function<void(Status)> done) {
  FlatBufferBuilder fbb(128);
  auto request =
      fb::CreateLeaveGroupRequest(fbb, fbb.CreateString(group), fbb.CreateString(member_id));
  impl_->Submit(fbb, request.Union(), fb::Request::LeaveGroupRequest, /*resend_safe=*/true,
                [done = std::move(done)](Result<Response> r) { done(EmptyOk(r)); });
}

Status Client::LeaveGroup(const std::string& group, const std::string& member_id) {
  std::promise<Status> promise;
  auto future = promise.get_future();
  LeaveGroup(group, member_id, [&promise](Status s) { promise.set_value(std::move(s)); });
  return future.get();
}

Result<ChangeFeed> Client::Changes(Lsn from, std::uint32_t max_transactions,
                                   std::uint32_t max_bytes) {
  return Request<ChangeFeed>(
      impl_.get(), fb::Request::ChangesRequest, true,
      [&](FlatBufferBuilder& fbb) {
        return fb::CreateChangesRequest(fbb, from.value(), max_transactions, max_bytes);
      },
      [](const Result<Response>& r) -> Result<ChangeFeed> {
        LOCKSTEP_ASSIGN_OR_RETURN(const fb::ChangesResponse* body,
                                  As<fb::ChangesResponse>(r, "changes"));
        ChangeFeed feed;
        feed.next_lsn = Lsn(body->next_lsn());
        if (body->transactions() == nullptr) return feed;
        for (const fb::ChangedTransaction* t : *body->transactions()) {
          ChangedTransaction out{Lsn(t->lsn()), t->commit_ms(), {}, {}};
          if (t->changes() != nullptr) {
            for (const fb::Change* c : *t->changes()) {
              out.changes.push_back(
                  {Str(c->table()), Str(c->key()),
                   c->before() ? std::optional<std::string>(Str(c->before())) : std::nullopt,
                   c->after() ? std::optional<std::string>(Str(c->after())) : std::nullopt});
            }
          }
          if (t->events() != nullptr) {
            for (const fb::ChangedEvent* e : *t->events()) {
              std::vector<std::byte> record;
              if (e->record() != nullptr) {
                const auto* data = reinterpret_cast<const std::byte*>(e->record()->data());
                record.assign(data, data + e->record()->size());
              }
              out.events.push_back({Str(e->topic()), PartitionId(e->partition()),
                                    Offset(e->offset()), std::move(record)});
            }
          }
          feed.transactions.push_back(std::move(out));
        }
        return feed;
      });
}

Result<ServerStats> Client::Stats() {
  return Request<ServerStats>(
      impl_.get(), fb::Request::StatsRequest, true,
      [](FlatBufferBuilder& fbb) { return fb::CreateStatsRequest(fbb); },
      [](const Result<Response>& r) -> Result<ServerStats> {
        LOCKSTEP_ASSIGN_OR_RETURN(const fb::StatsResponse* b, As<fb::StatsResponse>(r, "stats"));
        return ServerStats{Lsn(b->visible_lsn()),
                           Lsn(b->checkpoint_lsn()),
                           Lsn(b->oldest_readable_lsn()),
                           b->table_bytes(),
                           b->connections(),
                           b->parked_fetches(),
                           b->requests(),
                           b->uptime_ms()};
      });
}

}  // namespace lockstep::client
