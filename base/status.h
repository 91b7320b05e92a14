#pragma once
// Status and Result<T>: how every fallible operation in Lockstep reports failure.
//
// Errors are values (STYLE.md). A StatusCode tells the caller what to do next; the same codes
// travel on the wire so that clients make the same decisions as embedded users:
//
//   code                 caller should
//   kInvalidArgument     not retry: the request itself is wrong
//   kNotFound            not retry: the named thing does not exist
//   kAlreadyExists       not retry: the named thing exists already
//   kFailedPrecondition  not retry until the system's state changes (e.g. a held lock)
//   kOutOfRange          not retry: the position is outside what exists (offset, LSN)
//   kConflict            retry the whole transaction (optimistic concurrency)
//   kResourceExhausted   back off, then retry (a queue or a budget is full, a disk is full)
//   kUnavailable         retry the call (transient)
//   kDeadlineExceeded    retry if the outcome does not matter or is idempotent
//   kIoError             stop: storage failed and the log is stopped; restart recovers
//   kDataLoss            stop: durable data is damaged; an operator must look
//   kInternal            stop: a bug
//
// An ok Status holds no allocation; an error holds its message on the heap (error path only).
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "base/assert.h"

namespace lockstep::base {

enum class StatusCode : unsigned char {
  kOk = 0,
  kInvalidArgument,
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition,
  kOutOfRange,
  kConflict,
  kResourceExhausted,
  kUnavailable,
  kDeadlineExceeded,
  kIoError,
  kDataLoss,
  kInternal,
};

// Stable lower-case name of a code ("invalid_argument"), used in logs and on the wire.
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  Status(StatusCode code, std::string message);

  static Status Ok() { return Status(); }

  bool ok() const { return rep_ == nullptr; }
  StatusCode code() const { return rep_ ? rep_->code : StatusCode::kOk; }
  // Empty for an ok status.
  std::string_view message() const { return rep_ ? std::string_view(rep_->message) : ""; }
  // "io_error: write of 00000001.seg failed: Input/output error", or "ok".
  std::string ToString() const;

  // Returns a copy whose message is prefixed with `context`: "context: message".
  Status WithContext(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code() == b.code() && a.message() == b.message();
  }

 private:
  struct Rep {
    StatusCode code;
    std::string message;
  };
  // Shared so that copying a status (e.g. failing every waiter with the same error) is cheap.
  std::shared_ptr<const Rep> rep_;
};

Status InvalidArgument(std::string message);
Status NotFound(std::string message);
Status AlreadyExists(std::string message);
Status FailedPrecondition(std::string message);
Status OutOfRange(std::string message);
Status Conflict(std::string message);
Status ResourceExhausted(std::string message);
Status Unavailable(std::string message);
Status DeadlineExceeded(std::string message);
Status IoError(std::string message);
Status DataLoss(std::string message);
Status Internal(std::string message);

// Result<T>: a T, or the Status saying why there is none. Never holds an ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    LOCKSTEP_ASSERT(!std::get<Status>(v_).ok());
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  // The error; an ok Status when a value is held.
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }

  // REQUIRES: ok().
  T& value() & {
    LOCKSTEP_ASSERT(ok());
    return std::get<T>(v_);
  }
  const T& value() const& {
    LOCKSTEP_ASSERT(ok());
    return std::get<T>(v_);
  }
  // By value, so that `for (auto& x : *MakeVector())` does not dangle.
  T value() && {
    LOCKSTEP_ASSERT(ok());
    return std::get<T>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace lockstep::base

#define LOCKSTEP_CONCAT_INNER(a, b) a##b
#define LOCKSTEP_CONCAT(a, b) LOCKSTEP_CONCAT_INNER(a, b)

// Evaluates `expr` (a Status); returns it from the enclosing function when it is an error.
#define LOCKSTEP_RETURN_IF_ERROR(expr)                   \
  do {                                                   \
    ::lockstep::base::Status lockstep_status_ = (expr);  \
    if (!lockstep_status_.ok()) return lockstep_status_; \
  } while (false)

// `LOCKSTEP_ASSIGN_OR_RETURN(auto x, MakeX());` — unwraps a Result or returns its error.
#define LOCKSTEP_ASSIGN_OR_RETURN(lhs, expr) \
  LOCKSTEP_ASSIGN_OR_RETURN_IMPL(LOCKSTEP_CONCAT(lockstep_result_, __LINE__), lhs, expr)
#define LOCKSTEP_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return tmp.status();                  \
  lhs = std::move(tmp).value()
