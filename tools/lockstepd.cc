// lockstepd: the Lockstep server (docs/protocol.md, "lockstepd"). One engine over a data directory,
// served over TCP by protocol/server.
//
// Settings come from flags, then LOCKSTEP_* environment variables, then an optional --config
// TOML file, then defaults, in that order of precedence. Once it serves, it prints exactly one
// line to stdout, "listening on HOST:PORT", flushed; logs go to stderr. SIGTERM or SIGINT stop
// it gracefully (exit 0). A held lock, damaged data, a bad flag or config: a message and a
// non-zero exit (2 for usage, 1 otherwise).
#include <fmt/format.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <CLI/CLI.hpp>

#include <toml++/toml.h>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <variant>

#include "base/crash_site.h"
#include "base/planted_bug.h"
#include "engine/engine.h"
#include "protocol/server/metrics.h"
#include "protocol/server/server.h"
#include "storage/io.h"

namespace {

using lockstep::base::Status;

struct Settings {
  std::string data_dir = "./data";
  std::string listen = "127.0.0.1:7070";
  bool allow_remote = false;
  std::uint32_t max_connections = 4096;
  std::uint32_t max_frame_bytes = 16u << 20;
  std::uint32_t max_inflight_requests = 1024;
  std::uint64_t max_queued_bytes = 64u << 20;
  std::uint32_t idle_timeout_ms = 600'000;
  std::uint32_t handshake_timeout_ms = 10'000;
  std::uint32_t io_threads = 1;
  std::int64_t version_window_ms = 10'000;
  std::uint64_t table_bytes_max = 0;
  std::uint64_t segment_bytes = 64ull << 20;
  std::uint32_t batch_bytes_max = 4u << 20;
  std::uint64_t checkpoint_every_bytes = 256ull << 20;
  std::int64_t checkpoint_every_ms = 600'000;
  std::string log_level = "info";
  std::string metrics;  // HOST:PORT of the HTTP metrics listener; empty: none
  std::uint32_t group_min_session_timeout_ms = 100;
  std::uint32_t group_max_session_timeout_ms = 600'000;
  std::uint32_t group_max_members = 1'000;
  std::uint32_t max_groups = 10'000;
  std::uint32_t group_max_topics = 1'000;
};

int Usage(const std::string& message) {
  std::fprintf(stderr, "lockstepd: %s (see lockstepd --help)\n", message.c_str());
  return 2;
}

bool IsLoopback(const std::string& host) {
  return host == "127.0.0.1" || host == "::1" || host.rfind("127.", 0) == 0;
}

struct HostPort {
  std::string host;
  std::uint16_t port = 0;
};

// "HOST:PORT" or "[V6]:PORT", the port from 0 to 65535; else an error naming the flag.
std::variant<HostPort, std::string> ParseHostPort(const char* flag, const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return fmt::format("{} {:?} is not HOST:PORT", flag, text);
  }
  HostPort hp;
  hp.host = text.substr(0, colon);
  if (hp.host.size() > 2 && hp.host.front() == '[' && hp.host.back() == ']') {
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  }
  const std::string port = text.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535) {
    return fmt::format("{} {:?}: the port must be a number from 0 to 65535", flag, text);
  }
  hp.port = static_cast<std::uint16_t>(std::stoul(port));
  return hp;
}

// CLI11 checks a value with it wherever it comes from (flag, variable, config file).
CLI::Validator HostPortCheck(const char* what, bool empty_allowed) {
  return CLI::Validator(
      [what, empty_allowed](std::string& text) -> std::string {
        if (text.empty() && empty_allowed) return {};  // --metrics "" switches it off
        auto parsed = ParseHostPort(what, text);
        auto* error = std::get_if<std::string>(&parsed);
        return error != nullptr ? *error : std::string();
      },
      "HOST:PORT");
}

