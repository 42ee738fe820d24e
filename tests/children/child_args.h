// The command line of the child programs (tests/children/*_child.cc and
// tests/crash/torture_child.cc): `<program> key=value ...`. A program binds
// each key it knows to a field of its configuration, then parses argv. An
// argument without '=', a key nobody bound and a value that does not parse
// make Parse() fail (the program exits 2); a key given twice takes the later
// value. What is required, and which values go together, the program checks
// after Parse().
//
// Header-only: the children link neither GoogleTest nor rill_test_util.
#ifndef RILL_TESTS_CHILDREN_CHILD_ARGS_H_
#define RILL_TESTS_CHILDREN_CHILD_ARGS_H_

#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"

namespace rill::testing {

class ChildArgs {
 public:
  // key=V sets *out to V.
  void String(const std::string& key, std::string* out) {
    Custom(key, [out](const std::string& v) {
      *out = v;
      return true;
    });
  }

  // key=N sets *out to the integer N; a value absl::SimpleAtoi rejects is an
  // error.
  template <typename T>
  void Number(const std::string& key, T* out) {
    Custom(key, [out](const std::string& v) { return absl::SimpleAtoi(v, out); });
  }

  // key=1 sets *out to true, any other value to false.
  void Flag(const std::string& key, bool* out) {
    Custom(key, [out](const std::string& v) {
      *out = v == "1";
      return true;
    });
  }

  // key=V calls set(V), which returns false when V is not a valid value.
  void Custom(const std::string& key, std::function<bool(const std::string&)> set) {
    setters_[key] = std::move(set);
  }

  // Parses argv[1..argc-1]; false on the first bad argument.
  [[nodiscard]] bool Parse(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      const size_t eq = arg.find('=');
      if (eq == std::string::npos) return false;
      const auto it = setters_.find(arg.substr(0, eq));
      if (it == setters_.end() || !it->second(arg.substr(eq + 1))) return false;
      given_.insert(it->first);
    }
    return true;
  }

  // True once Parse() has met `key`.
  bool Given(const std::string& key) const { return given_.count(key) > 0; }

 private:
  std::map<std::string, std::function<bool(const std::string&)>> setters_;
  std::set<std::string> given_;
};

}  // namespace rill::testing

#endif  // RILL_TESTS_CHILDREN_CHILD_ARGS_H_
