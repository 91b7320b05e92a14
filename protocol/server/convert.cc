#include "protocol/server/convert.h"

#include <fmt/format.h>

namespace lockstep::server {

namespace fb = wire::fb;
using flatbuffers::FlatBufferBuilder;
template <typename T>
using FbOffset = flatbuffers::Offset<T>;

std::string Str(const flatbuffers::String* s) { return s == nullptr ? std::string() : s->str(); }

std::string_view View(const flatbuffers::Vector<std::uint8_t>* v) {
  if (v == nullptr) return {};
  return {reinterpret_cast<const char*>(v->data()), v->size()};
}

std::string Str(const flatbuffers::Vector<std::uint8_t>* v) { return std::string(View(v)); }

namespace {

FbOffset<flatbuffers::Vector<std::uint8_t>> Bytes(FlatBufferBuilder& fbb, std::string_view s) {
  return fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

Result<engine::OffsetCommit> ToOffsetCommit(const fb::OffsetCommit* o) {
  if (o == nullptr) return base::InvalidArgument("an offset commit is empty");
  return engine::OffsetCommit{Str(o->group()), o->generation(), Str(o->topic()),
                              base::PartitionId(o->partition()), base::Offset(o->offset())};
}

}  // namespace

Result<engine::Transaction> ToTransaction(const fb::CommitRequest& r) {
  engine::Transaction txn;
  if (const auto* list = r.preconditions()) {
    for (const fb::Precondition* p : *list) {
      if (p == nullptr) return base::InvalidArgument("a precondition is empty");
      switch (p->kind()) {
        case fb::PreconditionKind::Absent:
          txn.RequireAbsent(Str(p->table()), Str(p->key()));
          break;
        case fb::PreconditionKind::Exists:
          txn.RequireExists(Str(p->table()), Str(p->key()));
          break;
        case fb::PreconditionKind::Version:
          txn.RequireVersion(Str(p->table()), Str(p->key()), base::Lsn(p->version()));
          break;
        default:
          return base::InvalidArgument(
              fmt::format("unknown precondition kind {}", static_cast<int>(p->kind())));
      }
    }
  }
  if (const auto* list = r.writes()) {
    for (const fb::Write* w : *list) {
      if (w == nullptr) return base::InvalidArgument("a write is empty");
      if (w->is_delete()) {
        txn.Delete(Str(w->table()), Str(w->key()));
      } else {
        txn.Put(Str(w->table()), Str(w->key()), Str(w->value()));
      }
    }
  }
  if (const auto* list = r.events()) {
    for (const fb::Event* e : *list) {
      if (e == nullptr) return base::InvalidArgument("an event is empty");
      engine::EventAppend ev;
      ev.topic = Str(e->topic());
      if (e->partition() >= 0) {
        if (e->partition() > UINT32_MAX) {
          return base::InvalidArgument(fmt::format("partition {} is too large", e->partition()));
        }
        ev.partition = base::PartitionId(static_cast<std::uint32_t>(e->partition()));
      } else if (e->partition() != -1) {
        return base::InvalidArgument(
            fmt::format("partition {} is negative (-1 means: choose)", e->partition()));
      }
      if (e->key() != nullptr) ev.key = Str(e->key());
      ev.payload = Str(e->payload());
      ev.type = Str(e->type());
      if (e->schema_version() > UINT16_MAX) {
        return base::InvalidArgument(
            fmt::format("schema version {} is above 65535", e->schema_version()));
      }
      ev.schema_version = static_cast<std::uint16_t>(e->schema_version());
      if (const auto* headers = e->headers()) {
        for (const fb::EventHeader* h : *headers) {
          if (h == nullptr) return base::InvalidArgument("an event header is empty");
          ev.headers.emplace_back(Str(h->name()), Str(h->value()));
        }
      }
      if (e->timestamp_ms() != -1) ev.timestamp_ms = e->timestamp_ms();
      txn.Append(std::move(ev));
    }
  }
  if (const auto* list = r.offsets()) {
    for (const fb::OffsetCommit* o : *list) {
      LOCKSTEP_ASSIGN_OR_RETURN(engine::OffsetCommit commit, ToOffsetCommit(o));
      txn.CommitOffset(std::move(commit));
    }
  }
  if (r.idempotency_key() != nullptr && r.producer_id() != 0) {
    return base::InvalidArgument(
        "a transaction has an idempotency key or a producer sequence, "
        "not both");
  }
  if (r.idempotency_key() != nullptr) txn.IdempotencyKey(View(r.idempotency_key()));
  if (r.producer_id() != 0) txn.ProducerSequence(r.producer_id(), r.producer_sequence());
  return txn;
}

Result<engine::Transaction> ToOffsetCommits(const fb::CommitOffsetsRequest& r) {
  engine::Transaction txn;
  if (r.offsets() == nullptr || r.offsets()->size() == 0) {
    return base::InvalidArgument("no offsets to commit");
  }
  for (const fb::OffsetCommit* o : *r.offsets()) {
    LOCKSTEP_ASSIGN_OR_RETURN(engine::OffsetCommit commit, ToOffsetCommit(o));
    txn.CommitOffset(std::move(commit));
  }
  return txn;
}

FbOffset<fb::CommitResponse> Build(FlatBufferBuilder& fbb, const engine::CommitResult& result) {
  // One per commit, so nothing here allocates once warm: CreateSharedString would allocate a
  // string pool per builder; a transaction's events mostly name one topic, so the previous
  // name's string is reused. The list of positions is the thread's, reused.
  thread_local std::vector<FbOffset<fb::EventPosition>> events;
  events.clear();
  const std::string* topic = nullptr;
  FbOffset<flatbuffers::String> topic_offset;
  for (const engine::EventPosition& e : result.events) {
    if (topic == nullptr || *topic != e.topic) {
      topic = &e.topic;
      topic_offset = fbb.CreateString(e.topic);
    }
    events.push_back(
        fb::CreateEventPosition(fbb, topic_offset, e.partition.value(), e.offset.value()));
  }
  return fb::CreateCommitResponse(fbb, result.lsn.value(), fbb.CreateVector(events));
}

FbOffset<fb::ListTopicsResponse> Build(FlatBufferBuilder& fbb,
                                       const std::vector<engine::TopicInfo>& topics) {
  std::vector<FbOffset<fb::Topic>> out;
  for (const engine::TopicInfo& t : topics) {
    std::vector<std::uint64_t> starts, ends;
    for (base::Offset o : t.start_offsets) starts.push_back(o.value());
    for (base::Offset o : t.end_offsets) ends.push_back(o.value());
    out.push_back(fb::CreateTopic(fbb, fbb.CreateString(t.name), t.partitions, t.retention_ms,
                                  t.retention_bytes, fbb.CreateVector(starts),
                                  fbb.CreateVector(ends)));
  }
  return fb::CreateListTopicsResponse(fbb, fbb.CreateVector(out));
}

FbOffset<fb::Row> Build(FlatBufferBuilder& fbb, const engine::Row& row) {
  return fb::CreateRow(fbb, Bytes(fbb, row.key), Bytes(fbb, row.value), row.version.value());
}

namespace {
FbOffset<flatbuffers::Vector<FbOffset<fb::TopicPartitions>>> Build(
    FlatBufferBuilder& fbb, const std::vector<TopicAssignment>& assignment) {
  std::vector<FbOffset<fb::TopicPartitions>> out;
  for (const TopicAssignment& a : assignment) {
    std::vector<std::uint32_t> partitions;
    for (PartitionId p : a.partitions) partitions.push_back(p.value());
    out.push_back(fb::CreateTopicPartitions(fbb, fbb.CreateSharedString(a.topic),
                                            fbb.CreateVector(partitions)));
  }
  return fbb.CreateVector(out);
}
}  // namespace

FbOffset<fb::MemberAssignment> Build(FlatBufferBuilder& fbb, const MemberState& member) {
  return fb::CreateMemberAssignment(fbb, fbb.CreateString(member.member_id), member.generation,
                                    Build(fbb, member.assignment),
                                    static_cast<std::uint32_t>(member.heartbeat_interval.count()));
}

FbOffset<fb::DescribeGroupResponse> Build(FlatBufferBuilder& fbb, const engine::GroupInfo& group,
                                          const std::vector<MemberInfo>& members) {
  std::vector<FbOffset<fb::GroupMember>> live;
  for (const MemberInfo& m : members) {
    live.push_back(
        fb::CreateGroupMember(fbb, fbb.CreateString(m.member_id), fbb.CreateString(m.client),
                              fbb.CreateVectorOfStrings(m.topics), Build(fbb, m.assignment)));
  }
  std::vector<FbOffset<fb::CommittedOffset>> offsets;
  for (const engine::GroupOffset& o : group.offsets) {
    offsets.push_back(fb::CreateCommittedOffset(fbb, fbb.CreateSharedString(o.topic),
                                                o.partition.value(), o.offset.value(), o.generation,
                                                o.commit_ms));
  }
  return fb::CreateDescribeGroupResponse(fbb, fbb.CreateString(group.name), group.generation,
                                         fbb.CreateVector(offsets), fbb.CreateVector(live));
}

FbOffset<fb::GroupLagResponse> Build(FlatBufferBuilder& fbb,
                                     const std::vector<engine::PartitionLag>& lag) {
  std::vector<FbOffset<fb::PartitionLag>> out;
  for (const engine::PartitionLag& l : lag) {
    out.push_back(fb::CreatePartitionLag(fbb, fbb.CreateSharedString(l.topic), l.partition.value(),
                                         l.committed.value(), l.end.value(), l.events, l.ms));
  }
  return fb::CreateGroupLagResponse(fbb, fbb.CreateVector(out));
}

FbOffset<fb::ChangesResponse> Build(FlatBufferBuilder& fbb, const engine::ChangeFeed& feed) {
  std::vector<FbOffset<fb::ChangedTransaction>> txns;
  for (const engine::ChangedTransaction& t : feed.transactions) {
    std::vector<FbOffset<fb::Change>> changes;
    for (const engine::Change& c : t.changes) {
      changes.push_back(fb::CreateChange(
          fbb, fbb.CreateSharedString(c.table), Bytes(fbb, c.key),
          c.before ? Bytes(fbb, *c.before) : FbOffset<flatbuffers::Vector<std::uint8_t>>(),
          c.after ? Bytes(fbb, *c.after) : FbOffset<flatbuffers::Vector<std::uint8_t>>()));
    }
    std::vector<FbOffset<fb::ChangedEvent>> events;
    for (const engine::ChangedEvent& e : t.events) {
      events.push_back(fb::CreateChangedEvent(
          fbb, fbb.CreateSharedString(e.topic), e.partition.value(), e.offset.value(),
          fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(e.record.data()),
                           e.record.size())));
    }
    txns.push_back(fb::CreateChangedTransaction(
        fbb, t.lsn.value(), t.commit_ms, fbb.CreateVector(changes), fbb.CreateVector(events)));
  }
  return fb::CreateChangesResponse(fbb, feed.next_lsn.value(), fbb.CreateVector(txns));
}

}  // namespace lockstep::server
