// Preloaded (LD_PRELOAD=build/bench/malloc_count.so) under bench_chain_cpu,
// which then prints heap allocations per create: what decides how the hook
// chain fares when the relay's work between calls has evicted its caches.
#include <cstddef>

extern "C" {
void* __libc_malloc(size_t size);

namespace {
unsigned long allocations = 0;  // bench_chain_cpu calls malloc from one thread
}

void* malloc(size_t size) {
  allocations++;
  return __libc_malloc(size);
}

unsigned long owrap_malloc_count() {
  return allocations;
}
}
