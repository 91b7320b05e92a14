#pragma once
// Between the wire (protocol/wire/lockstep.fbs) and the engine's types: requests in, responses
// out. Only shapes are checked here; the engine validates names, sizes and limits itself.
#include <flatbuffers/flatbuffers.h>

#include <string>
#include <string_view>

#include "engine/engine.h"
#include "protocol/server/groups.h"
#include "protocol/server/server.h"
#include "protocol/wire/frame.h"

namespace lockstep::server {

// A FlatBuffers string or byte vector as a std::string ("" when absent).
std::string Str(const flatbuffers::String* s);
std::string Str(const flatbuffers::Vector<std::uint8_t>* v);
std::string_view View(const flatbuffers::Vector<std::uint8_t>* v);

Result<engine::Transaction> ToTransaction(const wire::fb::CommitRequest& request);
Result<engine::Transaction> ToOffsetCommits(const wire::fb::CommitOffsetsRequest& request);

flatbuffers::Offset<wire::fb::CommitResponse> Build(flatbuffers::FlatBufferBuilder& fbb,
                                                    const engine::CommitResult& result);
flatbuffers::Offset<wire::fb::ListTopicsResponse> Build(
    flatbuffers::FlatBufferBuilder& fbb, const std::vector<engine::TopicInfo>& topics);
flatbuffers::Offset<wire::fb::Row> Build(flatbuffers::FlatBufferBuilder& fbb,
                                         const engine::Row& row);
flatbuffers::Offset<wire::fb::DescribeGroupResponse> Build(flatbuffers::FlatBufferBuilder& fbb,
                                                           const engine::GroupInfo& group,
                                                           const std::vector<MemberInfo>& members);
flatbuffers::Offset<wire::fb::MemberAssignment> Build(flatbuffers::FlatBufferBuilder& fbb,
                                                      const MemberState& member);
flatbuffers::Offset<wire::fb::GroupLagResponse> Build(flatbuffers::FlatBufferBuilder& fbb,
                                                      const std::vector<engine::PartitionLag>& lag);
flatbuffers::Offset<wire::fb::ChangesResponse> Build(flatbuffers::FlatBufferBuilder& fbb,
                                                     const engine::ChangeFeed& feed);

}  // namespace lockstep::server
