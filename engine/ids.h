#pragma once
// Engine-wide strong ids. Tables and topics are referred to by number in the log (compact, and
// stable across renames); the catalog maps names to them.
#include "base/strong_id.h"

namespace lockstep::engine {

using base::Lsn;
using base::Offset;
using base::PartitionId;
using TableId = base::StrongId<struct TableIdTag, std::uint32_t>;
using TopicId = base::StrongId<struct TopicIdTag, std::uint32_t>;

}  // namespace lockstep::engine
