// Named crash sites: see crash_site.h.
#include "base/crash_site.h"

#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>

namespace lockstep::base {
namespace crash_internal {

std::atomic<bool> armed{false};

namespace {
std::string armed_site;  // written once, before `armed` turns true
std::atomic<std::uint64_t> passes_left{0};
}  // namespace

void Pass(std::string_view site) {
  if (site != armed_site) return;
  if (passes_left.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    ::kill(::getpid(), SIGKILL);
    ::pause();  // SIGKILL is not delivered later than this; never returns
  }
}

}  // namespace crash_internal

std::optional<std::string> ArmCrashSiteFromEnvironment(std::string* armed_site) {
  armed_site->clear();
  const char* value = std::getenv("LOCKSTEP_CRASH_AT");
  if (value == nullptr || *value == '\0') return std::nullopt;
  const std::string_view text(value);
  const auto colon = text.rfind(':');
  const std::string_view site = text.substr(0, colon);
  std::uint64_t count = 1;
  if (colon != std::string_view::npos) {
    const std::string_view n = text.substr(colon + 1);
    auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), count);
    if (ec != std::errc() || end != n.data() + n.size() || count == 0) {
      return "LOCKSTEP_CRASH_AT=" + std::string(text) +
             ": the count after ':' must be a positive number";
    }
  }
  bool known = false;
  for (std::string_view s : kCrashSites) known = known || s == site;
  if (!known) {
    std::string list;
    for (std::string_view s : kCrashSites) list += (list.empty() ? "" : ", ") + std::string(s);
    return "LOCKSTEP_CRASH_AT=" + std::string(text) + ": unknown crash site (one of: " + list + ")";
  }
  crash_internal::armed_site = std::string(site);
  crash_internal::passes_left.store(count);
  crash_internal::armed.store(true);
  *armed_site = std::string(site);
  return std::nullopt;
}

}  // namespace lockstep::base
