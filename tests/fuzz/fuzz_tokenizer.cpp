// The CLIP tokenizer files: vocab.json, merges.txt, tokenizer_config.json and
// special_tokens_map.json (input parts separated by "\n===\n"); a tokenizer that loads then
// encodes the last part and fixed prompts, and every id it gives must be in its vocabulary.
#include "anomalysd/io/errors.h"
#include "anomalysd/models/clip_tokenizer.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto parts = anomalysd::fuzz::split_input(data, size, "\n===\n", 5);
  anomalysd::ClipTokenizerFiles files;
  files.vocab = anomalysd::fuzz::write_input("vocab.json", reinterpret_cast<const uint8_t*>(parts[0].data()), parts[0].size());
  files.merges = anomalysd::fuzz::write_input("merges.txt", reinterpret_cast<const uint8_t*>(parts[1].data()), parts[1].size());
  if (!parts[2].empty())
    files.tokenizer_config = anomalysd::fuzz::write_input("tokenizer_config.json", reinterpret_cast<const uint8_t*>(parts[2].data()), parts[2].size());
  if (!parts[3].empty())
    files.special_tokens_map = anomalysd::fuzz::write_input("special_tokens_map.json", reinterpret_cast<const uint8_t*>(parts[3].data()), parts[3].size());
  try {
    const auto tok = anomalysd::ClipTokenizer::from_files(files);
    for (const std::string& text : {parts[4], std::string("A perfect bottle."), std::string("")}) {
      const auto ids = tok.encode(text);
      if (static_cast<int>(ids.size()) != tok.max_length()) __builtin_trap();
      for (int64_t id : tok.encode_unpadded(text))
        if (id < 0) __builtin_trap();
    }
  } catch (const anomalysd::InputError&) {
  }
  return 0;
}
