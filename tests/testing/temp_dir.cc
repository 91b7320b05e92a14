#include "tests/testing/temp_dir.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace lockstep::testing {

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  const char* root = std::getenv("LOCKSTEP_TEST_DIR");
  std::filesystem::path base = root != nullptr ? root : std::filesystem::current_path();
  path_ = (base / ("lockstep-test-" + std::to_string(::getpid()) + "-" +
                   std::to_string(counter.fetch_add(1))))
              .string();
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace lockstep::testing
