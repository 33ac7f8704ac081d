#pragma once
// The run state checkpointed into a results file after every step, so that `moebench run --resume`
// can continue a partial file (SCHEMA.md, /checkpoint). Two slots, /checkpoint/slot0 and
// /checkpoint/slot1: the state after step s (steps_done = s + 1) goes to slot (s + 1) % 2, so the
// slot that the file's steps_done names is never overwritten before steps_done moves on (a run
// killed mid-write leaves the previous checkpoint whole). Each slot holds one byte blob per
// process: state (uint8, the blobs back to back), offsets (int64 [world_size + 1]) and the
// attributes steps_done and world_size.
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "harness/core/comm.hpp"

namespace moe {

// Collective over `world` (parallel file): writes this process's blob into the slot of steps_done.
void write_checkpoint(hid_t file, hid_t dxpl, int64_t steps_done, const std::vector<char>& blob,
                      const Comm& world);

// Reads the blob of process `rank` out of the slot of steps_done (a file opened by this process
// alone). Throws InputError naming `path` when the slot is missing or does not match.
std::vector<char> read_checkpoint(hid_t file, const std::string& path, int64_t steps_done, int rank,
                                  int world_size);

}  // namespace moe
