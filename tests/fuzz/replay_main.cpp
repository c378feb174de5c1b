// Corpus replay without libFuzzer: calls a fuzz target's LLVMFuzzerTestOneInput on every file
// under the directories named on the command line (recursively, in sorted order), so ordinary
// builds run the committed seeds through the target's checks. A broken invariant traps
// (__builtin_trap) and an escaping exception terminates, either of which fails the test; an empty
// or missing directory fails too, so a mistyped path cannot pass silently.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR...\n", argv[0]);
    return 2;
  }
  for (int a = 1; a < argc; ++a) {
    std::error_code ec;
    std::vector<fs::path> files;
    for (fs::recursive_directory_iterator it(argv[a], ec), end; !ec && it != end; it.increment(ec))
      if (it->is_regular_file()) files.push_back(it->path());
    if (ec || files.empty()) {
      std::fprintf(stderr, "%s: no input files in %s%s%s\n", argv[0], argv[a], ec ? ": " : "",
                   ec ? ec.message().c_str() : "");
      return 1;
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      // Exactly the file's size, so that ASan builds flag reads past the end as libFuzzer does.
      std::vector<std::uint8_t> data(static_cast<std::size_t>(fs::file_size(f)));
      std::ifstream in(f, std::ios::binary);
      in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size()));
      if (!in || in.gcount() != static_cast<std::streamsize>(data.size())) {
        std::fprintf(stderr, "%s: cannot read %s\n", argv[0], f.c_str());
        return 1;
      }
      std::fprintf(stderr, "%s (%zu bytes)\n", f.c_str(), data.size());
      LLVMFuzzerTestOneInput(data.data(), data.size());
    }
    std::printf("%s: %zu inputs replayed\n", argv[a], files.size());
  }
  return 0;
}
