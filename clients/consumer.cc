#include "clients/consumer.h"

#include <fmt/format.h>

#include <algorithm>

#include "base/event_record.h"

namespace lockstep::client {

// A prefetch, decoded on the client's network thread from its own copy of the records.
struct Decoded {
  ConsumedBatch::Part part;  // no events: nothing at or after the position yet
  Offset next;               // after the last event
};

struct Consumer::Partition {
  std::string topic;
  PartitionId partition;
  Offset position;                       // the next offset Poll delivers
  bool fetching = false;                 // a prefetch from `position` is in flight (or due)
  std::uint32_t in_flight = 0;           // prefetches in flight, stale ones included
  bool refetch = false;                  // the next stale one back sends the due prefetch
  std::uint64_t epoch = 0;               // bumped by a seek: older prefetches are dropped
  std::optional<Result<Decoded>> ready;  // a completed prefetch, from `position`
  Offset committed;                      // what Commit last wrote
};

namespace {

std::string Str(base::Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

// Keeps the fetched records — the block they were received into, or else a copy (the view
// dies with the callback) — and decodes the events at or after `from` in place.
// `decoded->part` names its topic and partition already.
Status Decode(FetchView& fetched, Offset from, Decoded* decoded) {
  ConsumedBatch::Part& part = decoded->part;
  base::Bytes rest = fetched.records;
  if (fetched.storage) {
    part.bytes = std::move(fetched.storage);
  } else {
    part.bytes = base::NewBlock(fetched.records.size());
    std::copy(fetched.records.begin(), fetched.records.end(), part.bytes.get());
    rest = base::Bytes(part.bytes.get(), fetched.records.size());
  }
  // The count comes from the server: never trusted for more than the bytes can hold.
  part.events.reserve(
      std::min<std::size_t>(fetched.events, fetched.records.size() / base::kEventFixedBytes));
  decoded->next = from;
  while (!rest.empty()) {
    LOCKSTEP_ASSIGN_OR_RETURN(base::EventView e, base::DecodeEvent(rest));
    rest = rest.subspan(e.record().size());
    if (e.offset() < from) continue;
    // Offsets run on from `from` without a gap, end to end: a server that skipped events
    // (a damaged record it trusted) is caught here, not by a consumer missing them.
    if (e.offset() != decoded->next) {
      return base::DataLoss(fmt::format("{}/{}: offset {} where {} was due", part.topic,
                                        part.partition.value(), e.offset().value(),
                                        decoded->next.value()));
    }
    decoded->next = Offset(e.offset().value() + 1);
    part.events.push_back(e);
  }
  return Status::Ok();
}

}  // namespace

Consumer::Consumer(Client& client, ConsumerOptions options)
    : client_(client), options_(std::move(options)), generation_(options_.generation) {}

Result<std::unique_ptr<Consumer>> Consumer::Create(Client& client, ConsumerOptions options) {
  if (options.auto_commit && options.group.empty()) {
    return base::InvalidArgument("auto_commit needs a group");
  }
  return std::unique_ptr<Consumer>(new Consumer(client, std::move(options)));
}

Consumer::~Consumer() {
  StopHeartbeats();
  std::unique_lock lock(mu_);
  if (!member_id_.empty() && !left_) {
    // Not waited for: a consumer goes away at once even when the server is unreachable (the
    // session timeout removes the member then).
    client_.LeaveGroup(options_.group, member_id_, [](Status) {});
  }
  // Prefetch callbacks name this consumer: wait for them (a long-poll ends by its max_wait).
  cv_.wait(lock, [&] { return fetches_in_flight_ == 0; });
}

void Consumer::StopHeartbeats() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    heartbeat_cv_.notify_all();
  }
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
}

