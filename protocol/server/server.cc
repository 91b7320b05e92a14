#include "protocol/server/server.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio.hpp>
#include <cerrno>
#include <climits>
#include <deque>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include <sys/socket.h>
#include <sys/uio.h>

#include "base/clock.h"
#include "protocol/server/convert.h"
#include "protocol/wire/frame.h"

namespace lockstep::server {

namespace asio = boost::asio;
using asio::ip::tcp;
namespace fb = wire::fb;
using flatbuffers::FlatBufferBuilder;

namespace {

class Connection;

// Requests handled per turn of a connection's strand (see ProcessFrames).
constexpr std::uint32_t kFramesPerTurn = 32;

// A fetch waiting for new durable events (long-poll): answered when enough arrived, at its
// deadline, or when the server stops.
struct ParkedFetch {
  std::uint64_t id = 0;  // unique on its connection (its timer finds it by this)
  std::uint64_t correlation_id = 0;
  std::string topic;
  PartitionId partition;
  Offset offset;
  engine::FetchOptions limits;
  std::uint32_t min_bytes = 1;
  std::unique_ptr<asio::steady_timer> timer;
};

// The raw event records a fetch response carries: views into the mapped log segments, kept
// mapped by the pins until the frame is written (no copy on the server).
struct Attachment {
  std::vector<base::Bytes> pieces;
  std::vector<std::shared_ptr<const void>> pins;
  std::size_t bytes = 0;
};

// One response on its way out: the frame header, the FlatBuffers message, and an attachment,
// written with gather writes (SendGathered).
struct OutFrame {
  std::array<std::byte, wire::kFrameHeaderBytes> header;
  flatbuffers::DetachedBuffer message;
  Attachment attachment;
  std::size_t bytes() const { return header.size() + message.size() + attachment.bytes; }
};

}  // namespace

class Server::Impl {
 public:
  Impl(engine::Engine& engine, ServerOptions options)
      : engine_(engine),
        options_(std::move(options)),
        acceptor_(io_),
        start_ms_(base::WallClockMs()),
        groups_(
            options_.groups,
            [&engine](std::string_view group) { return engine.NewGroupGeneration(group); },
            [&engine](std::string_view topic) { return PartitionCount(engine, topic); }) {}

  Status Listen();
  void Run();
  void Stop(std::chrono::milliseconds drain);
  ServerStats stats() const {
    ServerStats s;
    s.connections = connections_.load();
    s.parked_fetches = parked_.load();
    s.requests = requests_.load();
    s.refused_connections = refused_.load();
    s.bad_frames = bad_frames_.load();
    s.events_out = events_out_.load(std::memory_order_relaxed);
    s.event_bytes_out = event_bytes_out_.load(std::memory_order_relaxed);
    return s;
  }

  engine::Engine& engine_;
  ServerOptions options_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::vector<std::thread> threads_;
  // Blocking engine calls (catalog changes wait for durability) run here, never on io threads.
  asio::thread_pool blocking_{2};
  // Table describes walk whole tables: a thread of their own, so that they never hold up the
  // group calls and catalog changes of blocking_.
  asio::thread_pool scans_{1};
  std::int64_t start_ms_;
  std::string host_;
  std::uint16_t port_ = 0;
  std::uint64_t listener_ = 0;
  std::atomic<bool> stopping_{false};
  // Open while the io_context runs; work from other threads is posted only under it. Shared,
  // because the engine may answer a commit after the server is gone.
  struct Gate {
    std::mutex mu;
    bool open = true;
  };
  std::shared_ptr<Gate> gate_ = std::make_shared<Gate>();
  asio::steady_timer accept_retry_{io_};
  std::atomic<bool> recheck_posted_{false};
  GroupCoordinator groups_;
  // On a strand of its own: re-armed by its handler and cancelled by Stop, maybe on two threads.
  asio::strand<asio::io_context::executor_type> expiry_strand_ = asio::make_strand(io_);
  asio::steady_timer expiry_timer_{expiry_strand_};
  std::atomic<bool> expiring_{false};

  std::mutex conns_mu_;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> conns_;

  std::atomic<std::uint32_t> connections_{0};
  std::atomic<std::uint32_t> parked_{0};
  std::atomic<std::uint64_t> requests_{0};
  std::atomic<std::uint64_t> refused_{0};
  std::atomic<std::uint64_t> bad_frames_{0};
  std::atomic<std::uint64_t> events_out_{0};
  std::atomic<std::uint64_t> event_bytes_out_{0};

  void Accept();
  void OnEventsVisible();
  void ExpireMembers();
  static Result<std::uint32_t> PartitionCount(engine::Engine& engine, std::string_view topic);
  std::vector<std::shared_ptr<Connection>> Connections();
};

namespace {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // The socket was accepted onto a strand of its own: its executor serialises this connection.
  Connection(Server::Impl& server, tcp::socket socket)
      : server_(server),
        socket_(std::move(socket)),
        strand_(socket_.get_executor()),
        timer_(strand_) {}

  void Start() {
    boost::system::error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
    remote_ = Endpoint();
    ArmTimer(server_.options_.handshake_timeout, "no handshake");
    ReadMore();
  }

  // Any thread. Dropped once the server has stopped (its io_context may be gone): the engine
  // may still answer a commit after a drain that timed out.
  template <typename Fn>
  void Post(Fn&& fn);

  // On the strand: answer every parked fetch whose partition moved (or all, when stopping).
  void RecheckParked(bool all) {
    for (auto it = parked_.begin(); it != parked_.end();) {
      if (AnswerParked(**it, all)) {
        (*it)->timer->cancel();
        it = parked_.erase(it);
        server_.parked_.fetch_sub(1);
      } else {
        ++it;
      }
    }
    MaybeResume();
  }

