#pragma once
// The `lockstep` command-line tool (docs/cli.md): shared pieces of its commands. Every command
// is a CLI11 subcommand whose callback returns an exit code: 0 success, 1 failure or conflict,
// 2 usage (bad arguments).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "clients/admin.h"
#include "clients/client.h"

namespace lockstep::cli {

using base::Lsn;
using base::Result;
using base::Status;

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

enum class Format { kHuman, kJson };

// What every command shares: the global options and the connection.
struct Context {
  std::string broker;  // HOST:PORT
  Format format = Format::kHuman;
  std::string format_name;  // as given: human, json or raw (raw: consume's payloads alone)
  double timeout_s = 10;    // how long calls retry (a lost connection) before failing

  Result<std::unique_ptr<client::Client>> Connect() const;
};

// A command's body: run after parsing, returns the exit code.
using Run = std::function<int()>;

// Registers the command groups on `app`; each sets `*run` when its command is chosen.
void AddCatalogCommands(CLI::App& app, Context& ctx, Run* run);
void AddDataCommands(CLI::App& app, Context& ctx, Run* run);
void AddGroupCommands(CLI::App& app, Context& ctx, Run* run);
void AddTxnCommands(CLI::App& app, Context& ctx, Run* run);
void AddOfflineCommands(CLI::App& app, Context& ctx, Run* run);

// ---- Output ---------------------------------------------------------------------------------

// Prints the failure to stderr as "lockstep: ..." and returns kExitFailure.
int Fail(const Status& status);
// Prints a usage error to stderr and returns kExitUsage.
int UsageError(const std::string& message);

// One JSON object on one line of stdout, flushed.
void PrintJson(const nlohmann::ordered_json& object);

// Puts bytes into `object[name]`: a JSON string when they are UTF-8, else base64 with
// `object[name + "_encoding"] = "base64"`.
void PutBytes(nlohmann::ordered_json& object, const std::string& name, const std::string& bytes);

// An aligned text table for the human format: a header row, then rows; printed at once.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header) : rows_{std::move(header)} {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// Bytes shown to a person: printable text as is, anything else escaped (\xNN).
std::string Printable(const std::string& bytes);

// A progress line on stderr for long work, shown when stderr is a terminal: redrawn in place at
// most every 200 ms, erased by Done() (or the destructor). A command that prints to stdout while
// it works (`quiet_stdout` false) shows it only when stdout is not that terminal too, where the
// two would tangle.
class ProgressLine {
 public:
  ProgressLine(std::string what, bool quiet_stdout);
  ~ProgressLine() { Done(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;
  // `text` is built only when the line will be drawn.
  void Update(const std::function<std::string()>& text);
  void Done();

 private:
  std::string what_;
  bool shown_ = false;
  bool terminal_;
  std::int64_t next_ns_ = 0;
};

}  // namespace lockstep::cli
