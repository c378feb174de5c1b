// libFuzzer target: the GPT-2 tokenizer loaders on hostile files. Input layout: when the first
// byte is 't', the rest is tokenizer.json (loaded with from_directory); otherwise the rest is
// vocab.json, a 0x00 byte, then merges.txt (loaded with from_files; without a 0x00, merges.txt is
// empty). The files go to a per-process directory, in /dev/shm when there is one.
// Malformed files must end in encore::Error(bad_model_file), or Error(unsupported) for a
// tokenizer.json asking for what is not implemented (a normalizer, another model or
// pre-tokenizer); anything else is a bug. A tokenizer that loads must encode a fixed text into
// ids in range that decode again.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "encore/core/error.h"
#include "encore/io/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using encore::ErrorCode;
using encore::io::Gpt2Tokenizer;

// An invariant broke: stop here so libFuzzer saves the input.
void require(bool ok) {
  if (!ok) __builtin_trap();
}

// The scratch directory, removed when the process exits normally.
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::error_code ec;
    const fs::path base = fs::is_directory("/dev/shm", ec) ? fs::path("/dev/shm") : fs::temp_directory_path();
    path = base / ("encore_fuzz_tokenizer_" + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

const fs::path& scratch() {
  static const ScratchDir dir;
  return dir.path;
}

void write_file(const fs::path& p, std::string_view content) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  out.close();
  require(static_cast<bool>(out));  // a failed write (full /dev/shm) must not pass for a rejected file
}

// Letters, digits, spaces, a contraction, a special token, non-ASCII and invalid UTF-8.
constexpr std::string_view kText = "Hello world, it's 2026!\n\t<|endoftext|> caf\xC3\xA9 \xF0\x9F\x98\x80 \xFF\xC3";

void use(const Gpt2Tokenizer& t) {
  require(t.vocab_size() >= 256);  // at least the byte alphabet
  for (const bool special : {false, true}) {
    const std::vector<std::int32_t> ids = t.encode(kText, special);
    for (const std::int32_t id : ids) require(id >= 0 && id < t.vocab_size());
    require(t.tokenize(kText, special).size() == ids.size());
    (void)t.decode(ids);  // ids in range: must not throw
    (void)t.decode_bytes(ids, true);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const fs::path& dir = scratch();
  const bool tokenizer_json = !input.empty() && input[0] == 't';
  const std::string_view rest = input.empty() ? input : input.substr(1);
  std::optional<Gpt2Tokenizer> tokenizer;
  try {
    if (tokenizer_json) {
      write_file(dir / "tokenizer.json", rest);
      tokenizer.emplace(Gpt2Tokenizer::from_directory(dir));
    } else {
      const std::size_t nul = rest.find('\0');
      write_file(dir / "vocab.json", rest.substr(0, nul));
      write_file(dir / "merges.txt", nul == std::string_view::npos ? std::string_view() : rest.substr(nul + 1));
      tokenizer.emplace(Gpt2Tokenizer::from_files(dir / "vocab.json", dir / "merges.txt"));
    }
  } catch (const encore::Error& e) {
    require(e.code() == ErrorCode::bad_model_file || (tokenizer_json && e.code() == ErrorCode::unsupported));
  }
  if (tokenizer) use(*tokenizer);  // outside the try: nothing may throw here
  return 0;
}
