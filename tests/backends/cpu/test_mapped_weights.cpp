// Weights read from a file mapping leave the process's resident set once the CPU backend has
// packed them (Storage::release_pages via PackedWeights), and read back unchanged afterwards.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "backends/cpu/packed_weights.h"
#include "encore/io/safetensors.h"
#include "reference/ref_gemm.h"
#include "reference/ref_tensor.h"

namespace encore {
namespace {

namespace fs = std::filesystem;

/// The process's resident file-backed memory in KiB (Linux /proc/self/status), or -1.
std::int64_t rss_file_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("RssFile:", 0) == 0) return std::stoll(line.substr(8));
  return -1;
}

/// A directory on a disk-backed file system: tmpfs pages are shared memory (RssShmem, and without
/// swap they cannot be paged out), so the resident-set checks need a real file. Empty if none.
fs::path disk_directory() {
  for (const fs::path& dir : {fs::temp_directory_path(), fs::current_path()}) {
    struct statfs st {};
    if (::statfs(dir.c_str(), &st) == 0 && st.f_type != TMPFS_MAGIC) return dir;
  }
  return {};
}

/// A safetensors file holding `tensors` in `dir`, written through to the disk (pages under
/// writeback are not paged out), removed on destruction.
class TempModel {
 public:
  TempModel(const fs::path& dir, const std::vector<io::NamedTensor>& tensors) {
    static std::atomic<int> counter{0};
    path_ = dir / ("encore-mapped-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".safetensors");
    io::save_safetensors(path_, tensors);
    const int fd = ::open(path_.c_str(), O_RDONLY);
    if (fd >= 0) ::fsync(fd), ::close(fd);
  }
  ~TempModel() {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

/// Reads one float per page so that every page of `t` is resident.
float touch(const Tensor& t) {
  const auto* p = t.data_ptr<float>();
  const std::int64_t step = static_cast<std::int64_t>(::sysconf(_SC_PAGESIZE)) / 4;
  volatile float sum = 0.0f;
  for (std::int64_t i = 0; i < t.numel(); i += step) sum = sum + p[i];
  return sum;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

/// Whether this system pages out a file mapping at all, probed with plain mmap + madvise (not
/// encore's code, so a bug there cannot turn the checks below into skips). MADV_PAGEOUT needs
/// Linux 5.4, and write access to the file.
bool system_pages_out(const fs::path& dir) {
  const fs::path path = dir / ("encore-pageout-probe-" + std::to_string(::getpid()));
  std::vector<char> bytes(std::size_t{4} << 20, 1);
  {
    std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  bool ok = false;
  const int fd = ::open(path.c_str(), O_RDWR);
  if (fd >= 0) {
    ::fsync(fd);
    void* m = ::mmap(nullptr, bytes.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (m != MAP_FAILED) {
      volatile char sum = 0;
      for (std::size_t i = 0; i < bytes.size(); i += 4096) sum = sum + static_cast<const char*>(m)[i];
      const std::int64_t before = rss_file_kib();
      ok = ::madvise(m, bytes.size(), 21 /* MADV_PAGEOUT */) == 0 && rss_file_kib() <= before - 2048;
      ::munmap(m, bytes.size());
    }
    ::close(fd);
  }
  std::error_code ec;
  fs::remove(path, ec);
  return ok;
}

/// The directory to test in, or a reason to skip.
struct Setting {
  fs::path dir;
  std::string skip;
};
Setting setting() {
  Setting s;
  s.dir = disk_directory();
  if (s.dir.empty())
    s.skip = "the temp and current directories are both on tmpfs: no file pages to release";
  else if (!system_pages_out(s.dir))
    s.skip = "this system does not page out file mappings (MADV_PAGEOUT needs Linux 5.4 and write access)";
  return s;
}

TEST(MappedWeights, ReleasedPagesKeepTheirContentIncludingWrittenOnes) {
  const Setting where = setting();
  if (!where.skip.empty()) GTEST_SKIP() << where.skip;
  std::mt19937 rng(7);
  const Tensor w = ref::random_tensor({1024, 1024}, DType::F32, rng);  // 4 MiB
  TempModel model(where.dir, {{"w", w}});
  const io::SafetensorsFile file = io::SafetensorsFile::open(model.path());
  Tensor t = file.tensor("w");
  ASSERT_TRUE(t.storage()->is_file_mapping());
  // A page written to is a private copy (the mapping is copy-on-write): it must survive the release.
  t.data_ptr<float>()[5000] = 123.0f;
  Tensor want = w.clone();
  want.data_ptr<float>()[5000] = 123.0f;
  touch(t);

  const std::int64_t before = rss_file_kib();
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t advised = t.storage()->release_pages(t.data(), t.nbytes());
  EXPECT_LE(advised, t.nbytes());
  EXPECT_GE(advised + 2 * page, t.nbytes()) << "only the partial pages at the ends may be left out";
  const std::int64_t after = rss_file_kib();
  EXPECT_LE(after, before - 3 * 1024) << "RssFile went from " << before << " to " << after << " KiB";
  EXPECT_TRUE(same_bytes(t, want)) << "content changed after the pages were released";
}

TEST(MappedWeights, ReleaseIsANoOpOutsideAFileMapping) {
  std::mt19937 rng(8);
  const Tensor w = ref::random_tensor({256, 256}, DType::F32, rng);
  TempModel model(fs::temp_directory_path(), {{"w", w}});
  const io::SafetensorsFile file = io::SafetensorsFile::open(model.path());
  const Tensor t = file.tensor("w");
  const Storage& s = *t.storage();
  const auto* end = static_cast<const std::byte*>(s.data()) + s.bytes();
  EXPECT_EQ(s.release_pages(end, 4096), 0u) << "a range past the mapping";
  EXPECT_EQ(s.release_pages(static_cast<const std::byte*>(s.data()) - 4096, 8192), 0u) << "a range before it";
  EXPECT_EQ(s.release_pages(t.data(), 0), 0u);
  EXPECT_EQ(s.release_pages(t.data(), 100), 0u) << "no whole page inside 100 bytes";
  // Owned memory and in-memory safetensors images are never advised.
  EXPECT_FALSE(w.storage()->is_file_mapping());
  EXPECT_EQ(w.storage()->release_pages(w.data(), w.nbytes()), 0u);
  const io::SafetensorsFile in_memory = io::SafetensorsFile::from_bytes(io::serialize_safetensors(std::vector<io::NamedTensor>{{"w", w}}));
  const Tensor m = in_memory.tensor("w");
  EXPECT_FALSE(m.storage()->is_file_mapping());
  EXPECT_EQ(m.storage()->release_pages(m.data(), m.nbytes()), 0u);
  EXPECT_TRUE(same_bytes(t, w));
}

// Both packings of the CPU linear (the few-rows kernel's layout at M = 1, oneDNN's blocked layout
// at M = 64) give the mapped weight's pages back, and the results stay those of the weight.
TEST(MappedWeights, PackedLinearWeightLeavesTheResidentSet) {
  const Setting where = setting();
  if (!where.skip.empty()) GTEST_SKIP() << where.skip;
  if (const char* keep = std::getenv("ENCORE_KEEP_MAPPED_WEIGHTS"); keep != nullptr && keep[0] != '\0' && keep[0] != '0')
    GTEST_SKIP() << "ENCORE_KEEP_MAPPED_WEIGHTS is set: packed weights keep their pages by request";
  constexpr std::int64_t K = 1024, N = 2048;  // 8 MiB of f32
  std::mt19937 rng(9);
  const Tensor w = ref::random_tensor({N, K}, DType::F32, rng);
  const LinearAttrs attrs{.layout = WeightLayout::out_in};
  // Warm-up on an owned copy: loads oneDNN's code pages (file-backed too) before measuring.
  for (std::int64_t M : {1, 64})
    cpu::linear(ref::random_tensor({M, K}, DType::F32, rng), w.clone(), Tensor(), attrs,
                Tensor::empty({M, N}, DType::F32), cpu::CpuContext{2});

  // One mapped copy of the weight per row count: M = 1 usually packs for the few-rows kernel and
  // M = 64 for oneDNN, but either may take oneDNN (no AVX-512, ENCORE_CPU_LINEAR_ROWS_MAX=0), and
  // then a shared weight would be packed only once.
  TempModel model(where.dir, {{"w1", w}, {"w64", w}});
  const io::SafetensorsFile file = io::SafetensorsFile::open(model.path());
  for (std::int64_t M : {1, 64}) {
    SCOPED_TRACE("M = " + std::to_string(M));
    const Tensor t = file.tensor("w" + std::to_string(M));
    const Tensor x = ref::random_tensor({M, K}, DType::F32, rng);
    const Tensor y = Tensor::empty({M, N}, DType::F32);
    touch(t);
    const std::size_t packs = cpu::PackedWeights::instance().packs();
    const std::int64_t before = rss_file_kib();
    cpu::linear(x, t, Tensor(), attrs, y, cpu::CpuContext{2});
    const std::int64_t after = rss_file_kib();
    EXPECT_EQ(cpu::PackedWeights::instance().packs(), packs + 1);
    EXPECT_LE(after, before - 6 * 1024) << "RssFile went from " << before << " to " << after << " KiB";
    const ref::RefTensor want = ref::linear(ref::from_tensor(x), ref::from_tensor(w), nullptr, attrs.layout,
                                            attrs.activation);
    EXPECT_LE(ref::relative_error(ref::from_tensor(y), want), 1e-5);
    EXPECT_TRUE(same_bytes(t, w)) << "the mapped weight reads back unchanged";
  }
}

}  // namespace
}  // namespace encore
