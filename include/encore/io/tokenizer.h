// encore — the GPT-2 byte-level BPE tokenizer (the tokenizer of GPT-2 and of ViT-GPT2 captioning).
//
// Matches Hugging Face's GPT2Tokenizer (transformers 5.x, i.e. the `tokenizers` library) with
// add_prefix_space=False: the same pre-tokenisation regex and Unicode classes, the same merges,
// special tokens found in the text, and byte-level decoding with invalid UTF-8 replaced by U+FFFD.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace encore::io {

/// Options of Gpt2Tokenizer::decode.
struct DecodeOptions {
  /// Leave out special tokens (<|endoftext|> and tokenizer.json's special added tokens).
  bool skip_special_tokens = false;
  /// Hugging Face's clean_up_tokenization_spaces: removes the space before . , ! ? and before the
  /// contractions 's 'm 've 're n't (and " ' " -> "'"). Off by default, as in transformers 5.x,
  /// because it does not round-trip.
  bool clean_up_tokenization_spaces = false;
};

/// A byte-level BPE tokenizer. Immutable after loading; encode() and decode() may be called from
/// several threads at once (the per-word merge cache is locked). Cheap to copy (shared state).
class Gpt2Tokenizer {
 public:
  /// Loads `vocab.json` (token -> id, ids 0..n-1 each used once) and `merges.txt` (an optional
  /// "#version" line, then one "left right" pair per line, highest priority first; both halves
  /// and their concatenation must be tokens). "<|endoftext|>", when in the vocabulary, becomes the
  /// special end-of-text token. Throws Error(io) when a file cannot be read and
  /// Error(bad_model_file) naming the file and line for malformed content.
  static Gpt2Tokenizer from_files(const std::filesystem::path& vocab_json,
                                  const std::filesystem::path& merges_txt);

  /// Loads a tokenizer directory: `tokenizer.json` when present (model.vocab, model.merges as
  /// "a b" strings or [a, b] pairs, and added_tokens), otherwise `vocab.json` + `merges.txt`.
  /// Throws Error(io) when neither is there, naming what was looked for.
  static Gpt2Tokenizer from_directory(const std::filesystem::path& dir);

  /// Token ids of `text` (UTF-8; bytes that are not valid UTF-8 are still encoded, byte by byte).
  /// With `parse_special_tokens`, special/added tokens written in the text (e.g. "<|endoftext|>")
  /// become their id, as Hugging Face does by default; otherwise they are encoded as plain text.
  std::vector<std::int32_t> encode(std::string_view text, bool parse_special_tokens = true) const;

  /// The text of `ids`: token bytes concatenated and decoded as UTF-8, ill-formed parts replaced
  /// by U+FFFD (Hugging Face's errors="replace"). Throws Error(invalid_argument) naming an id
  /// outside [0, vocab_size()).
  std::string decode(std::span<const std::int32_t> ids, const DecodeOptions& options = {}) const;
  /// decode() with only skip_special_tokens set.
  std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens) const;

  /// The raw bytes of `ids` (no UTF-8 repair), e.g. to stream text token by token and emit only
  /// complete characters. Special tokens give their text. Same id checks as decode().
  std::string decode_bytes(std::span<const std::int32_t> ids, bool skip_special_tokens = false) const;

  /// Vocabulary strings (GPT-2's printable byte alphabet, e.g. "Ġworld") of the tokens of `text`.
  std::vector<std::string> tokenize(std::string_view text, bool parse_special_tokens = true) const;

  /// The id of a vocabulary string (as in vocab.json), or Error(invalid_argument) naming it.
  std::int32_t token_to_id(std::string_view token) const;
  /// The id of a vocabulary string, or nullopt.
  std::optional<std::int32_t> find_token(std::string_view token) const noexcept;
  /// The vocabulary string of `id`; Error(invalid_argument) when out of range.
  const std::string& id_to_token(std::int32_t id) const;

  /// Number of ids (vocabulary plus added tokens); valid ids are 0 .. vocab_size()-1.
  std::int32_t vocab_size() const noexcept;
  /// Number of merge rules.
  std::size_t merge_count() const noexcept;
  /// Id of "<|endoftext|>" (50256 for GPT-2), which GPT-2 uses as bos, eos, pad and unk; -1 when
  /// the vocabulary has no such token.
  std::int32_t eos_token_id() const noexcept;
  std::int32_t bos_token_id() const noexcept { return eos_token_id(); }
  /// True for ids of special tokens (skipped by decode with skip_special_tokens).
  bool is_special(std::int32_t id) const noexcept;

 private:
  struct State;
  explicit Gpt2Tokenizer(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

}  // namespace encore::io
