#pragma once
// The real I/O backends a test runs against, and their names for parameterized tests.
#include <gtest/gtest.h>

#include <string>

#include "storage/io.h"

namespace lockstep::testing {

inline const auto kRealBackends =
    ::testing::Values(storage::IoBackend::kUring, storage::IoBackend::kPosix);

// Declares `std::unique_ptr<storage::Io> var` for `backend`. Where the host blocks io_uring
// (Docker's default seccomp profile) the test is skipped with that reason: the posix
// instantiation still runs there, and on this project's machines io_uring is always available.
#define LOCKSTEP_IO_OR_SKIP(var, backend)                                                   \
  auto var##_made = ::lockstep::storage::MakeIo(backend);                                   \
  if (var##_made.status().code() == ::lockstep::base::StatusCode::kUnavailable) {           \
    GTEST_SKIP() << "io_uring is blocked on this host: " << var##_made.status().ToString(); \
  }                                                                                         \
  ASSERT_TRUE(var##_made.ok()) << var##_made.status().ToString();                           \
  std::unique_ptr<::lockstep::storage::Io> var = std::move(var##_made).value()

inline std::string BackendName(const ::testing::TestParamInfo<storage::IoBackend>& param) {
  return param.param == storage::IoBackend::kUring ? "io_uring" : "posix";
}

}  // namespace lockstep::testing
