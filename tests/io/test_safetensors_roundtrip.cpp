// Writing and reading back safetensors: every dtype, odd layouts, metadata, zero-copy views and
// copy-on-write isolation from the file.
#include <gtest/gtest.h>

#include <cstring>

#include "corpus.h"
#include "encore/io/safetensors.h"

namespace encore::test {
namespace {

namespace fs = std::filesystem;
using io::NamedTensor;
using io::SafetensorsFile;

std::vector<NamedTensor> every_dtype() {
  return {
      {"f32", Tensor::from_vector<float>({1.5f, -2.f, 3.25f, 0.f, 5.f, -6.5f}, {2, 3})},
      {"f16", Tensor::from_vector<Half>({float_to_half(1.f), float_to_half(-0.5f), float_to_half(2.f)}, {3})},
      {"bf16", Tensor::from_vector<BFloat16>({float_to_bfloat16(3.f), float_to_bfloat16(-1.f)}, {2, 1})},
      {"i8", Tensor::from_vector<std::int8_t>({-128, 0, 127}, {3})},
      {"u8", Tensor::from_vector<std::uint8_t>({0, 1, 255}, {1, 3})},
      {"i32", Tensor::from_vector<std::int32_t>({7, -7, 1 << 30}, {3})},
      {"i64", Tensor::from_vector<std::int64_t>({-1, 1LL << 40}, {2})},
      {"bool", Tensor::from_vector<bool>({true, false, true, true}, {2, 2})},
  };
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return ca.dtype() == cb.dtype() && ca.shape() == cb.shape() && ca.nbytes() == cb.nbytes() &&
         (ca.nbytes() == 0 || std::memcmp(ca.data(), cb.data(), ca.nbytes()) == 0);
}

void expect_round_trip(const SafetensorsFile& file, const std::vector<NamedTensor>& tensors) {
  ASSERT_EQ(file.entries().size(), tensors.size());
  for (const auto& t : tensors) {
    SCOPED_TRACE(t.name);
    ASSERT_TRUE(file.contains(t.name));
    const Tensor back = file.tensor(t.name);
    EXPECT_TRUE(same_bytes(back, t.tensor));
    EXPECT_TRUE(back.numel() == 0 || back.is_contiguous());  // core reports [4, 0] as not contiguous
  }
}

std::uint64_t header_length(const Bytes& bytes) {
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= std::to_integer<std::uint64_t>(bytes[static_cast<std::size_t>(i)]) << (8 * i);
  return n;
}

TEST(SafetensorsRoundTrip, EveryDtypeInMemory) {
  const auto tensors = every_dtype();
  const auto file = SafetensorsFile::from_bytes(io::serialize_safetensors(tensors), "mem");
  expect_round_trip(file, tensors);
  EXPECT_EQ(file.source(), "mem");
  EXPECT_TRUE(file.metadata().empty());
}

TEST(SafetensorsRoundTrip, DataIsLaidOutByElementSizeAndTilesTheSection) {
  const auto tensors = every_dtype();
  const auto file = SafetensorsFile::from_bytes(io::serialize_safetensors(tensors));
  const std::vector<std::string> layout = {"i64", "f32", "i32", "f16", "bf16", "i8", "u8", "bool"};
  ASSERT_EQ(file.entries().size(), layout.size());
  std::uint64_t expected = 0;
  for (std::size_t i = 0; i < layout.size(); ++i) {
    const auto& e = file.entries()[i];  // entries() is in offset order
    EXPECT_EQ(e.name, layout[i]);
    EXPECT_EQ(e.begin, expected);
    EXPECT_EQ(e.begin % dtype_size(e.dtype), 0u) << e.name << " is not aligned";
    expected = e.end;
  }
  EXPECT_EQ(file.data_bytes(), expected);
  for (const auto& t : tensors) {
    EXPECT_EQ(file.find(t.name)->dtype, t.tensor.dtype());
    EXPECT_EQ(file.find(t.name)->shape, t.tensor.shape());
  }
}

TEST(SafetensorsRoundTrip, HeaderListsTensorsInTheGivenOrder) {
  const Bytes bytes = io::serialize_safetensors(every_dtype());
  const std::string header(reinterpret_cast<const char*>(bytes.data()) + 8, header_length(bytes));
  EXPECT_LT(header.find("\"f32\""), header.find("\"i64\""));
}

TEST(SafetensorsRoundTrip, HeaderIsPaddedAndSpellsDtypesTheSafetensorsWay) {
  const Bytes bytes = io::serialize_safetensors(every_dtype(), {{"format", "pt"}});
  const std::uint64_t n = header_length(bytes);
  EXPECT_EQ(n % 8, 0u);
  const std::string header(reinterpret_cast<const char*>(bytes.data()) + 8, n);
  EXPECT_EQ(header.rfind(R"({"__metadata__":{"format":"pt"},)", 0), 0u) << header;
  for (const char* name : {"\"F32\"", "\"F16\"", "\"BF16\"", "\"I8\"", "\"U8\"", "\"I32\"", "\"I64\"", "\"BOOL\""})
    EXPECT_NE(header.find(name), std::string::npos) << name;
}

TEST(SafetensorsRoundTrip, SaveThenOpen) {
  TempDir dir;
  const fs::path path = dir / "model.safetensors";
  const auto tensors = every_dtype();
  io::save_safetensors(path, tensors, {{"format", "pt"}, {"k", "v"}});
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
  const auto file = SafetensorsFile::open(path);
  expect_round_trip(file, tensors);
  EXPECT_EQ(file.source(), path.string());
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"k", "v"}}));
  EXPECT_EQ(read_file(path), io::serialize_safetensors(tensors, {{"format", "pt"}, {"k", "v"}}));
}

