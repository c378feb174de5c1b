// encore — errors.
//
// Every failure that a caller can cause (a bad file, a wrong shape, an unknown dtype or device, a
// missing tensor) is reported as an encore::Error carrying an ErrorCode and a message that names
// the offending value and what was expected. The library never aborts on user data.
#pragma once

#include <stdexcept>
#include <string>

namespace encore {

/// What kind of failure an Error reports; stable across releases.
enum class ErrorCode {
  invalid_argument,  ///< An argument, shape, dtype, device or option the caller passed is not valid.
  bad_model_file,    ///< A model or weights file is malformed, truncated or inconsistent.
  unsupported,       ///< Valid, but not supported by this build, backend or model.
  out_of_memory,     ///< An allocation (host or device) failed.
  backend,           ///< A backend library (oneDNN, CUDA, cuBLAS) reported a failure.
  cancelled,         ///< The caller asked to stop (a cancellation flag or callback).
  io,                ///< A file could not be opened or read (missing, permissions).
};

/// The stable lower-case name of a code, e.g. "bad_model_file".
const char* error_code_name(ErrorCode code) noexcept;

/// The exception type thrown by every encore API.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message);

  /// The category of the failure.
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace encore
