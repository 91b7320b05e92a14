#pragma once
// Clocks. Wall time (ms since the Unix epoch) stamps batches and events; monotonic time
// measures durations and deadlines. Both are plain functions so that tests can substitute
// their own through options structs.
#include <chrono>
#include <cstdint>

namespace lockstep::base {

inline std::int64_t WallClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline std::int64_t MonotonicNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace lockstep::base