  // On the strand.
  bool Quiet() const { return inflight_ == 0 && writes_.empty(); }
  bool HasParked() const { return !parked_.empty(); }
  void Close() {
    if (closed_) return;
    closed_ = true;
    Forget();
    for (auto& p : parked_) p->timer->cancel();
    server_.parked_.fetch_sub(static_cast<std::uint32_t>(parked_.size()));
    parked_.clear();
    timer_.cancel();
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }
  void Forget() {
    std::lock_guard lock(server_.conns_mu_);
    if (server_.conns_.erase(this) != 0) server_.connections_.fetch_sub(1);
  }

 private:
  std::string Endpoint() const {
    boost::system::error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    return ec ? std::string("?") : fmt::format("{}:{}", ep.address().to_string(), ep.port());
  }

  // One timer per connection: the handshake timeout, then the idle timeout. Frames only note
  // the time (re-arming a timer per request would cost a system call each); when the timer
  // fires it waits again for whatever is left of the idle time.
  void ArmTimer(std::chrono::milliseconds after, const char* why) {
    timer_.expires_after(after);
    timer_.async_wait([self = shared_from_this(), why](boost::system::error_code ec) {
      if (ec || self->closed_) return;
      const auto idle = self->server_.options_.idle_timeout;
      if (self->handshaken_) {
        const auto quiet = std::chrono::steady_clock::now() - self->last_activity_;
        if (self->inflight_ > 0 || !self->parked_.empty()) {
          self->ArmTimer(idle, "idle");
          return;
        }
        if (quiet < idle) {
          self->ArmTimer(std::chrono::duration_cast<std::chrono::milliseconds>(idle - quiet) +
                             std::chrono::milliseconds(1),
                         "idle");
          return;
        }
      }
      spdlog::info("connection {}: closed ({})", self->remote_, why);
      self->Close();
    });
  }

  // ---- Reading --------------------------------------------------------------------------------

  // Reads whatever the socket has into the frame reader (one system call for many pipelined
  // frames), then handles every complete frame. Stops while the connection is saturated.
  void ReadMore() {
    if (closed_ || closing_ || reading_ || paused_) return;
    reading_ = true;
    const std::span<std::byte> room = reader_.Room();
    socket_.async_read_some(
        asio::buffer(room.data(), room.size()),
        asio::bind_executor(
            strand_, [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
              self->reading_ = false;
              if (ec) return self->Disconnected(ec);
              self->reader_.Filled(n);
              self->ProcessFrames();
            }));
  }

  void ProcessFrames() {
    // The answers to the frames of one turn go out together, in one write.
    Corked corked(*this);
    for (std::uint32_t handled = 0; !closed_ && !closing_; ++handled) {
      if (Saturated()) {
        paused_ = true;  // backpressure: MaybeResume goes on once responses drain
        return;
      }
      if (handled == kFramesPerTurn) {
        // A read may hold hundreds of pipelined requests. Their answers leave in turns, so
        // that the client works on the first ones while the server works on the rest, instead
        // of both waiting for the other's whole batch; commit answers queued meanwhile go too.
        asio::post(strand_, [self = shared_from_this()] { self->ProcessFrames(); });
        return;
      }
      auto frame = reader_.Next();
      if (!frame.ok()) return Reject(0, frame.status());
      if (!*frame) break;
      if (!(*frame)->attachment.empty()) {
        return Reject(0, base::InvalidArgument("requests carry no attachment"));
      }
      auto message = wire::VerifyRequest((*frame)->message);
      if (!message.ok()) return Reject(0, message.status());
      server_.requests_.fetch_add(1, std::memory_order_relaxed);
      if (handled == 0) last_activity_ = std::chrono::steady_clock::now();  // once per turn
      Dispatch(**message);
    }
    ReadMore();
  }

  void Disconnected(boost::system::error_code ec) {
    if (ec != asio::error::eof && ec != asio::error::operation_aborted) {
      spdlog::debug("connection {}: {}", remote_, ec.message());
    }
    Close();
  }

  // A frame that cannot be trusted: answer with the error, then close once it is written.
  void Reject(std::uint64_t correlation_id, const Status& why) {
    server_.bad_frames_.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("connection {}: {}; closing it", remote_, why.ToString());
    SendError(correlation_id, why);
    closing_ = true;
  }

  bool Saturated() const {
    return inflight_ >= server_.options_.max_inflight_requests ||
           queued_bytes_ >= server_.options_.max_queued_bytes;
  }

  void MaybeResume() {
    if (paused_ && !Saturated() && !closed_ && !closing_) {
      paused_ = false;
      ProcessFrames();  // frames may wait in the reader already
    }
  }

  // ---- Writing --------------------------------------------------------------------------------

  // While one lives, responses queue without being written; the last one to end writes them all
  // at once. A batch of work (the frames of one read, the commits of one group) then costs the
  // client one wake-up and the server one system call, instead of one for its first answer and
  // another for the rest.
  class Corked {
   public:
    explicit Corked(Connection& c) : c_(c) { ++c_.corked_; }
    ~Corked() {
      if (--c_.corked_ == 0 && !c_.writing_) c_.WriteNext();
    }
    Corked(const Corked&) = delete;
    Corked& operator=(const Corked&) = delete;

   private:
    Connection& c_;
  };

