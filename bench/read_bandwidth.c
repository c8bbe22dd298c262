// One core's read bandwidth at the sizes of the generation step's weights: the memory floor of
// `python -m bench generation` at batch 1 (README, "Fast generation").
//
//   cc -O2 -march=native -o /tmp/read_bandwidth bench/read_bandwidth.c && /tmp/read_bandwidth
//
// For each size, a buffer of floats is summed in 32-byte vectors with four independent
// accumulators, many passes over it; the best pass gives GB/s. 3.51 MB is the network
// (2 stacks of 10 layers, R = G = 64, S = 256), 19.4 MB the large one.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef float v8 __attribute__((vector_size(32)));

static double seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(void) {
  const size_t sizes[] = {256 << 10, 1536 << 10, 3511296, 8 << 20, 19400000};
  for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); ++s) {
    const size_t n = sizes[s] / sizeof(float) / 32 * 32;
    float* a = aligned_alloc(64, n * sizeof(float));
    if (!a) return 1;
    for (size_t i = 0; i < n; ++i) a[i] = 1e-6f * (float)(i % 1000);
    const int passes = sizes[s] < 100000000 ? (int)(2e9 / sizes[s]) + 5 : 5;
    double best = 1e30;
    float sink = 0;
    for (int p = 0; p < passes; ++p) {
      const double start = seconds();
      v8 c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
      const v8* v = (const v8*)a;
      for (size_t i = 0; i < n / 8; i += 4) {
        c0 += v[i];
        c1 += v[i + 1];
        c2 += v[i + 2];
        c3 += v[i + 3];
      }
      const v8 c = (c0 + c1) + (c2 + c3);
      sink += c[0] + c[7];
      const double took = seconds() - start;
      if (took < best) best = took;
    }
    printf("%8.2f MB: %6.1f GB/s (checksum %g)\n", n * sizeof(float) / 1e6,
           n * sizeof(float) / best / 1e9, sink);
    free(a);
  }
  return 0;
}
