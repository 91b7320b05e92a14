#pragma once
// Planted bugs (issue 6, docs/testing.md): deliberate defects that the torture checker must
// catch, to prove it can fail. They exist only in a build configured with
// -DLOCKSTEP_PLANTED_BUGS=ON (tools/test.sh turns it on for the ASan build); everywhere else
// Planted() is a constant false and the defective branches compile away, so the binaries that
// tools/run.sh builds never hold them. At most one is active, chosen at run time (no rebuild per
// bug) with PlantBug(), e.g. by `lockstep-torture --plant NAME`.
#include <cstdint>
#include <optional>
#include <string_view>

namespace lockstep::base {

enum class PlantedBug : std::uint8_t {
  kNone,
  kAckBeforeSync,                  // acknowledge a log batch without its fdatasync
  kSkipSegmentDirSync,             // no directory sync after a new segment is renamed into place
  kTrustTornTail,                  // recovery accepts the newest segment's batches unchecked
  kTruncateAtMidLogCorruption,     // recovery cuts the log at damage instead of refusing
  kRetryFsyncAfterEio,             // a failed fdatasync is retried, and its success believed
  kReadPastDurable,                // reads see a transaction before it is durable
  kStateWithoutEvents,             // recovery applies a transaction's state writes, not its events
  kDeleteSegmentBeforeCheckpoint,  // retention deletes segments before the checkpoint is durable
};

inline constexpr PlantedBug kPlantedBugs[] = {
    PlantedBug::kAckBeforeSync,      PlantedBug::kSkipSegmentDirSync,
    PlantedBug::kTrustTornTail,      PlantedBug::kTruncateAtMidLogCorruption,
    PlantedBug::kRetryFsyncAfterEio, PlantedBug::kReadPastDurable,
    PlantedBug::kStateWithoutEvents, PlantedBug::kDeleteSegmentBeforeCheckpoint,
};

// The bug's name on the command line, e.g. "ack-before-sync".
std::string_view PlantedBugName(PlantedBug bug);
std::optional<PlantedBug> ParsePlantedBug(std::string_view name);

#ifdef LOCKSTEP_PLANTED_BUGS
inline constexpr bool kPlantedBugsBuilt = true;
// True when `bug` is the active one. One relaxed atomic load.
bool Planted(PlantedBug bug);
void PlantBug(PlantedBug bug);
#else
inline constexpr bool kPlantedBugsBuilt = false;
constexpr bool Planted(PlantedBug) { return false; }
inline void PlantBug(PlantedBug) {}
#endif

}  // namespace lockstep::base