  void Send(FlatBufferBuilder& fbb, Attachment attachment = {}) {
    if (closed_) return;
    OutFrame frame;
    frame.message = fbb.Release();
    frame.attachment = std::move(attachment);
    frame.header = wire::EncodeFrameHeader(static_cast<std::uint32_t>(frame.message.size()),
                                           static_cast<std::uint32_t>(frame.attachment.bytes));
    queued_bytes_ += frame.bytes();
    writes_.push_back(std::move(frame));
    if (!writing_ && corked_ == 0) WriteNext();
  }

  void SendError(std::uint64_t correlation_id, const Status& status) {
    FlatBufferBuilder fbb(256);
    auto error =
        fb::CreateError(fbb, wire::ToWire(status.code()), fbb.CreateString(status.message()));
    fbb.Finish(fb::CreateResponseMessage(fbb, correlation_id, error));
    Send(fbb);
  }

  template <typename T>
  void SendResponse(std::uint64_t correlation_id, FlatBufferBuilder& fbb,
                    flatbuffers::Offset<T> body, Attachment attachment = {}) {
    fbb.Finish(fb::CreateResponseMessage(fbb, correlation_id, 0, fb::ResponseTraits<T>::enum_value,
                                         body.Union()));
    if (fbb.GetSize() + attachment.bytes + 8 > server_.options_.max_frame_bytes) {
      return SendError(correlation_id,
                       base::InvalidArgument(fmt::format(
                           "the response would be {} bytes, above the frame limit of {}: ask for "
                           "less (a smaller limit or max_bytes)",
                           fbb.GetSize() + attachment.bytes, server_.options_.max_frame_bytes)));
    }
    Send(fbb, std::move(attachment));
  }

  void SendEmpty(std::uint64_t correlation_id) {
    FlatBufferBuilder fbb(64);
    SendResponse(correlation_id, fbb, fb::CreateEmpty(fbb));
  }

  // Writes every queued response (up to 64) with gather writes: pipelined clients get their
  // answers in one system call instead of one each, and a fetch's records (one piece per run of
  // a producer's batch, or per lone event) go out up to IOV_MAX pieces per call — Asio's own gather
  // writes stop at 64 pieces, 64 KiB of 1 KiB events. Elements of a deque stay where they are while
  // others are pushed behind them, so the pieces stay valid during the write.
  void WriteNext() {
    if (writes_.empty() || closed_) {
      writing_ = false;
      if (closing_ && writes_.empty()) Close();
      return;
    }
    writing_ = true;
    constexpr std::size_t kMaxFrames = 64;
    gather_.clear();
    gathered_ = 0;
    in_write_ = std::min(writes_.size(), kMaxFrames);
    // Empty pieces are left out: a tail of them would make sendmsg send 0 bytes for ever.
    auto add = [this](const void* data, std::size_t size) {
      if (size > 0) gather_.push_back({const_cast<void*>(data), size});
    };
    for (std::size_t i = 0; i < in_write_; ++i) {
      OutFrame& f = writes_[i];
      add(f.header.data(), f.header.size());
      add(f.message.data(), f.message.size());
      for (base::Bytes piece : f.attachment.pieces) add(piece.data(), piece.size());
    }
    SendGathered();
  }

  // Sends gather_ from gathered_ on without blocking; waits for room in the socket when it is
  // full, then goes on. It ends through the strand, never inside the call that queued the
  // write: callers of Send may be walking the queues OnWritten changes.
  void SendGathered() {
    auto finish = [this](boost::system::error_code ec) {
      asio::post(strand_, [self = shared_from_this(), ec] { self->OnWritten(ec); });
    };
    while (gathered_ < gather_.size()) {
      msghdr msg{};
      msg.msg_iov = gather_.data() + gathered_;
      msg.msg_iovlen = std::min<std::size_t>(gather_.size() - gathered_, IOV_MAX);
      const ssize_t sent = ::sendmsg(socket_.native_handle(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          socket_.async_wait(asio::ip::tcp::socket::wait_write,
                             asio::bind_executor(strand_, [self = shared_from_this()](
                                                              boost::system::error_code ec) {
                               // Closed meanwhile: the socket is gone, and so is the write.
                               if (ec || self->closed_) return self->OnWritten(ec);
                               self->SendGathered();
                             }));
          return;
        }
        return finish(boost::system::error_code(errno, boost::system::system_category()));
      }
      // Steps over what went out: whole pieces, then part of one.
      auto left = static_cast<std::size_t>(sent);
      while (left > 0 && left >= gather_[gathered_].iov_len) left -= gather_[gathered_++].iov_len;
      if (left > 0) {
        gather_[gathered_].iov_base = static_cast<std::byte*>(gather_[gathered_].iov_base) + left;
        gather_[gathered_].iov_len -= left;
      }
    }
    finish({});
  }

  void OnWritten(boost::system::error_code ec) {
    if (ec) return Disconnected(ec);
    for (std::size_t i = 0; i < in_write_; ++i) {
      queued_bytes_ -= writes_.front().bytes();
      writes_.pop_front();
    }
    in_write_ = 0;
    if (!parked_.empty()) {
      RecheckParked(false);  // parked fetches held back while the queue was full
    } else {
      MaybeResume();
    }
    WriteNext();
  }

  // ---- Requests -------------------------------------------------------------------------------

  // Runs `call` (a blocking engine call returning Status) off the io threads, then answers.
  template <typename Call>
  void Blocking(std::uint64_t id, Call call) {
    ++inflight_;
    asio::post(server_.blocking_, [self = shared_from_this(), id, call = std::move(call)] {
      Status status = call();
      self->Post([self, id, status = std::move(status)] {
        --self->inflight_;
        if (status.ok()) {
          self->SendEmpty(id);
        } else {
          self->SendError(id, status);
        }
        self->MaybeResume();
      });
    });
  }

