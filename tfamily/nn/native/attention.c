/* A decoding step's self-attention for one new token a row, from the q|k|v projection to the
 * merged heads, bf16 on a CPU (tfamily.nn.native.attend_step, tfamily.nn.attention.Attention):
 * the new key turned by its rotary angle and written with its value into the KV cache, then
 * softmax(scale q k^T) v over every cached key, with q turned the same way.
 *
 * Why one call: in eager PyTorch this part of a layer is some thirty operations (split, the
 * rotary products, transposes, two cache writes, scaled_dot_product_attention, the heads
 * merged), 135-155 us a layer in a decoding step of Qwen2.5-0.5B where the arithmetic takes a
 * few: each dispatch is slow there because the weight matmul before it has just streamed
 * megabytes through the caches that the interpreter's code and data live in. One call has one
 * dispatch and a small footprint.
 *
 *   qkv     (B, H + 2 Hkv, D)  the projection of the new token: q heads, k heads, v heads; contiguous
 *   cos, sin (B, D)            rotary tables of the token's position (sin with its first half
 *                              negated: tfamily.nn.positions.head_tables), or both NULL
 *   kc, vc  the layer's cache, (B, Hkv, max_len, D): row b, head g, slot t at b cb + g ch + t D
 *   pos     slots filled before this token: k and v go into slot pos, keys 0..pos are attended
 *   valid   (B, pos + 1) bytes, row b at b vb (vb 0: one row for all), 0 where a key is masked
 *           out (padding); or NULL: every key
 *   y       (B, H, D) written, contiguous (the heads merged)
 *
 * The rotary turn rounds as torch's bf16 operations do (x cos and swapped x sin each to bf16,
 * then their sum), so the cache holds the very keys the eager path writes. The attention: each
 * head's scores q.k_j (bf16 products summed in fp32), softmax in fp32 with the running maximum
 * of flash attention (the scores of a chunk of keys, then the chunk's values, rescaled when the
 * maximum grows), one rounding to bf16 at the end. Query head h reads key/value head
 * h / (H / Hkv) (grouped-query attention). Heads are shared among `threads` threads only when
 * there is enough to share (a long cache). With AVX-512 BF16 the products and exponentials are
 * vectorised; without, the same loop in plain C (tests check both).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16.h"
#include "exp16.h"
#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define ATTEND_SIMD 1
#include <immintrin.h>
#else
#define ATTEND_SIMD 0
#endif

#define CHUNK 64       /* keys whose scores are made before their values are summed */
#define MAX_D 256      /* widest head (the caller checks) */
#define SHARE_WORK 2048 /* heads x keys from which the heads are shared among threads (measured) */

int tf_attend_simd(void) { return ATTEND_SIMD; }

/* one head: q (D,), keys and values S apart by ks / vs, valid (S,) bytes (0: key masked out) or
 * NULL -> y (D,). Inlined with D a constant where the caller can (64, 128), so that the sums
 * stay in registers. A masked key's score is -inf; its weight e^(-inf - max) is 0 (or below
 * 2^-149 from exp16) */
