#pragma once
// Helpers to move between strings and byte spans in tests.
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::testing {

inline std::span<const std::byte> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

inline std::string AsString(std::span<const std::byte> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

inline std::vector<std::byte> ToVector(std::string_view s) {
  auto b = AsBytes(s);
  return {b.begin(), b.end()};
}

}  // namespace lockstep::testing