  // Runs `call` (a blocking call returning Result<T>) off the io threads, then answers with
  // build(fbb, value).
  template <typename Call, typename BuildFn>
  void BlockingReply(std::uint64_t id, Call call, BuildFn build) {
    BlockingReplyOn(server_.blocking_, id, std::move(call), std::move(build));
  }
  template <typename Call, typename BuildFn>
  void BlockingReplyOn(asio::thread_pool& pool, std::uint64_t id, Call call, BuildFn build) {
    ++inflight_;
    asio::post(pool,
               [self = shared_from_this(), id, call = std::move(call), build = std::move(build)] {
                 auto result = call();
                 self->Post([self, id, result = std::move(result), build] {
                   --self->inflight_;
                   if (result.ok()) {
                     FlatBufferBuilder fbb(256);
                     self->SendResponse(id, fbb, build(fbb, *result));
                   } else {
                     self->SendError(id, result.status());
                   }
                   self->MaybeResume();
                 });
               });
  }

  void JoinGroup(std::uint64_t id, const fb::JoinGroupRequest& r) {
    JoinRequest join;
    join.group = Str(r.group());
    join.member_id = Str(r.member_id());
    join.client = Str(r.client());
    if (r.topics() != nullptr) {
      for (const flatbuffers::String* t : *r.topics()) join.topics.push_back(Str(t));
    }
    join.session_timeout = std::chrono::milliseconds(r.session_timeout_ms());
    // Sessions count from the request's arrival, not from when the blocking pool got to it.
    BlockingReply(
        id,
        [&groups = server_.groups_, join = std::move(join),
         now = std::chrono::steady_clock::now()] { return groups.Join(join, now); },
        [](FlatBufferBuilder& fbb, const MemberState& m) { return Build(fbb, m); });
  }

  void GroupHeartbeat(std::uint64_t id, const fb::HeartbeatRequest& r) {
    BlockingReply(
        id,
        [&groups = server_.groups_, group = Str(r.group()), member = Str(r.member_id()),
         now = std::chrono::steady_clock::now()] { return groups.Heartbeat(group, member, now); },
        [](FlatBufferBuilder& fbb, const MemberState& m) { return Build(fbb, m); });
  }

  void Commit(std::uint64_t id, Result<engine::Transaction> txn) {
    if (!txn.ok()) return SendError(id, txn.status());
    ++inflight_;
    // Answered from the log's writer thread (or the sequencer): hop back to this strand.
    // The engine may hold this callback past the server's life (a commit answered after a
    // drain that timed out): it holds the connection weakly, so that the connection — and its
    // socket and timer — never outlive the io_context.
    server_.engine_.Commit(std::move(txn).value(), [weak = weak_from_this(), gate = server_.gate_,
                                                    id](Result<engine::CommitResult> r) {
      std::lock_guard lock(gate->mu);
      if (!gate->open) return;
      if (std::shared_ptr<Connection> self = weak.lock()) self->Committed(id, std::move(r));
    });
  }

  // Any thread (the engine's, under the gate): queues a commit's answer. The answers of one
  // group commit arrive together; the first one posts a drain, which answers them all in one
  // turn of the strand and one write, instead of one post, one turn and one wake-up each.
  void Committed(std::uint64_t id, Result<engine::CommitResult> result) {
    bool first = false;
    {
      std::lock_guard lock(committed_mu_);
      first = committed_.empty();
      committed_.push_back({id, std::move(result)});
    }
    if (first) asio::post(strand_, [self = shared_from_this()] { self->AnswerCommitted(); });
  }

  // On the strand.
  void AnswerCommitted() {
    {
      std::lock_guard lock(committed_mu_);
      std::swap(committed_, answering_);
    }
    Corked corked(*this);
    for (auto& [id, result] : answering_) {
      --inflight_;
      if (result.ok()) {
        FlatBufferBuilder fbb(256);
        SendResponse(id, fbb, Build(fbb, *result));
      } else {
        SendError(id, result.status());
      }
    }
    answering_.clear();
    MaybeResume();
  }

