#!/usr/bin/env bash
# The peak arithmetic rate of one core in float32 FMA (vfmadd231ps) and in bfloat16 dot products
# (vdpbf16ps, AVX512-BF16), 512-bit, 28 independent accumulators. Whether `dtype: bfloat16` can pay
# on a CPU is decided here: on an Intel Xeon with AVX512-BF16 but no AMX the dot product retires half
# the FLOPs of float32's FMA, so no bfloat16 kernel can beat float32 there (README, "Half precision").
#   scripts/cpu_bf16_peak.sh        # needs gcc and a CPU with avx512_bf16
set -euo pipefail
grep -qw avx512_bf16 /proc/cpuinfo || { echo "cpu_bf16_peak: this CPU has no avx512_bf16" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 - "$dir/peak.c" <<'PY'
import sys
n = 28  # accumulators: enough to hide either instruction's latency; 32 zmm registers in all
acc = ",".join(f"a{i}=_mm512_setzero_ps()" for i in range(n))
fma = "".join(f"a{i}=_mm512_fmadd_ps(b,c,a{i});" for i in range(n))
dot = "".join(f"a{i}=_mm512_dpbf16_ps(a{i},bb,cb);" for i in range(n))
# keep the accumulators in registers and the loops alive (an asm statement takes 30 operands at most)
keep = "".join('__asm__ volatile("" : ' + ",".join(f'"+v"(a{i})' for i in r) + ");" for r in (range(0, 14), range(14, n)))
open(sys.argv[1], "w").write(f"""#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(void) {{ struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }}
int main(void) {{
  const long N = 30000000;
  __m512 {acc};
  __m512 b = _mm512_set1_ps(1.0001f), c = _mm512_set1_ps(0.9999f);
  __m512bh bb = (__m512bh)_mm512_set1_epi16(0x3f80), cb = bb;
  double t = now();
  for (long k = 0; k < N; k++) {{ {fma} {keep} }}
  const double t_fma = now() - t;
  t = now();
  for (long k = 0; k < N; k++) {{ {dot} {keep} }}
  const double t_dot = now() - t;
  printf("one core: float32 FMA %.1f GFLOP/s, bfloat16 dot product %.1f GFLOP/s (%.2fx)  [%g]\\n", N * {n} * 32 / t_fma / 1e9,
         N * {n} * 64 / t_dot / 1e9, (N * {n} * 64 / t_dot) / (N * {n} * 32 / t_fma), _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)));
  return 0;
}}
""")
PY
gcc -O2 -mavx512f -mavx512bf16 "$dir/peak.c" -o "$dir/peak"
grep -m1 "model name" /proc/cpuinfo
"$dir/peak"