TEST(SafetensorsRoundTrip, SaveReplacesAnExistingFile) {
  TempDir dir;
  const fs::path path = dir / "w.safetensors";
  write_file(path, to_bytes("old content"));
  const std::vector<NamedTensor> t = {{"w", Tensor::from_vector<float>({1.f}, {1})}};
  io::save_safetensors(path, t);
  EXPECT_EQ(SafetensorsFile::open(path).tensor("w").get(0), 1.0);
}

TEST(SafetensorsRoundTrip, NonContiguousInputIsWrittenRowMajor) {
  const Tensor base = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  const std::vector<NamedTensor> tensors = {
      {"transposed", base.transpose(0, 1)},
      {"strided", base.slice(1, 0, 3, 2)},
      {"expanded", Tensor::from_vector<float>({7, 8}, {2, 1}).expand({2, 4})},
  };
  const auto file = SafetensorsFile::from_bytes(io::serialize_safetensors(tensors));
  EXPECT_EQ(file.tensor("transposed").to_float_vector(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  EXPECT_EQ(file.tensor("strided").to_float_vector(), (std::vector<float>{1, 3, 4, 6}));
  EXPECT_EQ(file.tensor("expanded").to_float_vector(), (std::vector<float>{7, 7, 7, 7, 8, 8, 8, 8}));
  EXPECT_EQ(file.tensor("transposed").shape(), Shape({3, 2}));
}

TEST(SafetensorsRoundTrip, ZeroSizeAndScalarTensors) {
  const std::vector<NamedTensor> tensors = {
      {"a", Tensor::from_vector<float>({1, 2}, {2})},
      {"empty", Tensor::zeros({0, 3}, DType::F32)},
      {"scalar", Tensor::from_vector<std::int64_t>({42}, {})},
      {"empty_last", Tensor::zeros({4, 0}, DType::BF16)},
  };
  const auto file = SafetensorsFile::from_bytes(io::serialize_safetensors(tensors));
  expect_round_trip(file, tensors);
  EXPECT_EQ(file.tensor("empty").numel(), 0);
  EXPECT_EQ(file.tensor("scalar").rank(), 0);
  EXPECT_EQ(file.tensor("scalar").get(0), 42.0);
}

TEST(SafetensorsRoundTrip, NoTensorsAndMetadataOnly) {
  const auto empty = SafetensorsFile::from_bytes(io::serialize_safetensors({}));
  EXPECT_TRUE(empty.entries().empty());
  EXPECT_EQ(empty.data_bytes(), 0u);
  const auto meta = SafetensorsFile::from_bytes(io::serialize_safetensors({}, {{"a", "1"}, {"quote\"s", "\xc3\xa9"}}));
  EXPECT_EQ(meta.metadata(), (std::map<std::string, std::string>{{"a", "1"}, {"quote\"s", "\xc3\xa9"}}));
}

TEST(SafetensorsRoundTrip, PaddedHeaderWithTrailingSpacesIsAccepted) {
  for (const auto& c : valid_cases())
    EXPECT_NO_THROW(SafetensorsFile::from_bytes(c.bytes, c.name)) << c.name;
}

TEST(SafetensorsZeroCopy, TensorsViewTheBuffer) {
  Bytes bytes = io::serialize_safetensors(every_dtype());
  const std::byte* base = bytes.data();
  const std::size_t size = bytes.size();
  const auto file = SafetensorsFile::from_bytes(std::move(bytes));
  for (const auto& e : file.entries()) {
    SCOPED_TRACE(e.name);
    const Tensor t = file.tensor(e.name);
    const auto* p = static_cast<const std::byte*>(t.data());
    EXPECT_GE(p, base);
    EXPECT_LE(p + t.nbytes(), base + size);
    EXPECT_EQ(p, base + size - file.data_bytes() + e.begin);
    EXPECT_EQ(file.tensor(e.name).data(), t.data());  // same view every call
    EXPECT_FALSE(t.storage()->owns_memory());
  }
}

TEST(SafetensorsZeroCopy, MappedTensorsShareOneStorageAndOutliveTheFile) {
  TempDir dir;
  const fs::path path = dir / "w.safetensors";
  io::save_safetensors(path, every_dtype());
  Tensor f32, i64;
  {
    const auto file = SafetensorsFile::open(path);
    f32 = file.tensor("f32");
    i64 = file.tensor("i64");
    EXPECT_EQ(f32.storage(), i64.storage());
    EXPECT_FALSE(f32.storage()->owns_memory());
    EXPECT_EQ(f32.storage()->bytes(), file.data_bytes());
  }
  EXPECT_EQ(f32.to_float_vector(), (std::vector<float>{1.5f, -2.f, 3.25f, 0.f, 5.f, -6.5f}));  // mapping kept alive
  EXPECT_EQ(i64.get(1), static_cast<double>(1LL << 40));
}

TEST(SafetensorsZeroCopy, WritingToATensorNeverChangesTheFile) {
  TempDir dir;
  const fs::path path = dir / "w.safetensors";
  io::save_safetensors(path, every_dtype());
  const Bytes before = read_file(path);
  {
    const auto file = SafetensorsFile::open(path);
    Tensor t = file.tensor("f32");
    t.fill(99.0);  // copy-on-write: must neither fault nor reach the file
    EXPECT_EQ(t.get(0), 99.0);
  }
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(SafetensorsFile::open(path).tensor("f32").get(0), 1.5);
}

TEST(SafetensorsZeroCopy, MisalignedDataIsCopiedIntoAlignedMemory) {
  Bytes misaligned;
  for (auto& c : valid_cases())
    if (c.name == "misaligned") misaligned = c.bytes;
  ASSERT_FALSE(misaligned.empty());
  const auto file = SafetensorsFile::from_bytes(misaligned);
  const Tensor t = file.tensor("w");
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.data()) % alignof(float), 0u);
  EXPECT_TRUE(t.storage()->owns_memory());
  float expected[2];
  std::memcpy(expected, misaligned.data() + misaligned.size() - 8, 8);
  EXPECT_EQ(t.to_float_vector(), (std::vector<float>{expected[0], expected[1]}));
}

