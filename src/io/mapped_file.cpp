#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>

#include "core/check.h"

namespace encore::io::detail {
namespace {

[[noreturn]] void fail_errno(const std::filesystem::path& path, const char* what, int err) {
  encore::detail::fail(ErrorCode::io, "{}: cannot {}: {}", path.string(), what, std::strerror(err));
}

// Closes the descriptor on every path out of open(); the mapping does not need it.
struct FdCloser {
  int fd;
  ~FdCloser() { ::close(fd); }
};

std::size_t regular_file_size(const std::filesystem::path& path, int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail_errno(path, "stat the file", errno);
  if (S_ISDIR(st.st_mode))
    encore::detail::fail(ErrorCode::io, "{}: is a directory, expected a regular file", path.string());
  if (!S_ISREG(st.st_mode))
    encore::detail::fail(ErrorCode::io, "{}: is not a regular file (file type {:o})", path.string(),
                         st.st_mode & S_IFMT);
  if (st.st_size < 0 || static_cast<std::uintmax_t>(st.st_size) > std::numeric_limits<std::size_t>::max())
    encore::detail::fail(ErrorCode::io, "{}: size {} cannot be mapped", path.string(), st.st_size);
  return static_cast<std::size_t>(st.st_size);
}

}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::filesystem::path& path) {
  // O_NONBLOCK: a FIFO (or device) named like a model would block the open itself; the checks
  // below refuse anything but a regular file, for which the flag changes nothing.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail_errno(path, "open the file", errno);
  FdCloser closer{fd};
  const std::size_t size = regular_file_size(path, fd);
  if (size == 0) return std::shared_ptr<MappedFile>(new MappedFile(nullptr, 0));  // mmap rejects length 0
  // MAP_NORESERVE: written pages are rare, so don't charge the whole file to the commit limit.
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
  if (p == MAP_FAILED) fail_errno(path, "map the file", errno);
  auto* mapped = new (std::nothrow) MappedFile(static_cast<std::byte*>(p), size);
  if (mapped == nullptr) {
    ::munmap(p, size);
    throw std::bad_alloc();
  }
  return std::shared_ptr<MappedFile>(mapped);  // deletes (unmaps) it if the control block fails
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

}  // namespace encore::io::detail
