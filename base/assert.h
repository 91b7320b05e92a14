#pragma once
// Assertions that stay on in release builds (STYLE.md, after TigerBeetle and Redpanda).
//
// LOCKSTEP_ASSERT(cond) checks an invariant; when it does not hold the process prints file,
// line and expression to stderr and aborts. A broken invariant is a bug, never a user error:
// bad input is answered with a Status instead. LOCKSTEP_DEBUG_ASSERT is for O(n) checks and is
// compiled only when NDEBUG is not defined. Never put side effects inside either.

namespace lockstep::base {
[[noreturn]] void AssertFail(const char* file, int line, const char* expression,
                             const char* message);
}  // namespace lockstep::base

#define LOCKSTEP_ASSERT(cond)                                           \
  do {                                                                  \
    if (!(cond)) [[unlikely]] {                                         \
      ::lockstep::base::AssertFail(__FILE__, __LINE__, #cond, nullptr); \
    }                                                                   \
  } while (false)

#define LOCKSTEP_ASSERT_MSG(cond, msg)                              \
  do {                                                              \
    if (!(cond)) [[unlikely]] {                                     \
      ::lockstep::base::AssertFail(__FILE__, __LINE__, #cond, msg); \
    }                                                               \
  } while (false)

#ifdef NDEBUG
#define LOCKSTEP_DEBUG_ASSERT(cond) \
  do {                              \
  } while (false && (cond))
#else
#define LOCKSTEP_DEBUG_ASSERT(cond) LOCKSTEP_ASSERT(cond)
#endif
