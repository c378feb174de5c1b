#include "encore/version.h"

namespace encore {
const char* version() noexcept { return ENCORE_VERSION_STRING; }
}  // namespace encore