Status Consumer::Close() {
  unreported_.reset();
  StopHeartbeats();
  std::string member;
  {
    std::lock_guard lock(mu_);
    for (auto& [key, part] : partitions_) ++part->epoch;
    partitions_.clear();
    if (member_id_.empty() || left_) return Status::Ok();
    left_ = true;
    member = member_id_;
  }
  return client_.LeaveGroup(options_.group, member);
}

Result<Offset> Consumer::Reset(const std::string& topic, PartitionId partition) {
  switch (options_.reset) {
    case ResetPolicy::kEarliest:
      return client_.ListOffset(topic, partition, OffsetSpec::kEarliest);
    case ResetPolicy::kLatest:
      return client_.ListOffset(topic, partition, OffsetSpec::kLatest);
    case ResetPolicy::kFail:
      break;
  }
  return base::FailedPrecondition(fmt::format(
      "{}/{}: no valid position and the reset policy is to fail", topic, partition.value()));
}

// The group's committed offsets (none without a group, or for a group nobody committed for).
Result<std::map<std::pair<std::string, std::uint32_t>, Offset>> Consumer::Committed() {
  std::map<std::pair<std::string, std::uint32_t>, Offset> committed;
  if (options_.group.empty()) return committed;
  auto group = client_.DescribeGroup(options_.group);
  if (!group.ok()) {
    if (group.status().code() == base::StatusCode::kNotFound) return committed;
    return group.status();
  }
  for (const GroupOffset& o : group->offsets) committed[{o.topic, o.partition.value()}] = o.offset;
  return committed;
}

Status Consumer::Assign(const std::string& topic, std::vector<PartitionId> partitions) {
  {
    std::lock_guard lock(mu_);
    if (!topics_.empty()) {
      return base::FailedPrecondition(
          "this consumer subscribed: the server assigns its partitions");
    }
    manual_ = true;
  }
  if (partitions.empty()) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto topics, client_.ListTopics());
    bool found = false;
    for (const TopicInfo& t : topics) {
      if (t.name != topic) continue;
      found = true;
      for (std::uint32_t p = 0; p < t.partitions; ++p) partitions.emplace_back(p);
    }
    if (!found) return base::NotFound(fmt::format("no topic {:?}", topic));
  }
  return AddPartitions(topic, partitions);
}

// Each partition starts at the group's committed offset, else by the reset policy.
Status Consumer::AddPartitions(const std::string& topic,
                               const std::vector<PartitionId>& partitions) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto committed, Committed());
  for (PartitionId p : partitions) {
    Offset start;
    if (auto it = committed.find({topic, p.value()}); it != committed.end()) {
      start = it->second;
    } else {
      LOCKSTEP_ASSIGN_OR_RETURN(start, Reset(topic, p));
    }
    auto part = std::make_shared<Partition>();
    part->topic = topic;
    part->partition = p;
    part->position = start;
    part->committed = start;
    {
      std::lock_guard lock(mu_);
      partitions_[{topic, p.value()}] = part;
    }
    StartFetch(topic, p);
  }
  return Status::Ok();
}

Status Consumer::Subscribe(std::vector<std::string> topics) {
  if (options_.group.empty()) {
    return base::FailedPrecondition("Subscribe needs a group (ConsumerOptions::group)");
  }
  if (topics.empty()) return base::InvalidArgument("Subscribe needs at least one topic");
  {
    std::lock_guard lock(mu_);
    if (manual_ || !topics_.empty()) {
      return base::FailedPrecondition(
          "this consumer already has partitions (Assign) or a subscription");
    }
    topics_ = topics;
  }
  JoinOptions join;
  join.session_timeout = options_.session_timeout;
  auto membership = client_.JoinGroup(options_.group, topics, join);
  if (membership.ok()) {
    Status applied = ApplyMembership(*membership);
    if (applied.ok()) {
      heartbeat_thread_ = std::thread([this] { HeartbeatLoop(); });
      return Status::Ok();
    }
    // Not half-subscribed: leave, so the partitions go to the others now, not at session end.
    (void)client_.LeaveGroup(options_.group, membership->member_id);
    membership = applied;
  }
  std::lock_guard lock(mu_);
  topics_.clear();
  member_id_.clear();
  generation_ = 0;
  assignment_.clear();
  for (auto& [key, part] : partitions_) ++part->epoch;
  partitions_.clear();
  return membership.status();
}

