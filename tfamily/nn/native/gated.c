/* h = silu(a) * g, the gated MLP's activation (SwiGLU: Llama, Qwen, SmolLM2), for bf16
 * inference on a CPU (tfamily.nn.native.silu_gate, tfamily.nn.mlp.MLP).
 *
 * With the gate and up projections fused into one matmul (MLP.fuse_gate), the MLP's middle is
 * three operations in eager PyTorch: split the output in two, silu of the first half, times
 * the second. In a decoding step they took some 50-90 us a layer of Qwen2.5-0.5B, right after
 * the largest matmul of the layer has streamed megabytes through the caches the interpreter
 * works from. This is one call, rounded as torch rounds: silu(a) computed in fp32 and rounded
 * to bf16, then the product with g in fp32, rounded again.
 *
 *   ag  (n, 2f) bf16 rows: a in columns [0, f), g in [f, 2f)
 *   h   (n, f)  bf16, written
 */
#include <math.h>
#include <stdint.h>

#include "bf16.h"
#include "exp16.h"

static inline float silu_product(float a, float g)
{
    float s = from_bf16(to_bf16(a / (1.f + expf(-a))));
    return s * g;
}

void tf_silu_gate_bf16(const uint16_t *ag, uint16_t *h, int64_t n, int64_t f, int threads)
{
#pragma omp parallel for num_threads(threads) schedule(static) if (n * f > 65536)
    for (int64_t r = 0; r < n; r++) {
        const uint16_t *a = ag + r * 2 * f, *g = a + f;
        uint16_t *out = h + r * f;
        int64_t i = 0;
#if defined(__AVX512F__) && defined(__AVX512BF16__)
        for (; i + 16 <= f; i += 16) {
            __m512 x = bf16x16(a + i);
            __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x)); /* e^-a */
            __m512 s = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.f), e));
            s = _mm512_cvtpbh_ps(_mm512_cvtneps_pbh(s)); /* rounded to bf16, as F.silu returns it */
            _mm256_storeu_si256((__m256i *)(out + i), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(s, bf16x16(g + i))));
        }
#endif
        for (; i < f; i++)
            out[i] = to_bf16(silu_product(from_bf16(a[i]), from_bf16(g[i])));
    }
}