static inline __attribute__((always_inline)) void attend_head(const uint16_t *q, const uint16_t *k, int64_t ks,
                                                              const uint16_t *v, int64_t vs, const uint8_t *valid,
                                                              uint16_t *y, int64_t S, const int64_t D, float scale)
{
    float acc[MAX_D], scores[CHUNK], best = -INFINITY, total = 0.f;
    for (int64_t d = 0; d < D; d++)
        acc[d] = 0.f;
#if ATTEND_SIMD
    const int simd = D % 32 == 0;
    __m512 vacc[MAX_D / 16];
    for (int64_t d = 0; d < D / 16; d++)
        vacc[d] = _mm512_setzero_ps();
#endif
    for (int64_t j0 = 0; j0 < S; j0 += CHUNK) {
        int64_t n = S - j0 < CHUNK ? S - j0 : CHUNK;
        float top = best;
#if ATTEND_SIMD
        if (simd) {
            for (int64_t j = 0; j < n; j++) {
                const uint16_t *kj = k + (j0 + j) * ks;
                __m512 dot = _mm512_setzero_ps();
                for (int64_t d = 0; d < D; d += 32)
                    dot = _mm512_dpbf16_ps(dot, (__m512bh)_mm512_loadu_si512(q + d),
                                           (__m512bh)_mm512_loadu_si512(kj + d));
                scores[j] = _mm512_reduce_add_ps(dot) * scale;
            }
            if (valid)
                for (int64_t j = 0; j < n; j++)
                    scores[j] = valid[j0 + j] ? scores[j] : -INFINITY;
            for (int64_t j = 0; j < n; j++)
                top = scores[j] > top ? scores[j] : top;
        } else
#endif
        {
            for (int64_t j = 0; j < n; j++) {
                const uint16_t *kj = k + (j0 + j) * ks;
                float dot = 0.f;
                for (int64_t d = 0; d < D; d++)
                    dot += from_bf16(q[d]) * from_bf16(kj[d]);
                scores[j] = valid && !valid[j0 + j] ? -INFINITY : dot * scale;
                top = scores[j] > top ? scores[j] : top;
            }
        }
        if (top == -INFINITY) /* every key so far masked out: nothing to add */
            continue;
        /* the maximum grew: what was summed so far shrinks by e^(old - new) */
        float shrink = expf(best - top);
        total *= shrink;
        best = top;
        int64_t j = 0;
#if ATTEND_SIMD
        if (simd) {
            for (int64_t d = 0; d < D / 16; d++)
                vacc[d] = _mm512_mul_ps(vacc[d], _mm512_set1_ps(shrink));
            for (; j + 16 <= n; j += 16)
                _mm512_storeu_ps(scores + j, exp16(_mm512_sub_ps(_mm512_loadu_ps(scores + j), _mm512_set1_ps(top))));
            for (; j < n; j++)
                scores[j] = expf(scores[j] - top);
            for (j = 0; j < n; j++) {
                const uint16_t *vj = v + (j0 + j) * vs;
                __m512 p = _mm512_set1_ps(scores[j]);
                total += scores[j];
                for (int64_t d = 0; d < D / 16; d++)
                    vacc[d] = _mm512_fmadd_ps(p, bf16x16(vj + 16 * d), vacc[d]);
            }
            continue;
        }
#endif
        for (int64_t d = 0; d < D; d++)
            acc[d] *= shrink;
        for (; j < n; j++)
            scores[j] = expf(scores[j] - top);
        for (j = 0; j < n; j++) {
            const uint16_t *vj = v + (j0 + j) * vs;
            total += scores[j];
            for (int64_t d = 0; d < D; d++)
                acc[d] += scores[j] * from_bf16(vj[d]);
        }
    }
#if ATTEND_SIMD
    if (simd)
        for (int64_t d = 0; d < D / 16; d++)
            _mm512_storeu_ps(acc + 16 * d, vacc[d]);
#endif
    for (int64_t d = 0; d < D; d++)
        y[d] = to_bf16(acc[d] / total);
}

/* x cos + swapped sin, each product rounded to bf16 and then their sum, as torch computes it */
static inline uint16_t turn(uint16_t x, uint16_t swapped, uint16_t c, uint16_t s)
{
    float a = from_bf16(to_bf16(from_bf16(x) * from_bf16(c)));
    float b = from_bf16(to_bf16(from_bf16(swapped) * from_bf16(s)));
    return to_bf16(a + b);
}

/* one head (D,) turned by the tables (or copied, without them) into out */
static void turn_head(const uint16_t *x, const uint16_t *cos, const uint16_t *sin, uint16_t *out, int64_t D)
{
    int64_t half = D / 2;
    if (!cos) {
        memcpy(out, x, D * sizeof(uint16_t));
        return;
    }
    for (int64_t i = 0; i < D; i++)
        out[i] = turn(x[i], x[i < half ? i + half : i - half], cos[i], sin[i]);
}

void tf_attend_step_bf16(const uint16_t *qkv, const uint16_t *cos, const uint16_t *sin, uint16_t *kc, uint16_t *vc,
                         int64_t cb, int64_t ch, int64_t pos, const uint8_t *valid, int64_t vb, uint16_t *y, int64_t B,
                         int64_t H, int64_t Hkv, int64_t D, float scale, int threads)
{
    const int64_t heads = H + 2 * Hkv, group = H / Hkv, S = pos + 1;
    for (int64_t b = 0; b < B; b++) /* the new keys and values into slot pos */
        for (int64_t g = 0; g < Hkv; g++) {
            const uint16_t *row = qkv + b * heads * D;
            turn_head(row + (H + g) * D, cos ? cos + b * D : NULL, sin ? sin + b * D : NULL,
                      kc + b * cb + g * ch + pos * D, D);
            memcpy(vc + b * cb + g * ch + pos * D, row + (H + Hkv + g) * D, D * sizeof(uint16_t));
        }
#pragma omp parallel for num_threads(threads) schedule(static) if (B * H * S >= SHARE_WORK)
    for (int64_t bh = 0; bh < B * H; bh++) {
        int64_t b = bh / H, h = bh % H, g = h / group;
        uint16_t q[MAX_D];
        turn_head(qkv + (b * heads + h) * D, cos ? cos + b * D : NULL, sin ? sin + b * D : NULL, q, D);
        const uint16_t *k = kc + b * cb + g * ch, *v = vc + b * cb + g * ch;
        const uint8_t *ok = valid ? valid + b * vb : NULL;
        if (D == 64)
            attend_head(q, k, D, v, D, ok, y + bh * D, S, 64, scale);
        else if (D == 128)
            attend_head(q, k, D, v, D, ok, y + bh * D, S, 128, scale);
        else
            attend_head(q, k, D, v, D, ok, y + bh * D, S, D, scale);
    }
}
