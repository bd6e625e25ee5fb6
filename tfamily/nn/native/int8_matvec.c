/* y = (x W^T) * scale + bias for a few rows of x, with W stored as int8 rows (tfamily.nn.native).
 *
 * Decoding one token multiplies one row of activations by every weight matrix, reading each
 * weight once: the speed is the speed at which W streams from memory. For one row, torch
 * 2.13's _weight_int8pack_mm took 1.4-3.3x as long as this loop on the matrices of
 * Qwen2.5-0.5B and SmolLM2-135M (benchmarks/RESULTS.md); from two rows on it is as fast or
 * faster, so tfamily calls this for one row only. What it takes:
 *
 *   - eight weight rows per pass over x: eight independent sums (an FMA's latency hidden),
 *     and each 16 values of x converted once for all eight rows;
 *   - int8 -> fp32 by one sign-extending load and one conversion per 16 weights (AVX-512);
 *   - a prefetch of the same place in the next eight rows, so the next block is on its way
 *     while this one is summed (without it, 12 GB/s: the rows are short, 896 bytes for Qwen,
 *     too short for the hardware prefetchers to ramp up).
 *
 *   x      (n, in)   bf16, row-major
 *   w      (out, in) int8, row-major
 *   scale  (out,)    bf16: row o of the real matrix is w[o] * scale[o]
 *   bias   (out,)    bf16, or NULL
 *   y      (n, out)  bf16, written (the fp32 sum rounded to nearest even, as torch rounds)
 *
 * Sums are fp32. Without AVX-512 the same loop in plain C (the compiler vectorises what it
 * can). Built with -O3 -march=native -fopenmp by tfamily.nn.native on first use; the OpenMP
 * runtime is the one torch already loaded (the same soname), so `threads` threads of torch's
 * own pool split the output rows.
 */
#include <stdint.h>
#include <string.h>

#include "bf16.h"
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define ROWS 8 /* weight rows summed together */


/* s[j] = sum_i w[j * in + i] * x[i] for the first `rows` rows at w, from index `from` on */
static void dot_tail(const int8_t *w, int64_t in, int rows, const uint16_t *x, int64_t from, float *s)
{
    for (int j = 0; j < rows; j++)
        for (int64_t i = from; i < in; i++)
            s[j] += (float)w[j * in + i] * from_bf16(x[i]);
}

/* s[0..ROWS) = the sums of ROWS full rows at w with x */
static void dot_rows(const int8_t *w, int64_t in, const uint16_t *x, float *s)
{
    int64_t i = 0;
#if defined(__AVX512F__)
    __m512 acc[ROWS];
    for (int j = 0; j < ROWS; j++)
        acc[j] = _mm512_setzero_ps();
    for (; i + 16 <= in; i += 16) {
        __m256i x16 = _mm256_loadu_si256((const __m256i *)(x + i));
        __m512 xv = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(x16), 16)); /* bf16 -> fp32 */
        for (int j = 0; j < ROWS; j++) {
            const int8_t *p = w + j * in + i;
            _mm_prefetch((const char *)(p + ROWS * in), _MM_HINT_T0); /* the next block's row */
            __m512 wv = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
            acc[j] = _mm512_fmadd_ps(wv, xv, acc[j]);
        }
    }
    for (int j = 0; j < ROWS; j++)
        s[j] = _mm512_reduce_add_ps(acc[j]);
#else
    for (int j = 0; j < ROWS; j++)
        s[j] = 0.f;
#endif
    dot_tail(w, in, ROWS, x, i, s);
}

void tf_int8_matvec_bf16(const uint16_t *x, const int8_t *w, const uint16_t *scale, const uint16_t *bias,
                         uint16_t *y, int64_t n, int64_t in, int64_t out, int threads)
{
    int64_t blocks = (out + ROWS - 1) / ROWS;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t o = ROWS * b;
        int rows = out - o < ROWS ? (int)(out - o) : ROWS;
        for (int64_t r = 0; r < n; r++) {
            const uint16_t *xr = x + r * in;
            float s[ROWS] = {0.f};
            if (rows == ROWS)
                dot_rows(w + o * in, in, xr, s);
            else /* the last rows, fewer than ROWS */
                dot_tail(w + o * in, in, rows, xr, 0, s);
            for (int j = 0; j < rows; j++) {
                float v = s[j] * from_bf16(scale[o + j]);
                if (bias)
                    v += from_bf16(bias[o + j]);
                y[r * out + o + j] = to_bf16(v);
            }
        }
    }
}
