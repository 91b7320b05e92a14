#pragma once
// Fixed-width little-endian integers for on-disk and wire formats (STYLE.md): formats are
// defined byte by byte, never by memcpy of a struct. These compile to plain loads and stores
// on little-endian hosts.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace lockstep::base {

static_assert(std::endian::native == std::endian::little,
              "Lockstep's formats are little-endian; a big-endian port must byte-swap here");

template <typename T>
inline T LoadLe(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
inline void StoreLe(std::byte* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

inline std::uint16_t LoadLe16(const std::byte* p) { return LoadLe<std::uint16_t>(p); }
inline std::uint32_t LoadLe32(const std::byte* p) { return LoadLe<std::uint32_t>(p); }
inline std::uint64_t LoadLe64(const std::byte* p) { return LoadLe<std::uint64_t>(p); }
inline void StoreLe16(std::byte* p, std::uint16_t v) { StoreLe(p, v); }
inline void StoreLe32(std::byte* p, std::uint32_t v) { StoreLe(p, v); }
inline void StoreLe64(std::byte* p, std::uint64_t v) { StoreLe(p, v); }

}  // namespace lockstep::base
