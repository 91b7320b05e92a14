#pragma once
// A lockstepd child process for the process-level integration tests.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace lockstep::integration {

using namespace std::chrono_literals;

// One lockstepd child on a free loopback port; killed (SIGKILL) if the test forgets it.
class Daemon {
 public:
  explicit Daemon(const std::string& data_dir, std::uint16_t port = 0,
                  const std::vector<std::string>& extra_args = {}) {
    int out[2];
    EXPECT_EQ(pipe(out), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    const std::string listen = "127.0.0.1:" + std::to_string(port);
    std::vector<std::string> args = {LOCKSTEPD_PATH, "--data-dir",  data_dir, "--listen",
                                     listen,         "--log-level", "warn"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    EXPECT_EQ(posix_spawn(&pid_, LOCKSTEPD_PATH, &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    out_ = fdopen(out[0], "r");
  }
  ~Daemon() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_ != nullptr) fclose(out_);
  }
  // The first stdout line: "listening on 127.0.0.1:PORT" (empty if the process ended first).
  std::string FirstLine() {
    char line[256] = {};
    if (fgets(line, sizeof line, out_) == nullptr) return "";
    std::string s(line);
    if (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }
  std::uint16_t WaitListening() {
    const std::string line = FirstLine();
    const std::string prefix = "listening on 127.0.0.1:";
    EXPECT_EQ(line.rfind(prefix, 0), 0u) << "first line: " << line;
    if (line.rfind(prefix, 0) != 0) return 0;
    return static_cast<std::uint16_t>(std::stoi(line.substr(prefix.size())));
  }
  // Sends `signal` and returns the exit status (-1: killed by a signal), waiting up to 30 s.
  int Stop(int signal) {
    kill(pid_, signal);
    int status = 0;
    for (int i = 0; i < 3000; ++i) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(10ms);
    }
    ADD_FAILURE() << "lockstepd did not stop";
    return -2;
  }
  int Wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
};

}  // namespace lockstep::integration
