// Port of transformers.CLIPTokenizer (4.33) with ftfy present, and openai/CLIP simple_tokenizer.
#include "anomalysd/models/clip_tokenizer.h"

#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"

namespace anomalysd {

namespace {

struct CodepointRange {
  char32_t first, last;
};
struct CodepointPair {
  char32_t from, to;
};
#include "unicode_tables.inc"

template <std::size_t N>
bool in_ranges(const CodepointRange (&ranges)[N], char32_t cp) {
  const auto it = std::upper_bound(std::begin(ranges), std::end(ranges), cp,
                                   [](char32_t c, const CodepointRange& r) { return c < r.first; });
  return it != std::begin(ranges) && cp <= std::prev(it)->last;
}

bool is_letter(char32_t cp) { return in_ranges(kLetterRanges, cp); }
bool is_number(char32_t cp) { return in_ranges(kNumberRanges, cp); }
bool is_space(char32_t cp) { return in_ranges(kSpaceRanges, cp); }

char32_t to_lower(char32_t cp) {
  if (cp < 0x80) return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
  const auto it = std::lower_bound(std::begin(kLowerCase), std::end(kLowerCase), cp,
                                   [](const CodepointPair& p, char32_t c) { return p.from < c; });
  return (it != std::end(kLowerCase) && it->from == cp) ? it->to : cp;
}

// UTF-8 decoding; invalid bytes become U+FFFD, as Python's errors="replace".
std::u32string decode_utf8(const std::string& s) {
  std::u32string out;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    char32_t cp = len == 1 ? c : c & (0xFF >> (len + 1));
    bool ok = true;
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 2) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode_utf8(const std::u32string& s) {
  std::string out;
  for (char32_t cp : s) append_utf8(out, cp);
  return out;
}

// The named HTML entities prompts realistically contain; numeric ones (&#233; &#xE9;) are all handled.
const std::unordered_map<std::string, char32_t>& html_entities() {
  static const std::unordered_map<std::string, char32_t> table = {
      {"amp", '&'},      {"lt", '<'},       {"gt", '>'},       {"quot", '"'},     {"apos", '\''},
      {"nbsp", 0xA0},    {"copy", 0xA9},    {"reg", 0xAE},     {"trade", 0x2122}, {"deg", 0xB0},
      {"hellip", 0x2026}, {"mdash", 0x2014}, {"ndash", 0x2013}, {"lsquo", 0x2018}, {"rsquo", 0x2019},
      {"ldquo", 0x201C}, {"rdquo", 0x201D}, {"euro", 0x20AC},  {"pound", 0xA3},   {"yen", 0xA5},
      {"cent", 0xA2},    {"sect", 0xA7},    {"para", 0xB6},    {"middot", 0xB7},  {"times", 0xD7},
      {"divide", 0xF7},  {"plusmn", 0xB1},  {"micro", 0xB5},   {"laquo", 0xAB},   {"raquo", 0xBB},
      {"eacute", 0xE9},  {"egrave", 0xE8},  {"ecirc", 0xEA},   {"aacute", 0xE1},  {"agrave", 0xE0},
      {"acirc", 0xE2},   {"auml", 0xE4},    {"ouml", 0xF6},    {"uuml", 0xFC},    {"szlig", 0xDF},
      {"ccedil", 0xE7},  {"ntilde", 0xF1},  {"iuml", 0xEF},    {"ocirc", 0xF4},   {"ucirc", 0xFB},
  };
  return table;
}

// ftfy's unescape_html="auto": entities are decoded unless the text looks like HTML (has '<').
std::u32string unescape_html(const std::u32string& s) {
  if (s.find(U'<') != std::u32string::npos) return s;
  std::u32string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == U'&') {
      const std::size_t semi = s.find(U';', i + 1);
      if (semi != std::u32string::npos && semi - i <= 10) {
        const std::string name = encode_utf8(s.substr(i + 1, semi - i - 1));
        char32_t cp = 0;
        if (name.size() > 1 && name[0] == '#') {
          try {
            const bool hex = name[1] == 'x' || name[1] == 'X';
            cp = static_cast<char32_t>(std::stoul(name.substr(hex ? 2 : 1), nullptr, hex ? 16 : 10));
            if (cp > 0x10FFFF) cp = 0;
          } catch (const std::exception&) {
            cp = 0;
          }
        } else if (auto it = html_entities().find(name); it != html_entities().end()) {
          cp = it->second;
        }
        if (cp != 0) {
          out.push_back(cp);
          i = semi;
          continue;
        }
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// The rest of ftfy.fix_text's defaults that change ordinary prompts.
std::u32string ftfy_fixes(const std::u32string& s) {
  std::u32string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char32_t c = s[i];
    if (c == U'\r') {  // fix_line_breaks
      if (i + 1 < s.size() && s[i + 1] == U'\n') continue;
      c = U'\n';
    }
    if (c == 0x2028 || c == 0x2029 || c == 0x85) c = U'\n';
    if (c >= 0x2018 && c <= 0x201B) c = U'\'';  // uncurl_quotes
    if (c >= 0x201C && c <= 0x201F) c = U'"';
    if (c >= 0xFF01 && c <= 0xFF5E) c -= 0xFEE0;  // fix_character_width
    if (c == 0x3000) c = U' ';
    switch (c) {  // fix_latin_ligatures
      case 0xFB00: out += U"ff"; continue;
      case 0xFB01: out += U"fi"; continue;
      case 0xFB02: out += U"fl"; continue;
      case 0xFB03: out += U"ffi"; continue;
      case 0xFB04: out += U"ffl"; continue;
      case 0xFB06: out += U"st"; continue;
      default: break;
    }
    // remove_control_chars: C0/C1 controls other than tab, newline, form feed; BOM.
    if ((c < 0x20 && c != U'\t' && c != U'\n' && c != U'\f') || c == 0x7F || c == 0xFEFF) continue;
    out.push_back(c);
  }
  return out;
}

// GPT-2's reversible byte -> printable code point map.
const std::vector<std::string>& byte_encoder() {
  static const std::vector<std::string> table = [] {
    std::vector<int> bs;
    for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
    std::vector<char32_t> code(256);
    std::vector<bool> taken(256, false);
    for (int b : bs) {
      code[b] = static_cast<char32_t>(b);
      taken[b] = true;
    }
    int n = 0;
    for (int b = 0; b < 256; ++b)
      if (!taken[b]) code[b] = static_cast<char32_t>(256 + n++);
    std::vector<std::string> out(256);
    for (int b = 0; b < 256; ++b) append_utf8(out[b], code[b]);
    return out;
  }();
  return table;
}

// CLIP's pre-tokenizer, the regex
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// as a scanner: alternatives are tried in order at each position; unmatched (space) is skipped.
std::vector<std::u32string> pre_tokenize(const std::u32string& text) {
  static const std::u32string kSpecial[] = {U"<|startoftext|>", U"<|endoftext|>"};
  static const std::u32string kContractions[] = {U"'s", U"'t", U"'re", U"'ve", U"'m", U"'ll", U"'d"};
  std::vector<std::u32string> out;
  std::size_t i = 0;
  auto starts_with = [&](const std::u32string& p) { return text.compare(i, p.size(), p) == 0; };
  while (i < text.size()) {
    bool matched = false;
    for (const auto& p : kSpecial)
      if (!matched && starts_with(p)) {
        out.push_back(p);
        i += p.size();
        matched = true;
      }
    for (const auto& p : kContractions)
      if (!matched && starts_with(p)) {
        out.push_back(p);
        i += p.size();
        matched = true;
      }
    if (matched) continue;
    const char32_t c = text[i];
    std::size_t j = i;
    if (is_letter(c)) {
      while (j < text.size() && is_letter(text[j])) ++j;
    } else if (is_number(c)) {
      j = i + 1;
    } else if (!is_space(c)) {
      while (j < text.size() && !is_space(text[j]) && !is_letter(text[j]) && !is_number(text[j])) ++j;
    } else {
      ++i;
      continue;
    }
    out.push_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

// A special token is a plain string or an AddedToken object {"content": ...}.
std::string token_content(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

}  // namespace

ClipTokenizer ClipTokenizer::from_folder(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path d(dir);
  if (!fs::is_directory(d)) throw FormatError(dir, "tokenizer folder not found");
  auto optional = [&](const char* name) { return fs::exists(d / name) ? (d / name).string() : std::string(); };
  return from_files({(d / "vocab.json").string(), (d / "merges.txt").string(), optional("tokenizer_config.json"),
                     optional("special_tokens_map.json")});
}

ClipTokenizer ClipTokenizer::from_files(const ClipTokenizerFiles& files) {
  ClipTokenizer tok;
  tok.source_ = files.vocab;
  const nlohmann::json vocab = read_json_file(files.vocab);
  if (!vocab.is_object()) throw FormatError(files.vocab, "expected an object mapping tokens to ids");
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer()) throw FormatError(files.vocab, "id of token '" + token + "' is not an integer");
    // Ids index the text encoder's embedding table: a negative one would read before it.
    if (id.get<int64_t>() < 0 || id.get<int64_t>() > std::numeric_limits<int32_t>::max())
      throw FormatError(files.vocab, "id of token '" + token + "' is " + id.dump() + ", not a valid index");
    tok.vocab_.emplace(token, id.get<int64_t>());
  }

  std::ifstream merges(files.merges);
  if (!merges) throw FormatError(files.merges, "cannot open");
  std::string line;
  int rank = 0;
  // transformers reads lines[1 : 49152 - 256 - 2 + 1]: the version line is skipped, and at most
  // 48894 merges are used even if the file has more.
  constexpr int kMaxMerges = 49152 - 256 - 2;
  bool first = true;
  while (std::getline(merges, line) && rank < kMaxMerges) {
    if (first) {
      first = false;
      if (line.rfind("#version", 0) == 0) continue;
    }
    if (line.empty()) continue;
    const auto space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
      throw FormatError(files.merges, "line " + std::to_string(rank + 2) + " is not a pair 'a b': '" + line + "'");
    tok.merge_ranks_.emplace(line, rank++);
  }
  if (rank == 0) throw FormatError(files.merges, "no merges found");

  std::string bos = "<|startoftext|>", eos = "<|endoftext|>", unk = "<|endoftext|>", pad = "<|endoftext|>";
  for (const std::string& path : {files.tokenizer_config, files.special_tokens_map}) {
    if (path.empty()) continue;
    const nlohmann::json cfg = read_json_file(path);
    auto take = [&](const char* key, std::string& into) {
      if (cfg.contains(key) && !token_content(cfg[key]).empty()) into = token_content(cfg[key]);
    };
    take("bos_token", bos);
    take("eos_token", eos);
    take("unk_token", unk);
    take("pad_token", pad);
    if (cfg.contains("model_max_length") && cfg["model_max_length"].is_number_integer())
      tok.max_length_ = cfg["model_max_length"].get<int>();
  }
  auto id_of = [&](const std::string& token, const char* role) {
    const auto it = tok.vocab_.find(token);
    if (it == tok.vocab_.end()) throw FormatError(files.vocab, std::string(role) + " token '" + token + "' is not in the vocabulary");
    return it->second;
  };
  tok.bos_id_ = id_of(bos, "bos");
  tok.eos_id_ = id_of(eos, "eos");
  tok.unk_id_ = id_of(unk, "unk");
  tok.pad_id_ = id_of(pad, "pad");
  tok.specials_ = {bos, eos, unk, pad};
  std::sort(tok.specials_.begin(), tok.specials_.end(), [](const auto& a, const auto& b) { return a.size() != b.size() ? a.size() > b.size() : a < b; });
  tok.specials_.erase(std::unique(tok.specials_.begin(), tok.specials_.end()), tok.specials_.end());
  if (tok.max_length_ < 2 || tok.max_length_ > 4096) tok.max_length_ = 77;  // transformers' "very large" sentinel
  return tok;
}

std::string ClipTokenizer::clean_text(const std::string& text) {
  const std::u32string fixed = ftfy_fixes(unescape_html(decode_utf8(text)));
  std::u32string out;  // whitespace_clean: \s+ -> ' ', strip; then lower()
  for (char32_t c : fixed) {
    if (is_space(c)) {
      if (!out.empty() && out.back() != U' ') out.push_back(U' ');
    } else {
      out.push_back(to_lower(c));
    }
  }
  if (!out.empty() && out.back() == U' ') out.pop_back();
  return encode_utf8(out);
}

std::string ClipTokenizer::bpe(const std::string& token) const {
  // Split into code points (as UTF-8 strings); the last one carries the end-of-word marker.
  std::vector<std::string> word;
  for (char32_t cp : decode_utf8(token)) {
    word.emplace_back();
    append_utf8(word.back(), cp);
  }
  if (word.empty()) return "";
  word.back() += "</w>";
  while (word.size() > 1) {
    int best_rank = INT_MAX;
    std::size_t best = 0;
    for (std::size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = merge_ranks_.find(word[i] + " " + word[i + 1]);
      if (it != merge_ranks_.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == INT_MAX) break;
    const std::string first = word[best], second = word[best + 1];
    std::vector<std::string> merged;
    for (std::size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(word[i++]);
      }
    }
    word = std::move(merged);
  }
  std::string out;
  for (const auto& w : word) out += (out.empty() ? "" : " ") + w;
  return out;
}

std::vector<std::string> ClipTokenizer::bpe_tokens(const std::string& text) const {
  // Special tokens are split out of the raw text first and kept whole, as transformers' added-token
  // trie does: with SD2's pad token "!", every "!" in a prompt becomes the pad id, not "!</w>".
  std::vector<std::string> out;
  std::size_t chunk_start = 0;
  for (std::size_t i = 0; i < text.size();) {
    const auto special = std::find_if(specials_.begin(), specials_.end(),
                                      [&](const std::string& s) { return text.compare(i, s.size(), s) == 0; });
    if (special == specials_.end()) {
      ++i;
      continue;
    }
    append_bpe(text.substr(chunk_start, i - chunk_start), out);
    out.push_back(*special);
    i += special->size();
    chunk_start = i;
  }
  append_bpe(text.substr(chunk_start), out);
  return out;
}

void ClipTokenizer::append_bpe(const std::string& text, std::vector<std::string>& out) const {
  for (const std::u32string& piece : pre_tokenize(decode_utf8(clean_text(text)))) {
    const std::string utf8 = encode_utf8(piece);
    std::string mapped;
    for (unsigned char b : utf8) mapped += byte_encoder()[b];
    std::stringstream pieces(bpe(mapped));
    for (std::string p; std::getline(pieces, p, ' ');) out.push_back(p);
  }
}

int64_t ClipTokenizer::token_id(const std::string& piece) const {
  const auto it = vocab_.find(piece);
  return it == vocab_.end() ? unk_id_ : it->second;
}

std::vector<int64_t> ClipTokenizer::encode_unpadded(const std::string& text) const {
  std::vector<int64_t> ids{bos_id_};
  for (const auto& p : bpe_tokens(text)) ids.push_back(token_id(p));
  ids.push_back(eos_id_);
  return ids;
}

std::vector<int64_t> ClipTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids = encode_unpadded(text);
  const std::size_t max = static_cast<std::size_t>(max_length_);
  if (ids.size() > max) {
    ids.resize(max - 1);
    ids.push_back(eos_id_);
  }
  ids.resize(max, pad_id_);
  return ids;
}

int64_t ClipTokenizer::max_id() const {
  int64_t m = std::max({bos_id_, eos_id_, pad_id_, unk_id_});
  for (const auto& [piece, id] : vocab_) m = std::max(m, id);
  return m;
}

}  // namespace anomalysd