// A heartbeat, or a join when the server no longer knows the member. One at a time (the
// heartbeat thread and Resync share it), so that two joins never race into two members.
Result<Membership> Consumer::RenewMembership() {
  std::lock_guard renewing(membership_mu_);
  std::string member;
  {
    std::lock_guard lock(mu_);
    member = member_id_;
  }
  auto membership = client_.Heartbeat(options_.group, member);
  if (!membership.ok() && membership.status().code() == base::StatusCode::kNotFound) {
    JoinOptions join;
    join.session_timeout = options_.session_timeout;
    membership = client_.JoinGroup(options_.group, topics_, join);
  }
  if (membership.ok()) {
    std::lock_guard lock(mu_);
    member_id_ = membership->member_id;
    heartbeat_interval_ = std::max(membership->heartbeat_interval, std::chrono::milliseconds(1));
  }
  return membership;
}

// The background thread of a subscribed consumer: heartbeats every interval (or at once when
// asked), and hands a new generation to the user's thread (pending_), which applies it.
void Consumer::HeartbeatLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    heartbeat_cv_.wait_for(lock, heartbeat_interval_, [&] { return closed_ || heartbeat_now_; });
    if (closed_) return;
    heartbeat_now_ = false;
    lock.unlock();
    auto membership = RenewMembership();
    lock.lock();
    // A failed heartbeat is tried again next interval: the client reconnects by itself.
    if (membership.ok() && membership->generation != generation_) {
      pending_ = std::move(*membership);
      cv_.notify_all();
    }
  }
}

// True when it applied a newer generation.
Result<bool> Consumer::ApplyPending() {
  std::optional<Membership> membership;
  {
    std::lock_guard lock(mu_);
    membership.swap(pending_);
    if (closed_ || !membership || membership->generation <= generation_) return false;
  }
  LOCKSTEP_RETURN_IF_ERROR(ApplyMembership(*membership));
  return true;
}

Status Consumer::Resync() {
  {
    std::lock_guard lock(mu_);
    if (topics_.empty() || closed_) return Status::Ok();
  }
  LOCKSTEP_ASSIGN_OR_RETURN(Membership membership, RenewMembership());
  {
    std::lock_guard lock(mu_);
    if (membership.generation <= generation_) return Status::Ok();
  }
  return ApplyMembership(membership);
}

// Every partition restarts from the committed offset (a rebalance drops what was read but not
// committed under the old generation), except that with auto_commit the partitions this member
// keeps are committed under the new generation first.
Status Consumer::ApplyMembership(const Membership& membership) {
  unreported_.reset();  // its partition may have gone to another member
  std::uint64_t previous = 0;
  {
    std::lock_guard lock(mu_);
    previous = generation_;
  }
  // Only from the generation just before: had the member missed one, another member may have
  // owned and committed the partition in between, and this commit would move it backwards.
  if (options_.auto_commit && previous != 0 && membership.generation == previous + 1) {
    std::vector<OffsetCommit> kept;
    for (OffsetCommit& c : Uncommitted()) {
      for (const TopicPartitions& t : membership.assignment) {
        if (t.topic != c.topic) continue;
        if (std::find(t.partitions.begin(), t.partitions.end(), c.partition) ==
            t.partitions.end()) {
          continue;
        }
        c.generation = membership.generation;
        kept.push_back(c);
      }
    }
    // Best effort: refused (yet another rebalance), the partitions are read again.
    if (!kept.empty()) (void)client_.CommitOffsets(kept);
  }
  {
    std::lock_guard lock(mu_);
    for (auto& [key, part] : partitions_) ++part->epoch;
    partitions_.clear();
    member_id_ = membership.member_id;
    generation_ = membership.generation;
    assignment_ = membership.assignment;
    delivered_ = false;
    heartbeat_interval_ = std::max(membership.heartbeat_interval, std::chrono::milliseconds(1));
  }
  for (const TopicPartitions& t : membership.assignment) {
    if (Status s = AddPartitions(t.topic, t.partitions); !s.ok()) {
      // Tried again by the next Poll: the membership goes back to pending.
      std::lock_guard lock(mu_);
      generation_ = 0;
      if (!pending_) pending_ = membership;
      return s.WithContext("applying the group's new assignment");
    }
  }
  return Status::Ok();
}

