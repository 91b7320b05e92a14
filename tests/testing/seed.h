#pragma once
// Seeds for randomized tests. Every randomized test takes its seed from here, records it with
// SCOPED_TRACE so that a failure prints it, and reproduces exactly when run again with
// LOCKSTEP_TEST_SEED=<seed>. Without that variable each run draws a new seed.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

namespace lockstep::testing {

// Also prints the seed at once, so that a crash, a sanitizer report or a timeout — which skip
// gtest's failure output — still leaves it in the log.
inline std::uint64_t TestSeed() {
  std::uint64_t seed = 0;
  if (const char* s = std::getenv("LOCKSTEP_TEST_SEED")) {
    seed = std::strtoull(s, nullptr, 10);
  } else {
    seed = std::random_device{}() | (std::uint64_t{std::random_device{}()} << 32);
  }
  std::fprintf(stderr, "[ seed     ] LOCKSTEP_TEST_SEED=%llu\n",
               static_cast<unsigned long long>(seed));
  return seed;
}

inline std::string SeedTrace(std::uint64_t seed) {
  return "seed " + std::to_string(seed) +
         " (rerun with LOCKSTEP_TEST_SEED=" + std::to_string(seed) + ")";
}

// Budget multiplier for randomized loops: LOCKSTEP_TEST_SCALE=10 runs ten times the default.
inline double TestScale() {
  if (const char* s = std::getenv("LOCKSTEP_TEST_SCALE")) return std::strtod(s, nullptr);
  return 1.0;
}

}  // namespace lockstep::testing
