// The malformed corpus: every case must raise encore::Error with the expected code and message,
// from memory, from a mapped file and from the committed copy under tests/data/.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <functional>
#include <set>

#include "corpus.h"
#include "encore/io/safetensors.h"

namespace encore::test {
namespace {

namespace fs = std::filesystem;
const fs::path kDataDir = ENCORE_TEST_DATA_DIR;

// Runs `f` and checks that it throws Error with `code` and a message containing `expect`.
void expect_error(const std::function<void()>& f, ErrorCode code, const std::string& expect) {
  try {
    f();
    ADD_FAILURE() << "no error thrown; expected " << error_code_name(code) << " containing: " << expect;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(expect), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << expect;
  }
}

std::string case_name(const ::testing::TestParamInfo<MalformedCase>& info) { return info.param.name; }

class Malformed : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(Malformed, FromBytesThrows) {
  const MalformedCase& c = GetParam();
  const std::string source = c.name + ".safetensors";
  expect_error([&] { io::SafetensorsFile::from_bytes(c.bytes, source); }, c.code, c.expect);
  try {
    io::SafetensorsFile::from_bytes(c.bytes, source);
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(source + ": ", 0), 0u) << "message must start with the source: " << e.what();
  }
}

TEST_P(Malformed, FromBufferThrowsWithoutCopy) {
  const MalformedCase& c = GetParam();
  expect_error([&] { io::SafetensorsFile::from_buffer(c.bytes); }, c.code, c.expect);
}

TEST_P(Malformed, OpenFileThrows) {
  const MalformedCase& c = GetParam();
  TempDir dir;
  const fs::path path = dir / (c.name + ".safetensors");
  write_file(path, c.bytes);
  expect_error([&] { io::SafetensorsFile::open(path); }, c.code, c.expect);
}

// The committed copies seed the fuzzer; they must stay identical to the table.
TEST_P(Malformed, CommittedCopyMatches) {
  const MalformedCase& c = GetParam();
  const fs::path path = kDataDir / "safetensors_malformed" / (c.name + ".safetensors");
  ASSERT_TRUE(fs::exists(path)) << path << " is missing: regenerate the corpus (tests/data/safetensors_malformed/README.md)";
  EXPECT_EQ(read_file(path), c.bytes) << path << " differs from the table in tests/io/corpus.cpp";
  expect_error([&] { io::SafetensorsFile::open(path); }, c.code, c.expect);
}

INSTANTIATE_TEST_SUITE_P(Corpus, Malformed, ::testing::ValuesIn(malformed_cases()), case_name);

TEST(MalformedCorpus, HasManyDistinctCases) {
  std::set<std::string> names, images;
  for (const auto& c : malformed_cases()) {
    EXPECT_TRUE(names.insert(c.name).second) << "duplicate case name " << c.name;
    EXPECT_TRUE(images.insert(std::string(reinterpret_cast<const char*>(c.bytes.data()), c.bytes.size())).second)
        << "case " << c.name << " repeats another case's bytes";
  }
  EXPECT_GE(names.size(), 20u);
}

TEST(ValidCorpus, ParsesAndCommittedCopiesMatch) {
  for (const auto& c : valid_cases()) {
    SCOPED_TRACE(c.name);
    const auto file = io::SafetensorsFile::from_bytes(c.bytes, c.name);
    for (const auto& e : file.entries()) EXPECT_EQ(file.tensor(e.name).nbytes(), e.end - e.begin);
    const fs::path path = kDataDir / "safetensors" / (c.name + ".safetensors");
    ASSERT_TRUE(fs::exists(path)) << path << " is missing: regenerate the corpus";
    EXPECT_EQ(read_file(path), c.bytes);
  }
}

TEST(Malformed, DeepNestingAtTheHeaderCapDoesNotRecurse) {
  std::string header = R"({"w":)";
  header.resize(20'000'000, '[');
  expect_error([&] { io::SafetensorsFile::from_bytes(image(header, 0)); }, ErrorCode::bad_model_file,
               "nests deeper than 3 levels in 'w'");
}

// A tensor with no elements but huge other dimensions: its byte size is 0, but the strides a view
// of it needs (2^64 elements) do not fit in 64 bits (undefined behaviour before, in the strides).
TEST(Malformed, ZeroSizeTensorWithOverflowingStridesIsRefused) {
  const std::string header = R"({"t":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})";
  expect_error([&] { io::SafetensorsFile::from_bytes(image(header, 0)); }, ErrorCode::bad_model_file,
               "tensor 't' has shape [0, 4294967296, 4294967296] whose element count overflows 64 bits (with zero");
  // Zero-size tensors whose strides fit stay valid.
  const auto ok = io::SafetensorsFile::from_bytes(
      image(R"({"t":{"dtype":"F32","shape":[0,65536,65536],"data_offsets":[0,0]}})", 0));
  EXPECT_EQ(ok.tensor("t").numel(), 0);
}

// A FIFO named like a model file is refused without blocking (the open used to wait for a writer).
TEST(Malformed, FifoIsRefusedWithoutBlocking) {
  TempDir dir;
  ASSERT_EQ(::mkfifo((dir / "model.safetensors").c_str(), 0600), 0);
  expect_error([&] { io::SafetensorsFile::open(dir / "model.safetensors"); }, ErrorCode::io,
               "is not a regular file");
}

TEST(Malformed, OpenErrorsAreIo) {
  TempDir dir;
  expect_error([&] { io::SafetensorsFile::open(dir / "missing.safetensors"); }, ErrorCode::io,
               "missing.safetensors: cannot open the file: No such file or directory");
  expect_error([&] { io::SafetensorsFile::open(dir.path()); }, ErrorCode::io, "is a directory");
}

// ENCORE_WRITE_CORPUS=DIR writes the corpus as files: DIR/malformed, DIR/valid, DIR/index/<case>/.
TEST(MalformedCorpus, DumpWhenAsked) {
  const char* out = std::getenv("ENCORE_WRITE_CORPUS");
  if (out == nullptr || *out == '\0') GTEST_SKIP() << "set ENCORE_WRITE_CORPUS=DIR to write the corpus files";
  const fs::path root = out;
  fs::create_directories(root / "malformed");
  fs::create_directories(root / "valid");
  for (const auto& c : malformed_cases()) write_file(root / "malformed" / (c.name + ".safetensors"), c.bytes);
  for (const auto& c : valid_cases()) write_file(root / "valid" / (c.name + ".safetensors"), c.bytes);
  for (const auto& c : index_cases()) {
    fs::create_directories(root / "index" / c.name);
    for (const auto& [name, bytes] : c.files) write_file(root / "index" / c.name / name, bytes);
  }
}

}  // namespace
}  // namespace encore::test
