#pragma once
// TempDir: a fresh directory on the real disk for one test, removed with everything in it when
// the TempDir goes. It lives under $LOCKSTEP_TEST_DIR if set, else under the build tree's
// working directory (not /tmp, which may be tmpfs and would hide fdatasync costs and errors).
#include <string>

namespace lockstep::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace lockstep::testing