// A file written by Hugging Face's own implementation (tests/data/safetensors_reference/).
TEST(SafetensorsInterop, ReadsTheReferenceWriter) {
  const auto file = SafetensorsFile::open(fs::path(ENCORE_TEST_DATA_DIR) / "safetensors_reference" /
                                          "reference_numpy.safetensors");
  EXPECT_EQ(file.metadata().at("format"), "np");
  EXPECT_EQ(file.entries().size(), 9u);
  for (const auto& e : file.entries()) EXPECT_FALSE(file.tensor(e.name).storage()->owns_memory()) << e.name;
  EXPECT_EQ(file.tensor("a.f32").to_float_vector(), (std::vector<float>{-1, -0.5, 0, 0.5, 1, 1.5}));
  EXPECT_EQ(file.tensor("m.f16").to_float_vector(), (std::vector<float>{1, -2.5, 65504}));
  EXPECT_EQ(file.tensor("b.i64").get(0), -1099511627776.0);
  EXPECT_EQ(file.tensor("c.i32").shape(), Shape({2, 1}));
  EXPECT_EQ(file.tensor("c.i32").get(1), 2147483647.0);
  EXPECT_EQ(file.tensor("d.i8").to_float_vector(), (std::vector<float>{-128, 127, 0}));
  EXPECT_EQ(file.tensor("e.bool").to_float_vector(), (std::vector<float>{1, 0, 1}));
  EXPECT_EQ(file.tensor("f.empty").shape(), Shape({0, 4}));
  EXPECT_EQ(file.tensor("g.scalar").rank(), 0);
  EXPECT_EQ(file.tensor("g.scalar").get(0), 3.5);
  EXPECT_EQ(file.tensor("z.u8").to_float_vector(), (std::vector<float>{1, 2, 3}));
}