std::uint64_t Consumer::generation() const {
  std::lock_guard lock(mu_);
  return generation_;
}

std::vector<TopicPartitions> Consumer::assignment() const {
  std::lock_guard lock(mu_);
  return assignment_;
}

void Consumer::StartFetch(const std::string& topic, PartitionId partition) {
  std::shared_ptr<Partition> part;
  Offset from;
  std::uint64_t epoch = 0;
  {
    std::lock_guard lock(mu_);
    auto it = partitions_.find({topic, partition.value()});
    if (closed_ || it == partitions_.end()) return;
    part = it->second;
    if (part->fetching || part->ready) return;
    part->fetching = true;
    ++part->in_flight;
    from = part->position;
    epoch = part->epoch;
    ++fetches_in_flight_;
  }
  IssueFetch(std::move(part), from, epoch);
}

// REQUIRES: fetches_in_flight_ counts this fetch (the destructor waits for it to reach zero).
void Consumer::IssueFetch(std::shared_ptr<Partition> part, Offset from, std::uint64_t epoch) {
  FetchOptions o;
  o.max_bytes = options_.fetch_max_bytes;
  o.max_events = options_.fetch_max_events;
  o.max_wait = options_.max_wait;
  const std::string topic = part->topic;
  const PartitionId partition = part->partition;
  client_.FetchInPlace(topic, partition, from, o, [this, part, epoch, from](Result<FetchView> r) {
    bool stale = false;
    {
      std::lock_guard lock(mu_);
      stale = epoch != part->epoch;
    }
    // Decoded outside the lock, into a batch of its own: a bad record moves no position. A
    // stale fetch is not decoded (it is dropped below: its epoch never comes back).
    std::optional<Result<Decoded>> ready;
    if (!stale && !r.ok()) {
      ready = r.status();
    } else if (!stale) {
      Decoded decoded;
      decoded.part.topic = part->topic;
      decoded.part.partition = part->partition;
      Status s = Decode(*r, from, &decoded);
      if (s.ok()) {
        ready = std::move(decoded);
      } else {
        ready = std::move(s);
      }
    }
    Offset again;
    std::uint64_t again_epoch = 0;
    {
      std::lock_guard lock(mu_);
      --part->in_flight;
      if (epoch == part->epoch) {
        part->fetching = false;
        part->ready = std::move(ready);
        --fetches_in_flight_;
        cv_.notify_all();
        return;
      }
      // Stale (a seek came meanwhile, or the partition went away): dropped. When seeks found
      // two prefetches out already, the fetch from the new position is sent now, in its place
      // (the in-flight count passes to it, so the destructor keeps waiting).
      auto it = partitions_.find({part->topic, part->partition.value()});
      if (!part->refetch || closed_ || it == partitions_.end() || it->second != part) {
        --fetches_in_flight_;
        cv_.notify_all();
        return;
      }
      part->refetch = false;
      ++part->in_flight;
      again = part->position;
      again_epoch = part->epoch;
    }
    IssueFetch(part, again, again_epoch);
  });
}

