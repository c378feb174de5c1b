// ModelWeights: single files, sharded directories with an index, and hostile index files.
#include <gtest/gtest.h>

#include <functional>

#include "corpus.h"
#include "encore/io/model_files.h"

namespace encore::test {
namespace {

namespace fs = std::filesystem;
using io::ModelWeights;
using io::NamedTensor;
const fs::path kDataDir = ENCORE_TEST_DATA_DIR;

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

Tensor values(std::initializer_list<float> v) { return Tensor::from_vector<float>(std::vector<float>(v), {static_cast<std::int64_t>(v.size())}); }

// A two-shard checkpoint laid out like Hugging Face save_pretrained.
void write_sharded(const fs::path& dir) {
  io::save_safetensors(dir / "model-00001-of-00002.safetensors",
                       std::vector<NamedTensor>{{"encoder.w", values({1, 2, 3})}, {"encoder.b", values({4})}});
  io::save_safetensors(dir / "model-00002-of-00002.safetensors",
                       std::vector<NamedTensor>{{"decoder.w", values({5, 6})}});
  write_file(dir / "model.safetensors.index.json",
             to_bytes(R"({"metadata":{"total_size":24},"weight_map":{)"
                      R"("encoder.w":"model-00001-of-00002.safetensors",)"
                      R"("decoder.w":"model-00002-of-00002.safetensors",)"
                      R"("encoder.b":"model-00001-of-00002.safetensors"}})"));
}

void expect_sharded(const ModelWeights& w, const fs::path& dir) {
  EXPECT_EQ(w.names(), (std::vector<std::string>{"decoder.w", "encoder.b", "encoder.w"}));
  ASSERT_EQ(w.files().size(), 2u);
  EXPECT_EQ(w.files()[0].source(), (fs::canonical(dir) / "model-00001-of-00002.safetensors").string());
  EXPECT_EQ(w.tensor("decoder.w").to_float_vector(), (std::vector<float>{5, 6}));
  EXPECT_EQ(w.tensor("encoder.w").to_float_vector(), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(w.entry("encoder.b").shape, Shape({1}));
  EXPECT_EQ(w.parameter_count(), 6u);
  EXPECT_EQ(w.data_bytes(), 24u);
}

TEST(ModelWeights, ShardedDirectoryAndIndexFile) {
  TempDir dir;
  write_sharded(dir.path());
  expect_sharded(ModelWeights::open(dir.path()), dir.path());
  expect_sharded(ModelWeights::open(dir / "model.safetensors.index.json"), dir.path());
}

TEST(ModelWeights, SingleFileAndDirectory) {
  TempDir dir;
  io::save_safetensors(dir / "model.safetensors", std::vector<NamedTensor>{{"w", values({1, 2})}});
  for (const fs::path& p : {dir.path(), dir / "model.safetensors"}) {
    const auto w = ModelWeights::open(p);
    EXPECT_EQ(w.names(), std::vector<std::string>{"w"});
    EXPECT_TRUE(w.contains("w"));
    EXPECT_FALSE(w.contains("v"));
    EXPECT_EQ(w.files().size(), 1u);
    EXPECT_EQ(w.tensor("w").to_float_vector(), (std::vector<float>{1, 2}));
  }
}

TEST(ModelWeights, ShardTensorsMissingFromTheWeightMapAreIncluded) {
  TempDir dir;
  io::save_safetensors(dir / "a.safetensors", std::vector<NamedTensor>{{"w", values({1})}, {"extra", values({2})}});
  write_file(dir / "model.safetensors.index.json", to_bytes(R"({"weight_map":{"w":"a.safetensors"}})"));
  EXPECT_EQ(ModelWeights::open(dir.path()).names(), (std::vector<std::string>{"extra", "w"}));
}

TEST(ModelWeights, ShardInSubdirectoryAndInnerSymlinkAreAllowed) {
  TempDir dir;
  fs::create_directories(dir / "shards");
  io::save_safetensors(dir / "shards" / "a.safetensors", std::vector<NamedTensor>{{"w", values({1})}});
  fs::create_symlink("shards/a.safetensors", dir / "link.safetensors");
  write_file(dir / "model.safetensors.index.json",
             to_bytes(R"({"weight_map":{"w":"shards/a.safetensors","v":"link.safetensors"}})"));
  // Both names resolve to one real file, which is opened once; 'v' is not in it.
  expect_error([&] { ModelWeights::open(dir.path()); }, ErrorCode::bad_model_file,
               "weight_map puts tensor 'v' in shard 'link.safetensors'");
  write_file(dir / "model.safetensors.index.json", to_bytes(R"({"weight_map":{"w":"link.safetensors"}})"));
  EXPECT_EQ(ModelWeights::open(dir.path()).tensor("w").get(0), 1.0);
}

// The Hugging Face hub cache: snapshots/<rev>/ holds symlinks to ../../blobs/<hash>. Shards are
// followed like a single model.safetensors; only the index's own text may not leave the directory.
TEST(ModelWeights, SymlinkedShardsOfTheHubCacheAreFollowed) {
  TempDir root;
  fs::create_directories(root / "snapshots" / "abc");
  fs::create_directories(root / "blobs");
  io::save_safetensors(root / "blobs" / "111", std::vector<NamedTensor>{{"w", values({1})}});
  io::save_safetensors(root / "blobs" / "222", std::vector<NamedTensor>{{"v", values({2})}});
  fs::create_symlink("../../blobs/111", root / "snapshots" / "abc" / "model-00001-of-00002.safetensors");
  fs::create_symlink("../../blobs/222", root / "snapshots" / "abc" / "model-00002-of-00002.safetensors");
  write_file(root / "snapshots" / "abc" / "model.safetensors.index.json",
             to_bytes(R"({"weight_map":{"w":"model-00001-of-00002.safetensors","v":"model-00002-of-00002.safetensors"}})"));
  const ModelWeights m = ModelWeights::open(root / "snapshots" / "abc");
  EXPECT_EQ(m.tensor("w").get(0), 1.0);
  EXPECT_EQ(m.tensor("v").get(0), 2.0);
  // The index's text still may not name a path outside the directory.
  write_file(root / "snapshots" / "abc" / "model.safetensors.index.json",
             to_bytes(R"({"weight_map":{"w":"../../blobs/111"}})"));
  expect_error([&] { ModelWeights::open(root / "snapshots" / "abc"); }, ErrorCode::bad_model_file, "'..' component");
}

TEST(ModelWeights, MissingPathAndMissingTensor) {
  TempDir dir;
  expect_error([&] { ModelWeights::open(dir / "nope"); }, ErrorCode::io, "nope: no such file or directory");
  io::save_safetensors(dir / "model.safetensors", std::vector<NamedTensor>{{"w", values({1})}});
  const auto w = ModelWeights::open(dir.path());
  expect_error([&] { w.entry("v"); }, ErrorCode::invalid_argument, "no tensor named 'v'");
  expect_error([&] { w.tensor("v"); }, ErrorCode::invalid_argument, "no tensor named 'v'");
}

std::string index_case_name(const ::testing::TestParamInfo<IndexCase>& info) { return info.param.name; }

class MalformedIndex : public ::testing::TestWithParam<IndexCase> {};

TEST_P(MalformedIndex, Throws) {
  const IndexCase& c = GetParam();
  TempDir dir;
  for (const auto& [name, bytes] : c.files) write_file(dir / name, bytes);
  expect_error([&] { ModelWeights::open(dir.path()); }, c.code, c.expect);
}

TEST_P(MalformedIndex, CommittedCopyThrows) {
  const IndexCase& c = GetParam();
  const fs::path dir = kDataDir / "safetensors_malformed" / c.name;
  for (const auto& [name, bytes] : c.files) {
    ASSERT_TRUE(fs::exists(dir / name)) << dir / name << " is missing: regenerate the corpus";
    EXPECT_EQ(read_file(dir / name), bytes) << dir / name;
  }
  expect_error([&] { ModelWeights::open(dir); }, c.code, c.expect);
}

INSTANTIATE_TEST_SUITE_P(Corpus, MalformedIndex, ::testing::ValuesIn(index_cases()), index_case_name);

}  // namespace
}  // namespace encore::test
