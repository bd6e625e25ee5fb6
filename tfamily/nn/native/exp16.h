/* e^x for 16 fp32 lanes with AVX-512, for tfamily's native kernels (included by attention.c and
 * gated.c; its text is part of their build hash, tfamily.nn.native.library).
 *
 * e^x = 2^n 2^f with n = round(x log2 e) and f in [-1/2, 1/2]: 2^f = e^(f ln 2) by its Taylor
 * series to the 7th power (relative error below 2e-8, under fp32's half step), 2^n by scalef.
 * x is clamped to [-104, 88.7]: below, the result is 0 or the smallest denormal; above, e^88.7,
 * near fp32's largest number. */
#ifndef TFAMILY_EXP16_H
#define TFAMILY_EXP16_H
#if defined(__AVX512F__)
#include <immintrin.h>

static inline __m512 exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.f)), _mm512_set1_ps(88.7f));
    __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.693147180559945309f)); /* f ln 2 */
    static const float c[8] = {1.f / 5040, 1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f};
    __m512 p = _mm512_set1_ps(c[0]);
    for (int i = 1; i < 8; i++)
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c[i]));
    return _mm512_scalef_ps(p, n);
}
#endif
#endif