Status Consumer::Seek(const std::string& topic, PartitionId partition, Offset offset) {
  unreported_.reset();  // the user moved on: an error kept from before may no longer hold
  std::shared_ptr<Partition> part;
  std::uint64_t epoch = 0;
  {
    std::lock_guard lock(mu_);
    auto it = partitions_.find({topic, partition.value()});
    if (it == partitions_.end()) {
      return base::FailedPrecondition(
          fmt::format("{}/{} is not assigned to this consumer", topic, partition.value()));
    }
    part = it->second;
    part->position = offset;
    epoch = ++part->epoch;
    part->ready.reset();
    if (closed_) return Status::Ok();
    part->fetching = true;
    // A fetch from the new position goes out now, also when one from the old position is still
    // out (perhaps parked in a long-poll until max_wait): that one is dropped when it returns.
    // At most two per partition, though: with two out already (seeks in a row), the first of
    // them back sends it.
    if (part->in_flight >= 2) {
      part->refetch = true;
      return Status::Ok();
    }
    ++part->in_flight;
    ++fetches_in_flight_;
  }
  IssueFetch(std::move(part), offset, epoch);
  return Status::Ok();
}

Status Consumer::SeekToBeginning(const std::string& topic, PartitionId partition) {
  LOCKSTEP_ASSIGN_OR_RETURN(Offset o, client_.ListOffset(topic, partition, OffsetSpec::kEarliest));
  return Seek(topic, partition, o);
}
Status Consumer::SeekToEnd(const std::string& topic, PartitionId partition) {
  LOCKSTEP_ASSIGN_OR_RETURN(Offset o, client_.ListOffset(topic, partition, OffsetSpec::kLatest));
  return Seek(topic, partition, o);
}
Status Consumer::SeekToTimestamp(const std::string& topic, PartitionId partition,
                                 std::int64_t timestamp_ms) {
  LOCKSTEP_ASSIGN_OR_RETURN(
      Offset o, client_.ListOffset(topic, partition, OffsetSpec::kTimestamp, timestamp_ms));
  return Seek(topic, partition, o);
}

ConsumedEvent ConsumedEventRef::Copy() const {
  ConsumedEvent c;
  c.topic = std::string(topic);
  c.partition = partition;
  c.offset = event.offset();
  c.lsn = event.lsn();
  c.timestamp_ms = event.timestamp_ms();
  if (auto key = event.key()) c.key = Str(*key);
  c.payload = Str(event.payload());
  c.type = std::string(event.type());
  c.schema_version = event.schema_version();
  event.ForEachHeader([&](const base::EventHeader& h) {
    c.headers.emplace_back(std::string(h.name), Str(h.value));
  });
  return c;
}

std::vector<ConsumedEvent> ConsumedBatch::Copy() const {
  std::vector<ConsumedEvent> out;
  out.reserve(size_);
  for (ConsumedEventRef e : *this) out.push_back(e.Copy());
  return out;
}

Result<std::vector<ConsumedEvent>> Consumer::Poll(std::chrono::milliseconds timeout) {
  LOCKSTEP_ASSIGN_OR_RETURN(ConsumedBatch batch, PollBatch(timeout));
  return batch.Copy();
}