  void Dispatch(const fb::RequestMessage& m) {
    const std::uint64_t id = m.correlation_id();
    const fb::Request type = m.request_type();
    if (!handshaken_ && type != fb::Request::HandshakeRequest) {
      return Reject(
          id, base::FailedPrecondition("the first request on a connection must be a handshake"));
    }
    if (type != fb::Request::NONE && m.request() == nullptr) {
      // The verifier accepts a union member that is absent; nothing below may dereference it.
      return Reject(id, base::InvalidArgument(
                            fmt::format("request of type {} has no body", static_cast<int>(type))));
    }
    engine::Engine& e = server_.engine_;
    switch (type) {
      case fb::Request::HandshakeRequest: {
        const auto* r = m.request_as_HandshakeRequest();
        if (handshaken_) return SendError(id, base::FailedPrecondition("already handshaken"));
        if (r->major() != wire::kMajorVersion) {
          return Reject(id, base::FailedPrecondition(fmt::format(
                                "protocol version {}.{} is not supported: this server speaks "
                                "{}.{} (upgrade the {} side)",
                                r->major(), r->minor(), wire::kMajorVersion, wire::kMinorVersion,
                                r->major() > wire::kMajorVersion ? "server" : "client")));
        }
        handshaken_ = true;
        ArmTimer(server_.options_.idle_timeout, "idle");
        FlatBufferBuilder fbb(128);
        return SendResponse(
            id, fbb,
            fb::CreateHandshakeResponse(fbb, wire::kMajorVersion, wire::kMinorVersion,
                                        fbb.CreateString("lockstepd 0.1"),
                                        server_.options_.max_frame_bytes));
      }
      case fb::Request::CreateTopicRequest: {
        const auto* r = m.request_as_CreateTopicRequest();
        return Blocking(
            id, [&e, &groups = server_.groups_, name = Str(r->name()), partitions = r->partitions(),
                 ms = r->retention_ms(), bytes = r->retention_bytes()] {
              Status created = e.CreateTopic(name, partitions, ms, bytes);
              if (created.ok()) groups.TopicChanged(name);  // members waiting for it get partitions
              return created;
            });
      }
      case fb::Request::DropTopicRequest:
        return Blocking(id, [&e, &groups = server_.groups_,
                             name = Str(m.request_as_DropTopicRequest()->name())] {
          Status dropped = e.DropTopic(name);
          if (dropped.ok()) groups.TopicChanged(name);  // its partitions leave the assignments
          return dropped;
        });
      case fb::Request::CreateTableRequest:
        return Blocking(id, [&e, name = Str(m.request_as_CreateTableRequest()->name())] {
          return e.CreateTable(name);
        });
      case fb::Request::DropTableRequest:
        return Blocking(id, [&e, name = Str(m.request_as_DropTableRequest()->name())] {
          return e.DropTable(name);
        });
      case fb::Request::ListTopicsRequest: {
        FlatBufferBuilder fbb(1024);
        return SendResponse(id, fbb, Build(fbb, e.ListTopics()));
      }
      case fb::Request::ListTablesRequest: {
        FlatBufferBuilder fbb(256);
        auto names = e.ListTables();
        return SendResponse(id, fbb,
                            fb::CreateListTablesResponse(fbb, fbb.CreateVectorOfStrings(names)));
      }
      case fb::Request::DescribeTableRequest:
        // One pass over the whole table: never on an io thread.
        return BlockingReplyOn(
            server_.scans_, id,
            [&e, name = Str(m.request_as_DescribeTableRequest()->name())] {
              return e.DescribeTable(name);
            },
            [](FlatBufferBuilder& fbb, const engine::TableInfo& t) {
              return fb::CreateDescribeTableResponse(
                  fbb, fbb.CreateString(t.name), t.created.value(), t.as_of.value(), t.rows,
                  t.key_bytes, t.value_bytes, t.newest_version.value(), t.memory_bytes);
            });
      case fb::Request::CommitRequest:
        return Commit(id, ToTransaction(*m.request_as_CommitRequest()));
      case fb::Request::CommitOffsetsRequest:
        return Commit(id, ToOffsetCommits(*m.request_as_CommitOffsetsRequest()));
      case fb::Request::GetRequest:
        return Get(id, *m.request_as_GetRequest());
      case fb::Request::MultiGetRequest:
        return MultiGet(id, *m.request_as_MultiGetRequest());
      case fb::Request::ScanRequest:
        return Scan(id, *m.request_as_ScanRequest());
      case fb::Request::FetchRequest:
        return Fetch(id, *m.request_as_FetchRequest());
      case fb::Request::ListOffsetsRequest:
        return ListOffsets(id, *m.request_as_ListOffsetsRequest());
      case fb::Request::DescribeGroupRequest: {
        // The coordinator may be busy with a rebalance: asked off the io threads.
        using Described = std::pair<engine::GroupInfo, std::vector<MemberInfo>>;
        return BlockingReply(
            id,
            [&e, &groups = server_.groups_,
             name = Str(m.request_as_DescribeGroupRequest()->group())]() -> Result<Described> {
              auto members = groups.Members(name);
              LOCKSTEP_ASSIGN_OR_RETURN(engine::GroupInfo info, e.DescribeGroup(name));
              return Described(std::move(info), std::move(members));
            },
            [](FlatBufferBuilder& fbb, const Described& d) {
              return Build(fbb, d.first, d.second);
            });
      }
      case fb::Request::JoinGroupRequest:
        return JoinGroup(id, *m.request_as_JoinGroupRequest());
      case fb::Request::HeartbeatRequest:
        return GroupHeartbeat(id, *m.request_as_HeartbeatRequest());
      case fb::Request::LeaveGroupRequest: {
        const auto* r = m.request_as_LeaveGroupRequest();
        return Blocking(id, [&groups = server_.groups_, group = Str(r->group()),
                             member = Str(r->member_id())] { return groups.Leave(group, member); });
      }
      case fb::Request::ListGroupsRequest: {
        FlatBufferBuilder fbb(256);
        auto names = e.ListGroups();
        return SendResponse(id, fbb,
                            fb::CreateListGroupsResponse(fbb, fbb.CreateVectorOfStrings(names)));
      }
      case fb::Request::GroupLagRequest: {
        auto lag = e.GroupLag(Str(m.request_as_GroupLagRequest()->group()));
        if (!lag.ok()) return SendError(id, lag.status());
        FlatBufferBuilder fbb(512);
        return SendResponse(id, fbb, Build(fbb, *lag));
      }
      case fb::Request::ChangesRequest: {
        const auto* r = m.request_as_ChangesRequest();
        engine::ChangeFeedOptions options;
        options.max_transactions = r->max_transactions();
        options.max_bytes = std::min(r->max_bytes(), server_.options_.max_frame_bytes / 2);
        auto feed = e.Changes(Lsn(r->from_lsn()), options);
        if (!feed.ok()) return SendError(id, feed.status());
        FlatBufferBuilder fbb(4096);
        return SendResponse(id, fbb, Build(fbb, *feed));
      }
      case fb::Request::StatsRequest: {
        const ServerStats s = server_.stats();
        FlatBufferBuilder fbb(128);
        return SendResponse(
            id, fbb,
            fb::CreateStatsResponse(fbb, e.visible_lsn().value(), e.checkpoint_lsn().value(),
                                    e.oldest_readable_lsn().value(), e.table_bytes(), s.connections,
                                    s.parked_fetches, s.requests,
                                    base::WallClockMs() - server_.start_ms_));
      }
      default:
        // A valid frame of a newer minor version: answered, and the connection stays.
        return SendError(
            id, base::InvalidArgument(
                    fmt::format("unknown request type {}: this server speaks protocol {}.{}",
                                static_cast<int>(type), wire::kMajorVersion, wire::kMinorVersion)));
    }
  }

