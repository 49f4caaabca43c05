#include "anomalysd/data/prompts.h"

#include <algorithm>

#include "anomalysd/io/config.h"
#include "anomalysd/io/errors.h"

namespace anomalysd {

std::vector<std::string> ClassPrompts::all() const {
  std::vector<std::string> out;
  if (!coarse.empty()) out.push_back(coarse);
  out.insert(out.end(), detailed.begin(), detailed.end());
  return out;
}

std::string readable_class_name(const std::string& cls) {
  std::string out = cls;
  std::replace(out.begin(), out.end(), '_', ' ');
  return out;
}

PromptBook PromptBook::load(const std::vector<std::string>& files) {
  PromptBook book;
  for (const std::string& file : files) {
    const ConfigSource source = load_config_file(file);
    ConfigSection root = ConfigSection::root(source);
    for (auto it = source.root.begin(); it != source.root.end(); ++it) {
      const std::string cls = it->first.Scalar();
      ConfigSection entry = root.section(cls);
      ClassPrompts p;
      p.coarse = entry.get_string("coarse", "A perfect " + readable_class_name(cls) + ".");
      p.detailed = entry.get_string_list("detailed", {});
      p.foreground = entry.get_string("foreground", "");
      if (!p.foreground.empty() && p.foreground != "object" && p.foreground != "texture")
        throw entry.error("foreground", "key '" + cls + ".foreground' = '" + p.foreground + "' is not one of: object, texture");
      for (const auto& d : p.detailed)
        if (d.empty()) throw entry.error("detailed", "key '" + cls + ".detailed' holds an empty prompt");
      entry.finish();
      p.source = file;
      book.classes_[cls] = p;
    }
  }
  return book;
}

ClassPrompts PromptBook::for_class(const std::string& cls) const {
  const auto it = classes_.find(cls);
  if (it != classes_.end()) return it->second;
  ClassPrompts p;
  p.coarse = "A perfect " + readable_class_name(cls) + ".";
  p.source = "fallback";
  return p;
}

}  // namespace anomalysd
