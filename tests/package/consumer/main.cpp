// An out-of-tree program using the installed encore: writes a safetensors file, then opens it.
#include <encore/encore.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: consumer FILE.safetensors\n";
    return 2;
  }
  try {
    const encore::Tensor w = encore::Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
    const encore::Tensor ids = encore::Tensor::from_vector(std::vector<std::int64_t>{7, 8}, {2});
    const encore::io::NamedTensor tensors[] = {{"w", w}, {"ids", ids}};
    encore::io::save_safetensors(argv[1], tensors, {{"format", "pt"}});
    const auto file = encore::io::SafetensorsFile::open(argv[1]);
    const encore::Tensor back = file.tensor("w");
    if (back.at<float>({1, 2}) != 6.0f) return 1;
    std::cout << "encore " << encore::version() << ": read " << file.entries().size() << " tensors\n";
  } catch (const encore::Error& e) {
    std::cerr << "consumer: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