std::string Bracketed(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

// Applies the config file's keys to every setting that no flag or variable set. Unknown keys
// and wrong types are errors naming the key and its place in the file.
template <typename Bind>
std::optional<std::string> ApplyConfig(const std::string& path, Bind&& bound) {
  toml::table config;
  try {
    config = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return fmt::format("config {}: {} at line {}, column {}", path, e.description(),
                       e.source().begin.line, e.source().begin.column);
  }
  for (const auto& [key, node] : config) {
    const std::string name(key.str());
    auto apply = bound(name);
    if (!apply) {
      return fmt::format("config {}: unknown key {:?} at line {}", path, name,
                         node.source().begin.line);
    }
    if (auto error = (*apply)(node)) {
      return fmt::format("config {}: key {:?} at line {}: {}", path, name, node.source().begin.line,
                         *error);
    }
  }
  return std::nullopt;
}

void RaiseFileLimit() {
  // 1,000 idle clients and more need descriptors: take the hard limit.
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      spdlog::warn("could not raise the open-file limit to {}", limit.rlim_max);
    }
  }
}

// The message as a logfmt value (the `%*` of the log pattern): quotes and backslashes escaped,
// line breaks and tabs as \n \r \t, other control bytes as \u00XX, so that a record stays one
// parseable line, and a terminal shows no escape sequence, whatever it quotes — group names,
// paths, errors.
class LogfmtMessage : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    for (const char c : std::string_view(msg.payload.data(), msg.payload.size())) {
      const auto byte = static_cast<unsigned char>(c);
      const char* escaped = c == '"'    ? "\\\""
                            : c == '\\' ? "\\\\"
                            : c == '\n' ? "\\n"
                            : c == '\r' ? "\\r"
                            : c == '\t' ? "\\t"
                                        : nullptr;
      if (escaped != nullptr) {
        dest.append(escaped, escaped + 2);
      } else if (byte < 0x20 || byte == 0x7f) {
        constexpr char kHex[] = "0123456789abcdef";
        const char unicode[] = {'\\', 'u', '0', '0', kHex[byte >> 4], kHex[byte & 0xf]};
        dest.append(unicode, unicode + sizeof unicode);
      } else {
        dest.push_back(c);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<LogfmtMessage>();
  }
};

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  CLI::App app{"lockstepd: the Lockstep server (tables and event streams in one commit)"};
  app.footer(
      "Testing: LOCKSTEP_CRASH_AT=SITE:N kills the server at the N-th pass through a named "
      "crash site (lockstep-torture --mode process; docs/testing.md).");
  std::string config_path;
  std::map<std::string, CLI::Option*> options;
  auto add = [&](const std::string& name, auto& value, const std::string& help) {
    std::string env = "LOCKSTEP_" + name;
    for (char& c : env) c = c == '-' ? '_' : static_cast<char>(std::toupper(c));
    CLI::Option* o = app.add_option("--" + name, value, help)->envname(env)->capture_default_str();
    std::string key = name;
    for (char& c : key) c = c == '-' ? '_' : c;
    options[key] = o;
    return o;
  };
  // Ranges are checked wherever a value comes from (flag, variable or config file). The log's
  // own sizes (segment-bytes, batch-bytes-max) are checked by the engine, which knows how they
  // relate.
  constexpr std::uint64_t kDay = 24ull * 3600 * 1000;
  constexpr std::uint64_t kPiB = 1ull << 50;
  add("data-dir", s.data_dir, "data directory (created if missing)");
  add("listen", s.listen, "HOST:PORT to listen on; port 0 picks a free one")
      ->check(HostPortCheck("--listen", false));
  options["allow_remote"] =
      app.add_flag("--allow-remote", s.allow_remote,
                   "allow a non-loopback --listen address (no authentication: trusted networks "
                   "only)")
          ->envname("LOCKSTEP_ALLOW_REMOTE");
  add("max-connections", s.max_connections, "connection limit")->check(CLI::Range(1u, 1000000u));
  add("max-frame-bytes", s.max_frame_bytes, "largest frame accepted or sent")
      ->check(CLI::Range(64u << 10, 1u << 30));
  add("max-inflight-requests", s.max_inflight_requests,
      "requests in progress per connection before it stops being read")
      ->check(CLI::Range(1u, 1000000u));
  add("max-queued-bytes", s.max_queued_bytes,
      "unwritten response bytes per connection before it stops being read")
      ->check(CLI::Range(std::uint64_t{64} << 10, kPiB));
  add("idle-timeout-ms", s.idle_timeout_ms, "close connections idle this long")
      ->check(CLI::Range(1000u, static_cast<std::uint32_t>(7 * kDay)));
  add("handshake-timeout-ms", s.handshake_timeout_ms, "close connections without a handshake")
      ->check(CLI::Range(100u, 3'600'000u));
  add("io-threads", s.io_threads, "network threads")->check(CLI::Range(1u, 256u));
  add("version-window-ms", s.version_window_ms,
      "how far back reads as of an LSN and the change feed reach")
      ->check(CLI::Range(std::int64_t{0}, static_cast<std::int64_t>(7 * kDay)));
  add("table-bytes-max", s.table_bytes_max, "memory budget of the tables (0: none)")
      ->check(CLI::Range(std::uint64_t{0}, kPiB));
  add("segment-bytes", s.segment_bytes,
      "size of each new log segment file (existing segments keep theirs)")
      ->check(CLI::Range(std::uint64_t{64} << 10, std::uint64_t{1} << 40));
  add("batch-bytes-max", s.batch_bytes_max,
      "most bytes one group commit writes; also bounds one transaction (at most segment-bytes "
      "- 4 KiB; unset, it is lowered to that for small segments)")
      ->check(CLI::Range(4u << 10, 1u << 30));
  add("checkpoint-every-bytes", s.checkpoint_every_bytes,
      "take a checkpoint after this much log (0: never by size)")
      ->check(CLI::Range(std::uint64_t{0}, kPiB));
  add("checkpoint-every-ms", s.checkpoint_every_ms,
      "take a checkpoint this long after the last one if anything changed (0: never by time)")
      ->check(CLI::Range(std::int64_t{0}, static_cast<std::int64_t>(30 * kDay)));
  add("group-min-session-timeout-ms", s.group_min_session_timeout_ms,
      "shortest session timeout a consumer-group member may ask for")
      ->check(CLI::Range(10u, 3'600'000u));
  add("group-max-session-timeout-ms", s.group_max_session_timeout_ms,
      "longest session timeout a consumer-group member may ask for")
      ->check(CLI::Range(10u, 3'600'000u));
  add("group-max-members", s.group_max_members, "live members per consumer group")
      ->check(CLI::Range(1u, 100'000u));
  add("max-groups", s.max_groups, "consumer groups with live members")
      ->check(CLI::Range(1u, 1'000'000u));
  add("group-max-topics", s.group_max_topics, "topics one group member may subscribe to")
      ->check(CLI::Range(1u, 100'000u));
  add("log-level", s.log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  add("metrics", s.metrics,
      "HOST:PORT of an HTTP listener for /metrics (Prometheus), /livez and /readyz; empty: "
      "none (e.g. 127.0.0.1:9464)")
      ->check(HostPortCheck("--metrics", true));
  app.add_option("--config", config_path, "TOML file of settings (keys as the flags, with _)")
      ->envname("LOCKSTEP_CONFIG");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints the help, or the error
    return code == 0 ? 0 : 2;      // --help is a success; anything else is a usage error
  }
  if (!config_path.empty()) {
    auto bound = [&](const std::string& key)
        -> std::optional<std::function<std::optional<std::string>(const toml::node&)>> {
      auto it = options.find(key);
      if (it == options.end()) return std::nullopt;
      CLI::Option* o = it->second;
      return [o](const toml::node& node) -> std::optional<std::string> {
        if (o->count() > 0) return std::nullopt;  // a flag or a variable set it: they win
        std::string text;
        if (auto v = node.value<std::string>()) {
          text = *v;
        } else if (auto b = node.value<bool>(); b && node.is_boolean()) {
          text = *b ? "true" : "false";
        } else if (auto i = node.value<std::int64_t>()) {
          text = std::to_string(*i);
        } else {
          return std::string("must be a string, a number or a boolean");
        }
        try {
          o->add_result(text);
          o->run_callback();
        } catch (const CLI::ParseError& e) {
          return std::string(e.what());
        }
        return std::nullopt;
      };
    };
    if (auto error = ApplyConfig(config_path, bound)) return Usage(*error);
  }

  auto logger = spdlog::stderr_logger_mt("lockstepd");
  spdlog::set_default_logger(logger);
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<LogfmtMessage>('*').set_pattern(
      "ts=%Y-%m-%dT%H:%M:%S.%e level=%l msg=\"%*\"");
  spdlog::set_formatter(std::move(formatter));
  const auto level = spdlog::level::from_str(s.log_level);
  spdlog::set_level(level);

  // Checked by HostPortCheck already.
  const auto listen = std::get<HostPort>(ParseHostPort("--listen", s.listen));
  lockstep::server::ServerOptions so;
  so.host = listen.host;
  so.port = listen.port;
  std::optional<HostPort> metrics;
  if (!s.metrics.empty()) {
    metrics = std::get<HostPort>(ParseHostPort("--metrics", s.metrics));
    if (!IsLoopback(metrics->host) && !s.allow_remote) {
      return Usage(fmt::format(
          "--metrics {} is not a loopback address: add --allow-remote to serve other machines",
          s.metrics));
    }
  }
  if (!IsLoopback(so.host)) {
    if (!s.allow_remote) {
      return Usage(fmt::format(
          "--listen {} is not a loopback address: add --allow-remote to serve other machines",
          s.listen));
    }
    spdlog::warn(
        "serving {} beyond this machine: Lockstep has no authentication; use it only "
        "on a trusted network",
        s.listen);
  }
  // A batch must fit in a segment with room for its header; unless asked for, the default
  // batch bound follows small segments down.
  const std::uint64_t batch_room = s.segment_bytes - (4u << 10);
  if (s.batch_bytes_max > batch_room) {
    if (options["batch_bytes_max"]->count() > 0) {
      return Usage(fmt::format("--batch-bytes-max {} must be at most --segment-bytes - 4 KiB ({})",
                               s.batch_bytes_max, batch_room));
    }
    s.batch_bytes_max = static_cast<std::uint32_t>(batch_room);
  }
  if (s.group_min_session_timeout_ms > s.group_max_session_timeout_ms) {
    return Usage(
        fmt::format("--group-min-session-timeout-ms {} is above --group-max-session-timeout-ms {}",
                    s.group_min_session_timeout_ms, s.group_max_session_timeout_ms));
  }
  so.groups.session_timeout_min = std::chrono::milliseconds(s.group_min_session_timeout_ms);
  so.groups.session_timeout_max = std::chrono::milliseconds(s.group_max_session_timeout_ms);
  so.groups.members_max = s.group_max_members;
  so.groups.groups_max = s.max_groups;
  so.groups.topics_max = s.group_max_topics;
  so.max_connections = s.max_connections;
  so.max_frame_bytes = s.max_frame_bytes;
  so.max_inflight_requests = s.max_inflight_requests;
  so.max_queued_bytes = s.max_queued_bytes;
  so.idle_timeout = std::chrono::milliseconds(s.idle_timeout_ms);
  so.handshake_timeout = std::chrono::milliseconds(s.handshake_timeout_ms);
  so.io_threads = s.io_threads;

  // SIGTERM and SIGINT are taken by sigwait below: blocked here, before any thread starts, so
  // every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  RaiseFileLimit();
  // lockstep-torture's process mode arms a named crash site through the environment.
  std::string crash_site;
  if (auto error = lockstep::base::ArmCrashSiteFromEnvironment(&crash_site)) return Usage(*error);
  if (!crash_site.empty()) spdlog::warn("crash site armed: {}", crash_site);
  // lockstep-torture --plant in process mode: only a build with planted bugs has them.
  if (const char* bug = std::getenv("LOCKSTEP_PLANTED_BUG"); bug != nullptr && *bug != '\0') {
    const auto planted = lockstep::base::ParsePlantedBug(bug);
    if (!lockstep::base::kPlantedBugsBuilt || !planted) {
      return Usage(fmt::format("LOCKSTEP_PLANTED_BUG={}: {}", bug,
                               planted ? "this build has no planted bugs" : "unknown bug"));
    }
    lockstep::base::PlantBug(*planted);
    spdlog::warn("planted bug: {}", bug);
  }

  // Before recovery, so that /livez answers and /readyz says "recovering" meanwhile.
  std::unique_ptr<lockstep::server::MetricsServer> metrics_server;
  if (metrics) {
    auto started = lockstep::server::MetricsServer::Start(metrics->host, metrics->port);
    if (!started.ok()) {
      std::fprintf(stderr, "lockstepd: %s\n", started.status().ToString().c_str());
      return 1;
    }
    metrics_server = std::move(*started);
    spdlog::info("metrics listening on {}:{}", Bracketed(metrics->host), metrics_server->port());
  }

  auto io = lockstep::storage::MakeIo();
  if (!io.ok()) {
    spdlog::error("storage: {}", io.status().ToString());
    return 1;
  }
  lockstep::engine::EngineOptions eo;
  eo.dir = s.data_dir;
  eo.io = io->get();
  eo.version_window_ms = s.version_window_ms;
  eo.table_bytes_max = s.table_bytes_max;
  eo.log.segment_bytes = s.segment_bytes;
  eo.log.batch_bytes_max = s.batch_bytes_max;
  eo.log.staging_bytes_max = std::max<std::uint64_t>(eo.log.staging_bytes_max, s.batch_bytes_max);
  eo.checkpoint.every_log_bytes = s.checkpoint_every_bytes;
  eo.checkpoint.every_ms = s.checkpoint_every_ms;
  spdlog::info("opening {}", s.data_dir);
  auto engine = lockstep::engine::Engine::Open(eo);
  if (!engine.ok() && engine.status().code() == lockstep::base::StatusCode::kInvalidArgument) {
    return Usage(engine.status().ToString());  // settings the engine refuses
  }
  if (!engine.ok()) {
    spdlog::error("cannot open the data directory {}: {}", s.data_dir, engine.status().ToString());
    std::fprintf(stderr, "lockstepd: cannot open the data directory %s: %s\n", s.data_dir.c_str(),
                 engine.status().ToString().c_str());
    return 1;
  }
  spdlog::info("recovered {}: visible LSN {}", s.data_dir, (*engine)->visible_lsn().value());
  auto server = lockstep::server::Server::Start(**engine, so);
  if (!server.ok()) {
    std::fprintf(stderr, "lockstepd: %s\n", server.status().ToString().c_str());
    return 1;
  }
  const std::string host = Bracketed((*server)->host());
  if (metrics_server) metrics_server->Attach(**engine, **server);
  std::printf("listening on %s:%u\n", host.c_str(), static_cast<unsigned>((*server)->port()));
  std::fflush(stdout);
  spdlog::info("listening on {}:{}", host, (*server)->port());

  int signal = 0;
  sigwait(&stop_signals, &signal);
  spdlog::info("{}: stopping (in-flight commits finish, parked fetches are answered)",
               signal == SIGTERM ? "SIGTERM" : "SIGINT");
  if (metrics_server) metrics_server->Detach();
  (*server)->Stop();
  server->reset();
  engine->reset();  // syncs and closes the log
  spdlog::info("stopped");
  return 0;
}