TEST(SafetensorsLookup, FindAndMissingTensor) {
  const auto file = SafetensorsFile::from_bytes(io::serialize_safetensors(every_dtype()), "lookup.safetensors");
  ASSERT_NE(file.find("bf16"), nullptr);
  EXPECT_EQ(file.find("bf16")->dtype, DType::BF16);
  EXPECT_EQ(file.find("nope"), nullptr);
  EXPECT_FALSE(file.contains(""));
  try {
    file.tensor("nope");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("lookup.safetensors: no tensor named 'nope'"), std::string::npos) << e.what();
  }
}

void expect_write_error(const std::vector<NamedTensor>& tensors, const std::string& expect,
                        const std::map<std::string, std::string>& metadata = {}) {
  try {
    io::serialize_safetensors(tensors, metadata);
    ADD_FAILURE() << "expected an error containing: " << expect;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
  }
}

TEST(SafetensorsWriter, RejectsBadInput) {
  const Tensor t = Tensor::from_vector<float>({1}, {1});
  expect_write_error({{"", t}}, "empty name");
  expect_write_error({{"a", t}, {"a", t}}, "cannot write tensor 'a' twice");
  expect_write_error({{"__metadata__", t}}, "reserved");
  expect_write_error({{"u", Tensor()}}, "tensor 'u': it is undefined");
  expect_write_error({{"bad\xff", t}}, "not valid UTF-8");
  expect_write_error({}, "metadata value 'bad\\xfe' to safetensors: it is not valid UTF-8", {{"k", "bad\xfe"}});
}

TEST(SafetensorsWriter, SaveIntoMissingDirectoryIsAnIoError) {
  TempDir dir;
  const std::vector<NamedTensor> t = {{"w", Tensor::from_vector<float>({1}, {1})}};
  try {
    io::save_safetensors(dir / "no" / "such" / "w.safetensors", t);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_NE(std::string(e.what()).find("w.safetensors.tmp: cannot create the file: No such file or directory"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace encore::test
