/* bf16 <-> fp32 for tfamily's native kernels (included by each .c file of this folder; its text
 * is part of every library's build hash, tfamily.nn.native.library). */
#ifndef TFAMILY_BF16_H
#define TFAMILY_BF16_H
#include <stdint.h>
#include <string.h>

static inline float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* rounded to nearest even, as torch rounds; a NaN stays a (quiet) NaN */
static inline uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#if defined(__AVX512F__)
#include <immintrin.h>

static inline __m512 bf16x16(const uint16_t *p) /* 16 bf16 -> 16 fp32 */
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
#endif
#endif
