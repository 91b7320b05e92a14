// Planted bugs: see planted_bug.h.
#include "base/planted_bug.h"

#include <atomic>

namespace lockstep::base {

std::string_view PlantedBugName(PlantedBug bug) {
  switch (bug) {
    case PlantedBug::kNone:
      return "none";
    case PlantedBug::kAckBeforeSync:
      return "ack-before-sync";
    case PlantedBug::kSkipSegmentDirSync:
      return "skip-segment-dir-sync";
    case PlantedBug::kTrustTornTail:
      return "trust-torn-tail";
    case PlantedBug::kTruncateAtMidLogCorruption:
      return "truncate-at-mid-log-corruption";
    case PlantedBug::kRetryFsyncAfterEio:
      return "retry-fsync-after-eio";
    case PlantedBug::kReadPastDurable:
      return "read-past-durable";
    case PlantedBug::kStateWithoutEvents:
      return "state-without-events";
    case PlantedBug::kDeleteSegmentBeforeCheckpoint:
      return "delete-segment-before-checkpoint";
  }
  return "unknown";
}

std::optional<PlantedBug> ParsePlantedBug(std::string_view name) {
  for (PlantedBug bug : kPlantedBugs) {
    if (PlantedBugName(bug) == name) return bug;
  }
  return std::nullopt;
}

#ifdef LOCKSTEP_PLANTED_BUGS
namespace {
std::atomic<PlantedBug> planted{PlantedBug::kNone};
}  // namespace

bool Planted(PlantedBug bug) { return planted.load(std::memory_order_relaxed) == bug; }
void PlantBug(PlantedBug bug) { planted.store(bug, std::memory_order_relaxed); }
#endif

}  // namespace lockstep::base
