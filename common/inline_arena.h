// A protobuf Arena whose first block lies inside the object that holds it:
// messages made on it cost no allocation of their own until the block is
// full, and the holder is one allocation. Make a holder with
// std::make_shared_for_overwrite: std::make_shared value-initializes, which
// zeroes the whole block first for a type without a user-provided constructor.
#pragma once

#include <google/protobuf/arena.h>

#include <cstddef>

namespace owrap {

template <size_t kBlock>
struct InlineArena {
  alignas(std::max_align_t) char block[kBlock];
  google::protobuf::Arena arena;

  // `options`: growth past the block (start_block_size, max_block_size...).
  explicit InlineArena(google::protobuf::ArenaOptions options = {}) : arena(with_block(options, block)) {}

 private:
  static google::protobuf::ArenaOptions with_block(google::protobuf::ArenaOptions options, char* first) {
    options.initial_block = first;
    options.initial_block_size = kBlock;
    return options;
  }
};

}  // namespace owrap