Result<ConsumedBatch> Consumer::PollBatch(std::chrono::milliseconds timeout) {
  if (options_.auto_commit) {
    Status s = Commit();
    // Subscribed, a refusal for a stale generation is handled by the new assignment below.
    bool subscribed = false;
    {
      std::lock_guard lock(mu_);
      subscribed = !member_id_.empty();
    }
    if (!s.ok() && !(subscribed && s.code() == base::StatusCode::kFailedPrecondition)) return s;
  }
  if (unreported_) return *std::exchange(unreported_, std::nullopt);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  ConsumedBatch out;
  Status failure = Status::Ok();
  for (;;) {
    bool delivered = false;
    {
      std::lock_guard lock(mu_);
      delivered = delivered_;
    }
    LOCKSTEP_ASSIGN_OR_RETURN(const bool rebalanced, ApplyPending());
    if (rebalanced && delivered && !options_.auto_commit) {
      return base::Conflict(fmt::format(
          "group {:?} rebalanced (generation {}): the events polled since the last commit will "
          "come again; drop any transaction built from them and poll on",
          options_.group, generation()));
    }
    std::vector<std::shared_ptr<Partition>> refetch, reset;
    {
      std::unique_lock lock(mu_);
      for (auto& [key, part] : partitions_) {
        if (!part->ready) continue;
        Result<Decoded> r = std::move(*part->ready);
        part->ready.reset();
        refetch.push_back(part);  // prefetch the next batch now: Poll rarely waits
        if (r.ok()) {
          part->position = std::max(r->next, part->position);
          if (!r->part.events.empty()) out.Add(std::move(r->part));
        } else if (r.status().code() == base::StatusCode::kOutOfRange) {
          reset.push_back(part);
        } else if (r.status().code() != base::StatusCode::kUnavailable &&
                   (r.status().code() != base::StatusCode::kDeadlineExceeded ||
                    (options_.fail_when_unreachable && !client_.connected())) &&
                   failure.ok()) {
          failure = r.status().WithContext(
              fmt::format("fetching {}/{}", part->topic, part->partition.value()));
        }
      }
      if (out.empty() && reset.empty() && refetch.empty()) {
        const bool woke = cv_.wait_until(lock, deadline, [&] {
          if (pending_) return true;
          for (auto& [key, part] : partitions_) {
            if (part->ready) return true;
          }
          return false;
        });
        if (!woke) return out;
        continue;
      }
    }
    for (auto& part : reset) {
      auto start = Reset(part->topic, part->partition);
      if (!start.ok()) {
        if (failure.ok()) failure = start.status();
        continue;
      }
      std::lock_guard lock(mu_);
      part->position = *start;
    }
    for (auto& part : refetch) StartFetch(part->topic, part->partition);
    // Events already taken are delivered; an error goes with the next Poll then (the failing
    // partition keeps fetching, so a passing error clears by itself).
    if (!out.empty()) {
      if (!failure.ok()) unreported_ = std::move(failure);
      std::lock_guard lock(mu_);
      delivered_ = true;
      return out;
    }
    if (!failure.ok()) return failure;
    if (std::chrono::steady_clock::now() >= deadline) return out;
  }
}

std::vector<OffsetCommit> Consumer::Positions() const {
  std::lock_guard lock(mu_);
  std::vector<OffsetCommit> out;
  for (const auto& [key, part] : partitions_) {
    out.push_back({options_.group, generation_, part->topic, part->partition, part->position});
  }
  return out;
}

std::vector<OffsetCommit> Consumer::Uncommitted() const {
  std::lock_guard lock(mu_);
  std::vector<OffsetCommit> out;
  for (const auto& [key, part] : partitions_) {
    if (part->position == part->committed) continue;
    out.push_back({options_.group, generation_, part->topic, part->partition, part->position});
  }
  return out;
}

Status Consumer::Commit() {
  if (options_.group.empty()) {
    return base::FailedPrecondition("this consumer has no group to commit offsets for");
  }
  std::vector<OffsetCommit> changed = Uncommitted();
  if (changed.empty()) return Status::Ok();
  if (Status s = client_.CommitOffsets(changed); !s.ok()) {
    if (s.code() == base::StatusCode::kFailedPrecondition) {
      std::lock_guard lock(mu_);
      heartbeat_now_ = true;  // most likely a stale generation: learn the new one now
      heartbeat_cv_.notify_all();
    }
    return s;
  }
  std::lock_guard lock(mu_);
  for (const OffsetCommit& c : changed) {
    auto it = partitions_.find({c.topic, c.partition.value()});
    if (it != partitions_.end()) it->second->committed = c.offset;
  }
  return Status::Ok();
}

}  // namespace lockstep::client