  void Get(std::uint64_t id, const fb::GetRequest& r) {
    engine::Engine& e = server_.engine_;
    auto row = r.as_of() == 0 ? e.Get(Str(r.table()), View(r.key()))
                              : e.GetAsOf(Str(r.table()), View(r.key()), Lsn(r.as_of()));
    if (!row.ok()) return SendError(id, row.status());
    FlatBufferBuilder fbb(256);
    auto out = row->has_value() ? Build(fbb, **row) : flatbuffers::Offset<fb::Row>();
    SendResponse(id, fbb, fb::CreateGetResponse(fbb, out));
  }

  // Bounded before anything is built: the key count (checked before the views are gathered)
  // and the answer's bytes (one frame's worth, counted by the engine).
  void MultiGet(std::uint64_t id, const fb::MultiGetRequest& r) {
    // The thread's lists, reused: a read allocates nothing for them once warm.
    thread_local std::vector<std::string_view> keys;
    thread_local std::vector<flatbuffers::Offset<fb::FoundRow>> out;
    keys.clear();
    out.clear();
    if (r.keys() != nullptr) {
      if (Status s = engine::Engine::CheckMultiGetKeys(r.keys()->size()); !s.ok()) {
        return SendError(id, s);
      }
      keys.reserve(r.keys()->size());
      for (const fb::Key* k : *r.keys()) keys.push_back(View(k->bytes()));
    }
    auto read = server_.engine_.MultiGet(Str(r.table()), keys, Lsn(r.as_of()),
                                         server_.options_.max_frame_bytes);
    if (!read.ok()) return SendError(id, read.status());
    FlatBufferBuilder fbb(256);
    for (const std::optional<engine::Row>& row : read->rows) {
      out.push_back(fb::CreateFoundRow(
          fbb, row.has_value() ? Build(fbb, *row) : flatbuffers::Offset<fb::Row>()));
    }
    SendResponse(id, fbb,
                 fb::CreateMultiGetResponse(fbb, fbb.CreateVector(out), read->as_of.value()));
  }

  void Scan(std::uint64_t id, const fb::ScanRequest& r) {
    engine::Engine& e = server_.engine_;
    engine::ScanOptions o;
    o.from = View(r.from());
    o.to = View(r.to());
    o.prefix = View(r.prefix());
    o.limit = r.limit();
    o.reverse = r.reverse();
    o.max_bytes = server_.options_.max_frame_bytes;  // no answer may outgrow a frame
    auto rows =
        r.as_of() == 0 ? e.Scan(Str(r.table()), o) : e.ScanAsOf(Str(r.table()), o, Lsn(r.as_of()));
    if (!rows.ok()) return SendError(id, rows.status());
    FlatBufferBuilder fbb(1024);
    std::vector<flatbuffers::Offset<fb::Row>> out;
    out.reserve(rows->size());
    for (const engine::Row& row : *rows) out.push_back(Build(fbb, row));
    SendResponse(id, fbb, fb::CreateScanResponse(fbb, fbb.CreateVector(out)));
  }

  void ListOffsets(std::uint64_t id, const fb::ListOffsetsRequest& r) {
    engine::Engine& e = server_.engine_;
    const std::string topic = Str(r.topic());
    std::uint64_t offset = 0;
    if (r.spec() == fb::OffsetSpec::Timestamp) {
      auto found = e.OffsetForTimestamp(topic, PartitionId(r.partition()), r.timestamp_ms());
      if (!found.ok()) return SendError(id, found.status());
      offset = found->value();
    } else {
      bool known = false;
      for (const engine::TopicInfo& t : e.ListTopics()) {
        if (t.name != topic) continue;
        if (r.partition() >= t.partitions) {
          return SendError(
              id, base::InvalidArgument(fmt::format("topic {:?} has {} partitions; there is no {}",
                                                    topic, t.partitions, r.partition())));
        }
        offset =
            (r.spec() == fb::OffsetSpec::Earliest ? t.start_offsets : t.end_offsets)[r.partition()]
                .value();
        known = true;
      }
      if (!known) return SendError(id, base::NotFound(fmt::format("no topic {:?}", topic)));
    }
    FlatBufferBuilder fbb(64);
    SendResponse(id, fbb, fb::CreateListOffsetsResponse(fbb, offset));
  }

