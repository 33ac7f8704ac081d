#pragma once
// Makes a failure of one process a failure of all: `agree(world, f)` runs f on every process of
// `world`; when f throws on some of them, every process throws the same error (the message of the
// lowest failing rank; InputError stays InputError). For setup steps that may fail on one process
// alone (its own rows of an input file): without it, that process would exit while the others wait
// in the next collective. f itself must not stop between collectives.
#include <cstdint>
#include <limits>
#include <string>

#include "harness/core/comm.hpp"
#include "harness/core/error.hpp"

namespace moe {

template <class F>
void agree(const Comm& world, F&& f) {
  std::string msg;
  int64_t kind = 0;  // 0: fine, 1: error, 2: input error
  try {
    f();
  } catch (const InputError& e) {
    msg = e.what();
    kind = 2;
  } catch (const std::exception& e) {
    msg = e.what();
    kind = 1;
  }
  const int64_t first =
      world.min(kind ? static_cast<int64_t>(world.rank()) : std::numeric_limits<int64_t>::max());
  if (first == std::numeric_limits<int64_t>::max()) return;
  const int root = static_cast<int>(first);
  int64_t head[2] = {kind, static_cast<int64_t>(msg.size())};
  world.bcast(std::span<char>(reinterpret_cast<char*>(head), sizeof head), root);
  msg.resize(static_cast<size_t>(head[1]));
  world.bcast(std::span<char>(msg.data(), msg.size()), root);
  if (head[0] == 2) throw InputError(msg);
  throw Error(msg);
}

}  // namespace moe
