#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>

namespace moe {

// Knobs of one component (a router, a workload), from `--router-arg NAME.key=value`. The component
// reads what it knows; reject_unknown() then turns any key it never asked for into an error.
class ComponentArgs {
 public:
  ComponentArgs(std::string kind, std::string owner, std::map<std::string, std::string> values = {});

  double get_double(const std::string& key, double fallback);
  int64_t get_int(const std::string& key, int64_t fallback);
  bool get_bool(const std::string& key, bool fallback);
  std::string get_string(const std::string& key, const std::string& fallback);

  // Throws InputError naming the first unknown key and the known ones.
  void reject_unknown() const;
  const std::map<std::string, std::string>& values() const { return values_; }

 private:
  std::string label(const std::string& key) const;
  std::string kind_;
  std::string owner_;
  std::map<std::string, std::string> values_;
  std::set<std::string> known_;
};

}  // namespace moe
