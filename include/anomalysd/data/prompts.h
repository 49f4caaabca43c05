// Hierarchical prompts (paper §4.1–4.2): per class a coarse prompt 𝒯_c¹ ("A perfect [c].") and
// detailed ones 𝒯_c², read from prompts/*.yaml. Fine-tuning draws one per sample; inference
// conditions on the average embedding of all of them. Torch-free.
//
// File format (see prompts/README.md):
//   bottle:
//     coarse: "A perfect bottle."
//     detailed: ["A bottle seen from above ...", ...]
//     foreground: object        # optional: object | texture (the fine-tuning foreground mask)
#pragma once

#include <map>
#include <string>
#include <vector>

namespace anomalysd {

struct ClassPrompts {
  std::string coarse;                 // 𝒯_c¹
  std::vector<std::string> detailed;  // 𝒯_c²
  std::string foreground;             // "", object or texture
  std::string source;                 // the file it came from, or "fallback"

  std::vector<std::string> all() const;  // coarse first, then the detailed ones
};

// "metal_nut" -> "metal nut": class folder names as words.
std::string readable_class_name(const std::string& cls);

class PromptBook {
 public:
  // Later files override earlier ones class by class. Errors name file:line:col.
  static PromptBook load(const std::vector<std::string>& files);

  // The class's prompts, or "A perfect [c]." from the folder name when the files lack it.
  ClassPrompts for_class(const std::string& cls) const;
  bool has(const std::string& cls) const { return classes_.count(cls) != 0; }
  std::size_t size() const { return classes_.size(); }

 private:
  std::map<std::string, ClassPrompts> classes_;
};

}  // namespace anomalysd