  void Fetch(std::uint64_t id, const fb::FetchRequest& r) {
    auto p = std::make_unique<ParkedFetch>();
    p->correlation_id = id;
    p->topic = Str(r.topic());
    p->partition = PartitionId(r.partition());
    p->offset = Offset(r.offset());
    // Room for the response message besides the records.
    p->limits.max_bytes = std::min(r.max_bytes(), server_.options_.max_frame_bytes - 4096);
    p->limits.max_events = r.max_events();
    // A min_bytes above max_bytes could never be met: it means "a full response".
    p->min_bytes = std::clamp<std::uint32_t>(r.min_bytes(), 1, std::max(p->limits.max_bytes, 1u));
    const auto wait =
        std::min(std::chrono::milliseconds(r.max_wait_ms()), server_.options_.max_wait_cap);
    if (wait.count() == 0 || server_.stopping_.load()) {
      AnswerParked(*p, true);
      return;
    }
    // Counted as parked before its first look: a commit that becomes visible after that look
    // finds the count above zero and wakes it (the fences pair with OnEventsVisible's).
    server_.parked_.fetch_add(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (AnswerParked(*p, false)) {
      server_.parked_.fetch_sub(1);
      return;
    }
    // Park it: a long-poll. The events listener rechecks it; its timer answers it.
    p->id = ++next_parked_id_;
    p->timer = std::make_unique<asio::steady_timer>(strand_);
    p->timer->expires_after(wait);
    p->timer->async_wait([self = shared_from_this(), parked = p->id](boost::system::error_code ec) {
      if (ec) return;
      for (auto it = self->parked_.begin(); it != self->parked_.end(); ++it) {
        if ((*it)->id != parked) continue;
        self->AnswerParked(**it, true);
        self->parked_.erase(it);
        self->server_.parked_.fetch_sub(1);
        self->MaybeResume();
        return;
      }
    });
    ++inflight_;
    parked_.push_back(std::move(p));
  }

  // Fetches for `p`; answers and returns true if it has min_bytes, failed, or `always`. While
  // this connection's unwritten responses are at their limit a parked fetch stays parked (or,
  // at its deadline, is answered empty): a client that does not read cannot make the server
  // queue fetch data without bound.
  bool AnswerParked(ParkedFetch& p, bool always) {
    const bool saturated = queued_bytes_ >= server_.options_.max_queued_bytes;
    if (saturated && !always) return false;
    engine::FetchOptions limits = p.limits;
    if (saturated) limits.max_events = 0;
    auto got = server_.engine_.FetchViews(p.topic, p.partition, p.offset, limits);
    const bool parked = p.timer != nullptr;
    if (!got.ok()) {
      if (parked) --inflight_;
      SendError(p.correlation_id, got.status());
      return true;
    }
    if (!always && got->bytes < p.min_bytes) return false;
    if (parked) --inflight_;
    server_.events_out_.fetch_add(got->events, std::memory_order_relaxed);
    server_.event_bytes_out_.fetch_add(got->bytes, std::memory_order_relaxed);
    FlatBufferBuilder fbb(128);
    auto body = fb::CreateFetchResponse(fbb, got->events, got->next_offset.value(),
                                        got->high_watermark.value(),
                                        static_cast<std::uint32_t>(got->bytes));
    SendResponse(p.correlation_id, fbb, body,
                 Attachment{std::move(got->records), std::move(got->pins), got->bytes});
    return true;
  }

  Server::Impl& server_;
  tcp::socket socket_;
  tcp::socket::executor_type strand_;
  asio::steady_timer timer_;
  std::string remote_;
  wire::FrameReader reader_{server_.options_.max_frame_bytes};
  std::deque<OutFrame> writes_;
  std::vector<iovec> gather_;  // the write in progress
  std::size_t gathered_ = 0;   // pieces of it sent whole
  std::size_t in_write_ = 0;   // frames at the front of writes_ it covers
  std::list<std::unique_ptr<ParkedFetch>> parked_;
  struct Answer {
    std::uint64_t id;
    Result<engine::CommitResult> result;
  };
  std::mutex committed_mu_;
  std::vector<Answer> committed_;  // under committed_mu_: answers not yet taken by the strand
  std::vector<Answer> answering_;  // on the strand: the answers being sent
  std::uint32_t corked_ = 0;       // live Corked scopes
  std::uint64_t queued_bytes_ = 0;
  std::uint32_t inflight_ = 0;
  std::uint64_t next_parked_id_ = 0;
  std::chrono::steady_clock::time_point last_activity_ = std::chrono::steady_clock::now();
  bool handshaken_ = false;
  bool reading_ = false;
  bool writing_ = false;
  bool paused_ = false;
  bool closing_ = false;  // answered a bad frame: close once written
  bool closed_ = false;
};

}  // namespace

template <typename Fn>
void Connection::Post(Fn&& fn) {
  std::lock_guard lock(server_.gate_->mu);
  if (server_.gate_->open) asio::post(strand_, std::forward<Fn>(fn));
}

// ---- Server::Impl --------------------------------------------------------------------------

Status Server::Impl::Listen() {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(options_.host, ec);
  if (ec) {
    return base::InvalidArgument(
        fmt::format("listen address {:?}: {}", options_.host, ec.message()));
  }
  tcp::endpoint endpoint(address, options_.port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return base::Unavailable(
        fmt::format("cannot listen on {}:{}: {}", options_.host, options_.port, ec.message()));
  }
  host_ = options_.host;
  port_ = acceptor_.local_endpoint().port();
  return Status::Ok();
}

void Server::Impl::Accept() {
  acceptor_.async_accept(
      asio::make_strand(io_), [this](boost::system::error_code ec, tcp::socket socket) {
        if (ec) {
          if (ec == asio::error::operation_aborted || stopping_) return;
          // E.g. out of file descriptors: keep serving, and retry shortly rather than spin.
          spdlog::warn("accept: {}; retrying in 100 ms", ec.message());
          accept_retry_.expires_after(std::chrono::milliseconds(100));
          accept_retry_.async_wait([this](boost::system::error_code e) {
            if (!e && !stopping_) Accept();
          });
          return;
        }
        if (stopping_) return;
        if (connections_.load() >= options_.max_connections) {
          refused_.fetch_add(1);
          // Told why, then closed: the frame is small enough to fit any socket buffer.
          FlatBufferBuilder fbb(128);
          auto error = fb::CreateError(
              fbb, fb::Code::ResourceExhausted,
              fbb.CreateString(fmt::format("the server holds its limit of {} connections; retry "
                                           "later",
                                           options_.max_connections)));
          fbb.Finish(fb::CreateResponseMessage(fbb, 0, error));
          auto header = wire::EncodeFrameHeader(fbb.GetSize(), 0);
          boost::system::error_code ignored;
          std::array<asio::const_buffer, 2> buffers = {
              asio::buffer(header), asio::buffer(fbb.GetBufferPointer(), fbb.GetSize())};
          socket.non_blocking(true, ignored);
          socket.write_some(buffers, ignored);
          socket.close(ignored);
        } else {
          auto conn = std::make_shared<Connection>(*this, std::move(socket));
          {
            std::lock_guard lock(conns_mu_);
            conns_[conn.get()] = conn;
            connections_.fetch_add(1);
          }
          conn->Post([conn] { conn->Start(); });
        }
        Accept();
      });
}

std::vector<std::shared_ptr<Connection>> Server::Impl::Connections() {
  std::vector<std::shared_ptr<Connection>> out;
  std::lock_guard lock(conns_mu_);
  for (auto it = conns_.begin(); it != conns_.end();) {
    if (auto conn = it->second.lock()) {
      out.push_back(std::move(conn));
      ++it;
    } else {
      it = conns_.erase(it);
      connections_.fetch_sub(1);
    }
  }
  return out;
}

void Server::Impl::OnEventsVisible() {
  // From the log's writer thread: one wake-up at a time, whatever the commit rate.
  std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with Fetch's
  if (parked_.load(std::memory_order_relaxed) == 0) return;
  if (recheck_posted_.exchange(true)) return;
  asio::post(io_, [this] {
    recheck_posted_.store(false);
    for (auto& conn : Connections()) {
      conn->Post([conn] { conn->RecheckParked(false); });
    }
  });
}

Result<std::uint32_t> Server::Impl::PartitionCount(engine::Engine& engine, std::string_view topic) {
  for (const engine::TopicInfo& t : engine.ListTopics()) {
    if (t.name == topic) return t.partitions;
  }
  return base::NotFound(fmt::format("no topic {:?}", topic));
}

// Every tick: members whose session ended are removed. The coordinator may be waiting for a
// rebalance's durable commit, so it is asked on the blocking pool, never on an io thread.
void Server::Impl::ExpireMembers() {
  expiry_timer_.expires_after(options_.group_expiry_tick);
  expiry_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopping_) return;
    if (!expiring_.exchange(true)) {
      asio::post(blocking_, [this] {
        const auto now = std::chrono::steady_clock::now();
        if (groups_.NextExpiry() <= now) groups_.Expire(now);
        expiring_.store(false);
      });
    }
    ExpireMembers();
  });
}

