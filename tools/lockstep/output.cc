#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <boost/archive/iterators/base64_from_binary.hpp>
#include <boost/archive/iterators/transform_width.hpp>
#include <cctype>

#include "base/clock.h"
#include "tools/lockstep/cli.h"

namespace lockstep::cli {

Result<std::unique_ptr<client::Client>> Context::Connect() const {
  client::ClientOptions o;
  o.broker = broker;
  o.client_name = "lockstep-cli";
  o.retry_deadline = std::chrono::milliseconds(static_cast<std::int64_t>(timeout_s * 1000));
  o.connect_timeout = std::min(o.connect_timeout, o.retry_deadline);
  return client::Client::Connect(o);
}

int Fail(const Status& status) {
  std::fflush(stdout);
  std::fprintf(stderr, "lockstep: %s\n", status.ToString().c_str());
  return kExitFailure;
}

int UsageError(const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "lockstep: %s (see --help)\n", message.c_str());
  return kExitUsage;
}

void PrintJson(const nlohmann::ordered_json& object) {
  const std::string line = object.dump();
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

namespace {

std::string Base64(const std::string& bytes) {
  using namespace boost::archive::iterators;
  using Encoder = base64_from_binary<transform_width<std::string::const_iterator, 6, 8>>;
  std::string out(Encoder(bytes.begin()), Encoder(bytes.end()));
  out.append((3 - bytes.size() % 3) % 3, '=');
  return out;
}

bool IsUtf8(const std::string& bytes) {
  // The JSON library checks UTF-8 when it serializes; strict mode throws on anything else.
  try {
    (void)nlohmann::json(bytes).dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

}  // namespace

void PutBytes(nlohmann::ordered_json& object, const std::string& name, const std::string& bytes) {
  if (IsUtf8(bytes)) {
    object[name] = bytes;
  } else {
    object[name] = Base64(bytes);
    object[name + "_encoding"] = "base64";
  }
}

void TextTable::Print() const {
  std::vector<std::size_t> width;
  for (const auto& row : rows_) {
    width.resize(std::max(width.size(), row.size()), 0);
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows_) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(width[i] - row[i].size() + 2, ' ');
    }
    std::puts(line.c_str());
  }
  std::fflush(stdout);
}

std::string Printable(const std::string& bytes) {
  std::string out;
  for (char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isprint(c) && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out;
}

ProgressLine::ProgressLine(std::string what, bool quiet_stdout)
    : what_(std::move(what)),
      terminal_(::isatty(STDERR_FILENO) == 1 && (quiet_stdout || ::isatty(STDOUT_FILENO) == 0)) {}

void ProgressLine::Update(const std::function<std::string()>& text) {
  if (!terminal_) return;
  const std::int64_t now = base::MonotonicNs();
  if (now < next_ns_) return;
  next_ns_ = now + 200'000'000;
  std::fprintf(stderr, "\r\033[K%s: %s", what_.c_str(), text().c_str());
  std::fflush(stderr);
  shown_ = true;
}

void ProgressLine::Done() {
  if (!shown_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  shown_ = false;
}

}  // namespace lockstep::cli
