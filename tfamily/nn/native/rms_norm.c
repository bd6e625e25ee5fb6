/* y = x / rms(x) * w over the last dimension, for bf16 inference (tfamily.nn.native,
 * tfamily.nn.norms.rms_norm).
 *
 * torch 2.13's F.rms_norm on a CPU is composed of elementwise operations: for one bf16 row it
 * dispatches some twenty (casts of x and w to fp32, square, mean, add, rsqrt, two products, a
 * cast back), about 12 us, where the arithmetic takes well under one. A decoding step of a
 * Llama-style model calls it twice a layer. This is the same computation in one call: fp32
 * throughout, as F.rms_norm computes, rounded to bf16 once at the end.
 *
 *   x  (n, d) bf16 rows;  w (d,) bf16;  y (n, d) bf16, written
 *
 * Rows are shared among `threads` threads only when there are many (a prompt); one row runs
 * on the calling thread.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16.h"


void tf_rms_norm_bf16(const uint16_t *x, const uint16_t *w, uint16_t *y, int64_t n, int64_t d, float eps, int threads)
{
#pragma omp parallel for num_threads(threads) schedule(static) if (n * d > 65536)
    for (int64_t r = 0; r < n; r++) {
        const uint16_t *row = x + r * d;
        float lanes[16] = {0.f}, squares = 0.f; /* 16 partial sums: the compiler can vectorise these */
        int64_t i = 0;
        for (; i + 16 <= d; i += 16)
            for (int l = 0; l < 16; l++) {
                float v = from_bf16(row[i + l]);
                lanes[l] += v * v;
            }
        for (; i < d; i++) {
            float v = from_bf16(row[i]);
            squares += v * v;
        }
        for (int l = 0; l < 16; l++)
            squares += lanes[l];
        float scale = 1.f / sqrtf(squares / (float)d + eps);
        for (int64_t i = 0; i < d; i++)
            y[r * d + i] = to_bf16(from_bf16(row[i]) * scale * from_bf16(w[i]));
    }
}
