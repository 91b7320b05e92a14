#pragma once
// Counts heap allocations in every thread. Linking allocation_counter.cc into a test binary
// replaces the global operator new/delete of that binary (only) with counting versions.
#include <cstdint>

namespace lockstep::testing {
std::uint64_t AllocationCount();
}  // namespace lockstep::testing
