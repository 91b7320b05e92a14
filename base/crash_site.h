#pragma once
// Named crash sites for lockstep-torture's process mode (docs/testing.md). A crash site only
// ever kills the process (SIGKILL to itself), never changes what the code does: the torture
// driver arms one through the environment, LOCKSTEP_CRASH_AT=SITE:N, and the N-th time the
// process passes SITE it dies there. Unarmed (always, in normal operation) a site costs one
// relaxed atomic load.
#include <atomic>
#include <optional>
#include <string>
#include <string_view>

namespace lockstep::base {

// Every site, by name. lockstepd refuses to start with an unknown one armed.
inline constexpr std::string_view kCrashSites[] = {
    "log.batch-written",          // a group commit is on disk, not yet acknowledged
    "log.segment-renamed",        // a new segment is renamed into place, its directory not synced
    "checkpoint.mid-write",       // a checkpoint file is half written
    "checkpoint.written",         // a checkpoint is durable; retention has not run
    "retention.segment-deleted",  // retention deleted one segment, maybe more to go
    "recovery.replaying",         // recovery replays the log (the N-th record)
    "recovery.copy-synced",       // recovery's durable copy of the newest segment, not yet renamed
};

namespace crash_internal {
extern std::atomic<bool> armed;
void Pass(std::string_view site);
}  // namespace crash_internal

inline void CrashSite(std::string_view site) {
  if (crash_internal::armed.load(std::memory_order_relaxed)) crash_internal::Pass(site);
}

// Arms the site LOCKSTEP_CRASH_AT names, if it is set. Returns an error message for an unknown
// site or a count that is not a positive number; the armed site on success (empty: none).
std::optional<std::string> ArmCrashSiteFromEnvironment(std::string* armed_site);

}  // namespace lockstep::base
