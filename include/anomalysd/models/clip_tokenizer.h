// CLIP byte-level BPE tokenizer — port of transformers' CLIPTokenizer (v4.33, ftfy path) for
// Stable Diffusion prompts. Torch-free.
//
// Files (a diffusers `tokenizer/` folder): vocab.json, merges.txt, and optionally
// tokenizer_config.json and special_tokens_map.json for the special tokens; the latter overrides
// the former, as transformers does (SD2's files disagree on the pad token and `!` wins).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace anomalysd {

struct ClipTokenizerFiles {
  std::string vocab;                     // vocab.json
  std::string merges;                    // merges.txt
  std::string tokenizer_config;          // optional ("" = absent)
  std::string special_tokens_map;        // optional ("" = absent)
};

class ClipTokenizer {
 public:
  static ClipTokenizer from_folder(const std::string& dir);
  static ClipTokenizer from_files(const ClipTokenizerFiles& files);

  // Text clean-up as the reference: ftfy-style fixes (HTML entities, curly quotes, ligatures,
  // full-width forms, line breaks), whitespace folding, Unicode lower-casing.
  static std::string clean_text(const std::string& text);

  // BPE pieces of `text` without bos/eos, e.g. {"a</w>", "perfect</w>", ...}.
  std::vector<std::string> bpe_tokens(const std::string& text) const;
  // bos + ids + eos, untruncated.
  std::vector<int64_t> encode_unpadded(const std::string& text) const;
  // Exactly max_length ids: truncated keeping bos + the first (max_length - 2) + eos, then padded.
  std::vector<int64_t> encode(const std::string& text) const;

  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }
  int64_t pad_id() const { return pad_id_; }
  int max_length() const { return max_length_; }
  std::size_t vocab_size() const { return vocab_.size(); }
  int64_t max_id() const;  // the largest id the tokenizer can produce

 private:
  std::string bpe(const std::string& word) const;  // space-separated pieces
  void append_bpe(const std::string& text, std::vector<std::string>& out) const;  // text without specials
  int64_t token_id(const std::string& piece) const;

  std::unordered_map<std::string, int64_t> vocab_;
  std::unordered_map<std::string, int> merge_ranks_;  // "first second" -> rank
  int64_t bos_id_ = 0, eos_id_ = 0, pad_id_ = 0, unk_id_ = 0;
  std::vector<std::string> specials_;  // bos/eos/unk/pad contents, longest first
  int max_length_ = 77;
  std::string source_;
};

}  // namespace anomalysd
