#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace moe {

// name -> (one-line description, factory). One registry per kind of component; components add
// themselves from their own file with a static Registrar.
template <class Factory>
class Registry {
 public:
  struct Entry {
    std::string description;
    Factory factory;
  };
  static Registry& instance() {
    static Registry r;
    return r;
  }
  void add(const std::string& name, std::string description, Factory factory) {
    entries_[name] = Entry{std::move(description), std::move(factory)};
  }
  const Entry* find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [name, entry] : entries_) out.push_back(name);
    return out;
  }
  const std::map<std::string, Entry>& entries() const { return entries_; }

  struct Registrar {
    Registrar(const std::string& name, std::string description, Factory factory) {
      Registry::instance().add(name, std::move(description), std::move(factory));
    }
  };

 private:
  std::map<std::string, Entry> entries_;
};

std::string join(const std::vector<std::string>& items, const std::string& sep = ", ");

}  // namespace moe
