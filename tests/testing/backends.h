#pragma once
// The real I/O backends a test runs against, and their names for parameterized tests.
#include <gtest/gtest.h>

#include <string>

#include "storage/io.h"

namespace lockstep::testing {

inline const auto kRealBackends =
    ::testing::Values(storage::IoBackend::kUring, storage::IoBackend::kPosix);

inline std::string BackendName(const ::testing::TestParamInfo<storage::IoBackend>& param) {
  return param.param == storage::IoBackend::kUring ? "io_uring" : "posix";
}

}  // namespace lockstep::testing
