// Large hostile headers: each is accepted or refused with the right code, and parsing it takes a
// bounded multiple of its size in heap (counted through a replaced global operator new, which is
// why this is a binary of its own). Also pins which defect is named when a header has several.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <new>
#include <optional>
#include <string>

#include "corpus.h"
#include "encore/io/safetensors.h"

namespace {

// Heap bytes in use and their peak, single-threaded use only. Each block carries its size.
std::size_t g_in_use = 0, g_peak = 0;
constexpr std::size_t kPrefix = alignof(std::max_align_t);

}  // namespace

void* operator new(std::size_t n) {
  auto* p = static_cast<unsigned char*>(std::malloc(n + kPrefix));
  if (p == nullptr) throw std::bad_alloc();
  *reinterpret_cast<std::size_t*>(p) = n;
  g_in_use += n;
  if (g_in_use > g_peak) g_peak = g_in_use;
  return p + kPrefix;
}
void operator delete(void* p) noexcept {
  if (p == nullptr) return;
  auto* base = static_cast<unsigned char*>(p) - kPrefix;
  g_in_use -= *reinterpret_cast<std::size_t*>(base);
  std::free(base);
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete[](void* p) noexcept { operator delete(p); }
void operator delete(void* p, std::size_t) noexcept { operator delete(p); }
void operator delete[](void* p, std::size_t) noexcept { operator delete(p); }

namespace encore::test {
namespace {

constexpr std::size_t kHeaderBytes = 24'000'000;

// `prefix`, then item(0), item(1), ... joined by commas until the header is ~kHeaderBytes, then
// `suffix`.
std::string fill(std::string_view prefix, const std::function<std::string(std::size_t)>& item,
                 std::string_view suffix) {
  std::string out(prefix);
  out.reserve(kHeaderBytes + 64);
  for (std::size_t i = 0; out.size() < kHeaderBytes; ++i) {
    if (i > 0) out += ',';
    out += item(i);
  }
  out += suffix;
  return out;
}

std::string hex(std::size_t i) { return fmt::format("{:x}", i); }

struct Outcome {
  std::size_t peak = 0;  // heap bytes beyond those in use before the call
  std::optional<io::SafetensorsFile> file;
  std::optional<Error> error;
};

Outcome load(const Bytes& image) {
  Outcome out;
  const std::size_t before = g_in_use;
  g_peak = g_in_use;
  try {
    out.file.emplace(io::SafetensorsFile::from_buffer(image));
  } catch (const Error& e) {
    out.error.emplace(e);
  }
  out.peak = g_peak - before;
  return out;
}

void expect_refused(const Outcome& o, ErrorCode code, const std::string& expect) {
  ASSERT_TRUE(o.error.has_value()) << "accepted; expected " << error_code_name(code) << ": " << expect;
  EXPECT_EQ(o.error->code(), code) << o.error->what();
  EXPECT_NE(std::string(o.error->what()).find(expect), std::string::npos) << o.error->what();
}

// Measured at about 2-3.3x; a DOM took 12-43x. The bound leaves room for other standard libraries.
void expect_bounded(const Outcome& o, std::size_t header_bytes) {
  EXPECT_LE(o.peak, 4 * header_bytes) << "peak heap " << o.peak << " bytes for a header of " << header_bytes;
}

TEST(HostileHeader, ManyTinyTensorsAreAccepted) {
  const std::string header =
      fill("{", [](std::size_t i) { return fmt::format(R"("{}":{{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})", hex(i)); }, "}");
  const Outcome o = load(image(header, 0));
  ASSERT_TRUE(o.file.has_value()) << o.error->what();
  EXPECT_GT(o.file->entries().size(), 400'000u);
  EXPECT_EQ(o.file->tensor("1f").numel(), 0);
  expect_bounded(o, header.size());
}

TEST(HostileHeader, OneHugeMetadataValueIsAccepted) {
  const std::string header = R"({"__metadata__":{"k":")" + std::string(kHeaderBytes, 'a') + "\"}}";
  const Outcome o = load(image(header, 0));
  ASSERT_TRUE(o.file.has_value()) << o.error->what();
  EXPECT_EQ(o.file->metadata().at("k").size(), kHeaderBytes);
  expect_bounded(o, header.size());
}

// The map metadata() returns costs ~100 bytes a key by itself, so only the outcome is checked.
TEST(HostileHeader, ManyMetadataKeysAreAccepted) {
  const std::string header = fill(R"({"__metadata__":{)", [](std::size_t i) { return fmt::format(R"("{}":"")", hex(i)); }, "}}");
  const Outcome o = load(image(header, 0));
  ASSERT_TRUE(o.file.has_value()) << o.error->what();
  EXPECT_GT(o.file->metadata().size(), 2'000'000u);
}

TEST(HostileHeader, ManyNonObjectEntriesAreRefused) {
  const std::string header = fill("{", [](std::size_t i) { return fmt::format(R"("{}":1)", hex(i)); }, "}");
  const Outcome o = load(image(header, 0));
  expect_refused(o, ErrorCode::bad_model_file, "tensor '0' is a JSON number, expected an object");
  expect_bounded(o, header.size());
}

TEST(HostileHeader, ManyUnknownFieldsAreRefused) {
  const std::string header = fill(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[0,0],)",
                                  [](std::size_t i) { return fmt::format(R"("x{}":0)", hex(i)); }, "}}");
  const Outcome o = load(image(header, 0));
  expect_refused(o, ErrorCode::bad_model_file, "tensor 'w' has unknown field 'x0'");
  expect_bounded(o, header.size());
}

TEST(HostileHeader, LongArraysAreRefused) {
  const std::string shape = fill(R"({"w":{"dtype":"U8","data_offsets":[0,0],"shape":[)", [](std::size_t) { return "0"; }, "]}}");
  Outcome o = load(image(shape, 0));
  expect_refused(o, ErrorCode::unsupported, "encore supports at most 8 dimensions");
  expect_bounded(o, shape.size());
  const std::string meta = fill(R"({"__metadata__":{"k":[)", [](std::size_t) { return R"("s")"; }, "]}}");
  o = load(image(meta, 0));
  expect_refused(o, ErrorCode::bad_model_file, "__metadata__ key 'k' has a JSON array value, expected a string");
  expect_bounded(o, meta.size());
  const std::string objects = fill(R"({"w":[)", [](std::size_t) { return "{}"; }, "]}");
  o = load(image(objects, 0));
  expect_refused(o, ErrorCode::bad_model_file, "tensor 'w' is a JSON array, expected an object");
  expect_bounded(o, objects.size());
}

TEST(HostileHeader, DeepNestingIsRefusedAtTheCap) {
  std::string header = R"({"a":{"b":[)";
  header.resize(kHeaderBytes, '[');
  const Outcome o = load(image(header, 0));
  expect_refused(o, ErrorCode::bad_model_file, "header nests deeper than 3 levels in 'a' > 'b'");
  expect_bounded(o, header.size());
}

// Several defects: JSON defects win wherever they are; then the defect of the smallest key, and
// within an entry the first check that fails, whatever the order of the fields.
TEST(HostileHeader, WhichDefectIsNamed) {
  const auto message = [](std::string_view header) {
    const Outcome o = load(image(header, 0));
    return o.error ? fmt::format("{}: {}", error_code_name(o.error->code()), o.error->what()) : "accepted";
  };
  EXPECT_EQ(message(R"({"a":1,"b":2,"b":3})"), "bad_model_file: <buffer>: header has duplicate key 'b'");
  EXPECT_NE(message(R"({"a":1} x)").find("header is not valid JSON"), std::string::npos);
  EXPECT_EQ(message(R"({"b":5,"a":{"dtype":"F64","shape":[],"data_offsets":[0,8]}})"),
            "unsupported: <buffer>: unsupported dtype 'F64' for tensor 'a': encore reads F32, F16, BF16, I8, U8, "
            "I32, I64, BOOL");
  EXPECT_EQ(message(R"({"__metadata__":{"k":1},"A":2})"),
            "bad_model_file: <buffer>: tensor 'A' is a JSON number, expected an object with dtype, shape and "
            "data_offsets");
  EXPECT_EQ(message(R"({"w":{"data_offsets":[0,-1],"shape":[2.5],"zz":0,"dtype":7,"b":0}})"),
            "bad_model_file: <buffer>: tensor 'w' has unknown field 'b': expected only dtype, shape and data_offsets");
  EXPECT_EQ(message(R"({"w":{"data_offsets":[0,-1],"shape":[1e2,-3],"dtype":"F32"}})"),
            "bad_model_file: <buffer>: tensor 'w' has shape[0] = 100.0, expected a non-negative integer");
}

}  // namespace
}  // namespace encore::test