void Server::Impl::Run() {
  listener_ = engine_.AddEventsListener([this] { OnEventsVisible(); });
  Accept();
  ExpireMembers();
  for (std::uint32_t i = 0; i < std::max<std::uint32_t>(options_.io_threads, 1); ++i) {
    threads_.emplace_back([this] { io_.run(); });
  }
}

void Server::Impl::Stop(std::chrono::milliseconds drain) {
  if (stopping_.exchange(true)) return;
  engine_.RemoveEventsListener(listener_);
  asio::post(io_, [this] {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  });
  asio::post(expiry_strand_, [this] { expiry_timer_.cancel(); });
  // Parked fetches are answered now with what they have.
  for (auto& conn : Connections()) conn->Post([conn] { conn->RecheckParked(true); });
  // In-flight commits are answered and written, for up to `drain`.
  const auto deadline = std::chrono::steady_clock::now() + drain;
  for (;;) {
    std::atomic<int> busy{0};
    std::atomic<int> checked{0};
    auto conns = Connections();
    for (auto& conn : conns) {
      conn->Post([conn, &busy, &checked] {
        if (!conn->Quiet()) busy.fetch_add(1);
        checked.fetch_add(1);
      });
    }
    while (checked.load() < static_cast<int>(conns.size())) std::this_thread::yield();
    if (busy.load() == 0 || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (auto& conn : Connections()) {
    conn->Post([conn] {
      conn->Close();
      conn->Forget();
    });
  }
  blocking_.join();
  scans_.join();
  {
    std::lock_guard lock(gate_->mu);
    gate_->open = false;
  }
  io_.stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

// ---- Server --------------------------------------------------------------------------------

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { Stop(); }

Result<std::unique_ptr<Server>> Server::Start(engine::Engine& engine, ServerOptions options) {
  if (options.max_frame_bytes < 64 * 1024) {
    return base::InvalidArgument(
        fmt::format("max frame bytes {} is below 64 KiB", options.max_frame_bytes));
  }
  auto impl = std::make_unique<Impl>(engine, std::move(options));
  LOCKSTEP_RETURN_IF_ERROR(impl->Listen());
  impl->Run();
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

const std::string& Server::host() const { return impl_->host_; }
std::uint16_t Server::port() const { return impl_->port_; }
ServerStats Server::stats() const { return impl_->stats(); }
void Server::Stop(std::chrono::milliseconds drain) { impl_->Stop(drain); }

}  // namespace lockstep::server
