/* y = x W^T + bias with W in one of GGUF's block formats, read as the file stores it
 * (tfamily.nn.native, tfamily.nn.quant.GGUFLinear).
 *
 * Decoding a token reads every weight once, so its speed is the speed at which the weights
 * stream from memory: a 5-bit tensor read as 5 bits goes 1.45x faster than the same tensor
 * widened to int8. This file multiplies directly from GGUF's blocks:
 *
 *   kind  block  bytes  one weight
 *   Q4_0   32    18     d (q - 8)              q: 4 bits; d: fp16 per block
 *   Q4_1   32    20     d q + m                m: fp16 per block
 *   Q5_0   32    22     d (q - 16)             q: 5 bits (4 low bits, then one high bit each)
 *   Q5_1   32    24     d q + m
 *   Q8_0   32    34     d q                    q: signed 8 bits
 *   Q4_K  256   144     d sc_j q - dmin m_j    8 sub-blocks of 32 with 6-bit sc_j, m_j
 *   Q6_K  256   210     d sc_j (q - 32)        q: 6 bits; 16 sub-blocks of 16 with int8 sc_j
 *
 * (the layouts of ggml's ggml-common.h; tests/nn/test_native_gguf.py checks every kind against
 * the `gguf` package's own dequantisation).
 *
 * How (the way llama.cpp does it on x86): each row of x is cut into blocks of 32 and quantised
 * to int8 with one fp32 scale per block (absmax / 127). A block of weights is unpacked to 32
 * bytes and multiplied with the matching block of x by one VNNI instruction (u8 x s8 -> int32
 * sums of 4 products each); the sums are scaled in fp32. Unsigned codes (4, 5, 6 bits) go
 * straight in: a fixed offset (Q4_0's 8, Q5_0's 16, Q6_K's 32) is where those sums start,
 * -offset * (x's sums of 4, made with x), and a float one (Q4_1's m, Q4_K's dmin m_j) is added
 * once a block as m * sum(x block). Q8_0's signed codes go by the sign trick, |w| x (x * sign w).
 * Rounding x to int8 costs what llama.cpp's Q8 activations cost (tests bound the error;
 * benchmarks/RESULTS.md measures it on whole models).
 *
 * The threads split the output rows into contiguous ranges of tiles: RT rows of W at once,
 * which is RT streams of weights in flight (one stream was measured at 9-13 GB/s where eight
 * reach 16-20 on this machine's DRAM), each prefetched AHEAD_TILES tiles ahead; up to XT rows
 * of x are summed against a block unpacked once. Without AVX-512 (BW, VL, VNNI) the same
 * product in plain C, from fp32 values and unquantised x: correct, slow; tf_gguf_simd() says
 * which was built, and tfamily only chooses these layers where it returns 1.
 *
 *   x     (n, in)   bf16 rows;   in a multiple of the kind's block
 *   w     (out, in / block * bytes) the blocks of each row, as in the file
 *   bias  (out,)    bf16, or NULL
 *   y     (n, ldy)  bf16; columns [0, out) written (the caller offsets y for a slice)
 *
 * tf_gguf_dequantize writes the same W as fp32 or bf16 (for many rows of x at once, where a
 * bf16 matmul on the whole matrix beats this loop).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#define GGUF_SIMD 1
#else
#define GGUF_SIMD 0
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

enum { Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K, KINDS };
static const int BLOCK[KINDS] = {32, 32, 32, 32, 32, 256, 256};
static const int BYTES[KINDS] = {18, 20, 22, 24, 34, 144, 210};

#define RT 8                /* rows of W summed at once (independent sums, streams in flight) */
#define XT 2                /* rows of x summed against each unpacked block */
#define AHEAD_TILES 2       /* how far ahead the prefetches run: 1 was slower on 896-byte rows */
#define HINT _MM_HINT_T0    /* (T1 measured no different) */

int tf_gguf_simd(void) { return GGUF_SIMD; }

static inline float from_half(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
#if defined(__F16C__)
    return _cvtsh_ss(h);
#endif
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, u;
    if (exp == 31)
        u = sign | 0x7f800000u | (man << 13);
    else if (exp)
        u = sign | ((exp + 112) << 23) | (man << 13);
    else if (man) { /* subnormal: normalise */
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    } else
        u = sign;
    float f;
    memcpy(&f, &u, 4);
    return f;
}


/* Q4_K's 6-bit scale and min of sub-block j, packed into 12 bytes (ggml's get_scale_min_k4) */
static inline void k4_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* the 32 weights of group g (32 consecutive weights) of one row, as fp32 (inlined where kind
 * is a constant, so that each kind's loops are compiled, and vectorised, on their own) */
static inline __attribute__((always_inline)) void group_values(int kind, const uint8_t *row, int64_t g, float *v)
{
    if (BLOCK[kind] == 32) {
        const uint8_t *b = row + g * BYTES[kind];
        float d = from_half(b);
        if (kind == Q8_0) {
            for (int l = 0; l < 32; l++)
                v[l] = d * (float)(int8_t)b[2 + l];
            return;
        }
        int has_min = kind == Q4_1 || kind == Q5_1, five = kind == Q5_0 || kind == Q5_1;
        float m = has_min ? from_half(b + 2) : (five ? -16.f : -8.f) * d;
        const uint8_t *qh = b + (has_min ? 4 : 2), *qs = qh + (five ? 4 : 0);
        uint32_t high = 0;
        if (five)
            memcpy(&high, qh, 4);
        for (int l = 0; l < 16; l++) {
            int lo = (qs[l] & 0xF) | (five ? ((high >> l) & 1) << 4 : 0);
            int hi = (qs[l] >> 4) | (five ? ((high >> (l + 16)) & 1) << 4 : 0);
            v[l] = d * (float)lo + m;
            v[l + 16] = d * (float)hi + m;
        }
        return;
    }
    const uint8_t *b = row + (g / 8) * BYTES[kind];
    int k = (int)(g % 8);
    if (kind == Q4_K) {
        float d = from_half(b), dmin = from_half(b + 2);
        int sc, m;
        k4_scale_min(b + 4, k, &sc, &m);
        const uint8_t *qs = b + 16 + 32 * (k / 2);
        for (int l = 0; l < 32; l++)
            v[l] = d * (float)sc * (float)((k & 1) ? qs[l] >> 4 : qs[l] & 0xF) - dmin * (float)m;
        return;
    }
    /* Q6_K: two halves of 128; in each, group w takes low (w 0, 1) or high (w 2, 3) nibbles of
     * ql[0..32) (w even) or ql[32..64) (w odd), and bits 2w, 2w+1 of qh[0..32) */
    int h = k / 4, w = k % 4;
    const uint8_t *ql = b + 64 * h + (w & 1) * 32, *qh = b + 128 + 32 * h;
    const int8_t *sc = (const int8_t *)(b + 192) + 8 * h + 2 * w;
    float d = from_half(b + 208);
    for (int l = 0; l < 32; l++) {
        int q = ((w < 2 ? ql[l] & 0xF : ql[l] >> 4) | (((qh[l] >> (2 * w)) & 3) << 4)) - 32;
        v[l] = d * (float)sc[l / 16] * (float)q;
    }
}

static inline __attribute__((always_inline)) void dequantize_row(const int kind, const uint8_t *row, int64_t in,
                                                                  float *yf, uint16_t *yb)
{
    float v[32];
    for (int64_t g = 0; g < in / 32; g++) {
        group_values(kind, row, g, v);
        if (yf)
            memcpy(yf + 32 * g, v, sizeof v);
        else
            for (int l = 0; l < 32; l++)
                yb[32 * g + l] = to_bf16(v[l]);
    }
}

void tf_gguf_dequantize(int kind, const uint8_t *w, int64_t rows, int64_t in, float *yf, uint16_t *yb, int threads)
{
    int64_t row_bytes = in / BLOCK[kind] * BYTES[kind];
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = w + r * row_bytes;
        float *f = yf ? yf + r * in : NULL;
        uint16_t *b = yf ? NULL : yb + r * in;
        switch (kind) { /* one loop per kind, each with its kind a constant */
        case Q4_0: dequantize_row(Q4_0, row, in, f, b); break;
        case Q4_1: dequantize_row(Q4_1, row, in, f, b); break;
        case Q5_0: dequantize_row(Q5_0, row, in, f, b); break;
        case Q5_1: dequantize_row(Q5_1, row, in, f, b); break;
        case Q8_0: dequantize_row(Q8_0, row, in, f, b); break;
        case Q4_K: dequantize_row(Q4_K, row, in, f, b); break;
        case Q6_K: dequantize_row(Q6_K, row, in, f, b); break;
        }
    }
}

#if GGUF_SIMD
/* x as int8 blocks of 32: codes q (n, in); per block a scale d, the sum s = d * sum(q), and
 * c: minus the kind's fixed code offset (8 for Q4_0, 16 for Q5_0, 32 for Q6_K, else 0) times
 * the sums of each 4 codes, the start of the VNNI sums, which then come out already offset */
typedef struct {
    int8_t *q;
    float *d, *s;
    int32_t *c;     /* (n, groups, 8) */
    int64_t groups; /* per row */
} qrows;

static const int OFFSET[KINDS] = {8, 0, 16, 0, 0, 0, 32};

/* one block of 32 values of x (bf16) to int8 codes, its scale, sum and offset start */
static inline void quantize_block(const uint16_t *src, int offset, int8_t *q, float *d, float *s, int32_t *c)
{
    __m512 lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)src)), 16));
    __m512 hi = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + 16))), 16));
    float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
    __m512 inv = _mm512_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
    /* round to nearest even (the default rounding mode), then narrow: 16 int32 -> 16 int8 each */
    __m128i qlo = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(lo, inv)));
    __m128i qhi = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(hi, inv)));
    __m256i codes = _mm256_set_m128i(qhi, qlo);
    _mm256_storeu_si256((__m256i *)q, codes);
    __m256i fours = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), codes); /* sums of 4 */
    _mm256_storeu_si256((__m256i *)c, _mm256_mullo_epi32(fours, _mm256_set1_epi32(-offset)));
    __m128i pairs = _mm_add_epi32(_mm256_castsi256_si128(fours), _mm256_extracti128_si256(fours, 1));
    pairs = _mm_add_epi32(pairs, _mm_shuffle_epi32(pairs, 0x4e));
    pairs = _mm_add_epi32(pairs, _mm_shuffle_epi32(pairs, 0xb1));
    *d = amax / 127.f;
    *s = *d * (float)_mm_cvtsi128_si32(pairs);
}

static void quantize_x(const uint16_t *x, int64_t n, int offset, qrows *xq, int threads)
{
    int64_t total = n * xq->groups;
#pragma omp parallel for num_threads(threads) schedule(static) if (total > 1024)
    for (int64_t b = 0; b < total; b++)
        quantize_block(x + 32 * b, offset, xq->q + 32 * b, xq->d + b, xq->s + b, xq->c + 8 * b);
}

/* x's codes live in a buffer of each calling thread, grown as needed and kept for the next call */
static __thread void *scratch;
static __thread size_t scratch_bytes;

static int scratch_for(qrows *xq, int64_t n, int64_t groups)
{
    size_t need = (size_t)(n * groups) * (32 + 2 * sizeof(float) + 8 * sizeof(int32_t));
    if (need > scratch_bytes) {
        free(scratch);
        scratch = malloc(need);
        scratch_bytes = scratch ? need : 0;
        if (!scratch)
            return 0;
    }
    int64_t blocks = n * groups;
    xq->c = (int32_t *)scratch; /* 32-byte rows first, then the floats */
    xq->q = (int8_t *)(xq->c + 8 * blocks);
    xq->d = (float *)(xq->q + 32 * blocks);
    xq->s = xq->d + blocks;
    xq->groups = groups;
    return 1;
}

/* a tile: RT rows of W (RT independent chains of FMAs, RT streams of weights in flight) times
 * up to XT rows of x; fp32 lanes and the float offsets' sums per pair */
typedef struct {
    __m256 acc[RT][XT];
    float offset[RT][XT];
} sums;

/* 32 unsigned codes q (0..63) of W's row r against group g of x's rows m0..: weights
 * lane_scale * (q - the kind's fixed offset, where `fixed`) + offset (lane_scale: 8 lanes of 4
 * weights; offset: a float per block, where `mins`) */
static inline __attribute__((always_inline)) void add_codes(sums *s, const int r, const int mt, const int fixed,
                                                            const int mins, __m256i q, __m256 lane_scale,
                                                            float offset, const qrows *x, int64_t m0, int64_t g)
{
    for (int j = 0; j < mt; j++) {
        int64_t b = (m0 + j) * x->groups + g;
        __m256i start = fixed ? _mm256_loadu_si256((const __m256i *)(x->c + 8 * b)) : _mm256_setzero_si256();
        __m256i p = _mm256_dpbusd_epi32(start, q, _mm256_loadu_si256((const __m256i *)(x->q + 32 * b)));
        s->acc[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(lane_scale, _mm256_set1_ps(x->d[b])),
                                       s->acc[r][j]);
        if (mins) /* a constant: no code for the kinds without a float offset */
            s->offset[r][j] += offset * x->s[b];
    }
}

/* 32 signed codes q of weights scale * q (Q8_0): |q| x (x * sign q) */
static inline __attribute__((always_inline)) void add_signed(sums *s, const int r, const int mt, __m256i q,
                                                             __m256 scale, const qrows *x, int64_t m0, int64_t g)
{
    __m256i magnitude = _mm256_abs_epi8(q);
    for (int j = 0; j < mt; j++) {
        int64_t b = (m0 + j) * x->groups + g;
        __m256i xs = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(x->q + 32 * b)), q);
        __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), magnitude, xs);
        s->acc[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(scale, _mm256_set1_ps(x->d[b])),
                                       s->acc[r][j]);
    }
}

/* 16 bytes of two codes each -> 32 codes: the low nibbles, then the high ones (the 16 bytes
 * in both halves, the upper half shifted right by 4) */
static inline __m256i nibbles16(const uint8_t *p)
{
    const __m256i shifts = _mm256_set_epi64x(0x0004000400040004, 0x0004000400040004, 0, 0);
    __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    return _mm256_and_si256(_mm256_srlv_epi16(both, shifts), _mm256_set1_epi8(0xF));
}

/* + 16 to each code whose bit is set in the 32 bits at p (Q5's fifth bits) */
static inline __m256i fifth_bits(__m256i q, const uint8_t *p)
{
    uint32_t bits;
    memcpy(&bits, p, 4);
    return _mm256_mask_add_epi8(q, (__mmask32)bits, q, _mm256_set1_epi8(16));
}

/* an fp16 scale in all 8 lanes */
static inline __m256 half8(const uint8_t *p)
{
    return _mm256_cvtph_ps(_mm_broadcastw_epi16(_mm_loadu_si16(p)));
}

/* one block b (group g) of each 32-weight kind into row r's sums */
#define INLINE static inline __attribute__((always_inline))
INLINE void block_q4_0(sums *s, const int r, const int mt, const uint8_t *b, const qrows *x, int64_t m0, int64_t g)
{
    add_codes(s, r, mt, 1, 0, nibbles16(b + 2), half8(b), 0.f, x, m0, g);
}
/* a block's fp16 d and m together: d in 8 lanes, m as a float */
static inline __m256 half_pair(const uint8_t *p, float *m)
{
    uint32_t both;
    memcpy(&both, p, 4);
    __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)both)); /* d, m, 0, 0 */
    *m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
    return _mm256_broadcastss_ps(dm);
}

INLINE void block_q4_1(sums *s, const int r, const int mt, const uint8_t *b, const qrows *x, int64_t m0, int64_t g)
{
    float m;
    __m256 d = half_pair(b, &m);
    add_codes(s, r, mt, 0, 1, nibbles16(b + 4), d, m, x, m0, g);
}
INLINE void block_q5_0(sums *s, const int r, const int mt, const uint8_t *b, const qrows *x, int64_t m0, int64_t g)
{
    add_codes(s, r, mt, 1, 0, fifth_bits(nibbles16(b + 6), b + 2), half8(b), 0.f, x, m0, g);
}
INLINE void block_q5_1(sums *s, const int r, const int mt, const uint8_t *b, const qrows *x, int64_t m0, int64_t g)
{
    float m;
    __m256 d = half_pair(b, &m);
    add_codes(s, r, mt, 0, 1, fifth_bits(nibbles16(b + 8), b + 4), d, m, x, m0, g);
}
INLINE void block_q8_0(sums *s, const int r, const int mt, const uint8_t *b, const qrows *x, int64_t m0, int64_t g)
{
    add_signed(s, r, mt, _mm256_loadu_si256((const __m256i *)(b + 2)), half8(b), x, m0, g);
}

/* a Q4_K super-block: 4 x 32 bytes, low nibbles sub-block 2c, high nibbles 2c + 1 */
/* Q4_K's 8 six-bit scales and 8 mins (12 bytes: k4_scale_min's packing), four to a word */
static inline void k4_unpack(const uint8_t *p, uint32_t sc[2], uint32_t m[2])
{
    uint32_t w[3];
    memcpy(w, p, 12);
    sc[0] = w[0] & 0x3f3f3f3fu;
    m[0] = w[1] & 0x3f3f3f3fu;
    sc[1] = (w[2] & 0x0f0f0f0fu) | ((w[0] >> 6) & 0x03030303u) << 4;
    m[1] = ((w[2] >> 4) & 0x0f0f0f0fu) | ((w[1] >> 6) & 0x03030303u) << 4;
}

/* 8 bytes -> 8 floats times f */
static inline __m256 bytes8(const uint32_t two[2], float f)
{
    uint64_t v;
    memcpy(&v, two, 8);
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)v))), _mm256_set1_ps(f));
}

/* a Q4_K super-block: 4 x 32 bytes, low nibbles sub-block 2c, high nibbles 2c + 1; the mins'
 * part, -dmin m_j * sum(x of sub-block j), added to the lanes for all 8 sub-blocks at once */
INLINE void block_q4_k(sums *s, const int r, const int mt, const uint8_t *b, const qrows *x, int64_t m0, int64_t g)
{
    const __m256i low = _mm256_set1_epi8(0xF);
    uint32_t sc[2], m[2];
    k4_unpack(b + 4, sc, m);
    float scale[8];
    _mm256_storeu_ps(scale, bytes8(sc, from_half(b)));
    __m256 mins = bytes8(m, -from_half(b + 2));
    for (int j = 0; j < mt; j++)
        s->acc[r][j] = _mm256_fmadd_ps(mins, _mm256_loadu_ps(x->s + (m0 + j) * x->groups + g), s->acc[r][j]);
    for (int c = 0; c < 4; c++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * c));
        add_codes(s, r, mt, 0, 0, _mm256_and_si256(q, low), _mm256_set1_ps(scale[2 * c]), 0.f, x, m0, g + 2 * c);
        add_codes(s, r, mt, 0, 0, _mm256_and_si256(_mm256_srli_epi16(q, 4), low), _mm256_set1_ps(scale[2 * c + 1]), 0.f,
                  x, m0, g + 2 * c + 1);
    }
}

/* a Q6_K super-block: per half, ql 64 bytes (4 + 4 bits), qh 32 bytes (4 x 2 bits), 8 scales
 * (one per 16 weights: lanes 0-3 and 4-7 of a group); the -32 comes with x (quantize_x) */
INLINE void block_q6_k(sums *s, const int r, const int mt, const uint8_t *b, const qrows *x, int64_t m0, int64_t g)
{
    const __m256i low = _mm256_set1_epi8(0xF), bits45 = _mm256_set1_epi8(0x30);
    float scale[16];
    __m128i sc = _mm_loadu_si128((const __m128i *)(b + 192));
    _mm512_storeu_ps(scale, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc)), _mm512_set1_ps(from_half(b + 208))));
    for (int h = 0; h < 2; h++) {
        __m256i ql0 = _mm256_loadu_si256((const __m256i *)(b + 64 * h));
        __m256i ql1 = _mm256_loadu_si256((const __m256i *)(b + 64 * h + 32));
        __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
        __m256i q[4] = {
            _mm256_or_si256(_mm256_and_si256(ql0, low), _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45)),
            _mm256_or_si256(_mm256_and_si256(ql1, low), _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low), _mm256_and_si256(qh, bits45)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low),
                            _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45)),
        };
        for (int w = 0; w < 4; w++) {
            const float *s2 = scale + 8 * h + 2 * w;
            __m256 lanes = _mm256_set_m128(_mm_broadcast_ss(s2 + 1), _mm_broadcast_ss(s2));
            add_codes(s, r, mt, 1, 0, q[w], lanes, 0.f, x, m0, g + 4 * h + w);
        }
    }
}

/* every block of nr rows of W (row_bytes apart) into the tile's sums; each row's next tile
 * (nr rows further on) prefetched a cache line at a time */
#define EACH_BLOCK(block)                                                                                          \
    for (int64_t i = 0; i < blocks; i++) {                                                                         \
        for (int r = 0; r < nr; r++) {                                                                             \
            const uint8_t *b = w + r * row_bytes + i * bytes;                                                      \
            if (i * bytes / 64 != ((i + 1) * bytes - 1) / 64 || i == 0)                                            \
                _mm_prefetch((const char *)(b + ahead + bytes - 1), HINT);                                         \
            block(&s, r, mt, b, x, m0, i * (BLOCK[kind] / 32));                                                   \
        }                                                                                                          \
    }

INLINE void tile_dot(const int kind, const uint8_t *w, int64_t row_bytes, const int nr, int64_t in, const qrows *x,
                     int64_t m0, const int mt, float res[RT][XT])
{
    sums s;
    for (int r = 0; r < RT; r++)
        for (int j = 0; j < XT; j++) {
            s.acc[r][j] = _mm256_setzero_ps();
            s.offset[r][j] = 0.f;
        }
    const int64_t blocks = in / BLOCK[kind], bytes = BYTES[kind], ahead = AHEAD_TILES * nr * row_bytes;
    switch (kind) {
    case Q4_0: EACH_BLOCK(block_q4_0); break;
    case Q4_1: EACH_BLOCK(block_q4_1); break;
    case Q5_0: EACH_BLOCK(block_q5_0); break;
    case Q5_1: EACH_BLOCK(block_q5_1); break;
    case Q8_0: EACH_BLOCK(block_q8_0); break;
    case Q4_K:
    case Q6_K:
        for (int64_t i = 0; i < blocks; i++)
            for (int r = 0; r < nr; r++) {
                const uint8_t *b = w + r * row_bytes + i * bytes;
                for (int64_t line = 0; line < bytes; line += 64)
                    _mm_prefetch((const char *)(b + ahead + line), HINT);
                if (kind == Q4_K)
                    block_q4_k(&s, r, mt, b, x, m0, 8 * i);
                else
                    block_q6_k(&s, r, mt, b, x, m0, 8 * i);
            }
        break;
    }
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < mt; j++) {
            __m256 a = s.acc[r][j];
            __m128 v = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
            v = _mm_add_ps(v, _mm_movehl_ps(v, v));
            v = _mm_add_ss(v, _mm_movehdup_ps(v));
            res[r][j] = _mm_cvtss_f32(v) + s.offset[r][j];
        }
}

/* nr (1..RT) rows of W against mt (1..XT) rows of x, the counts made constants for the compiler */
static void tile(int kind, const uint8_t *w, int64_t row_bytes, int nr, int64_t in, const qrows *x, int64_t m0, int mt,
                 float res[RT][XT])
{
#define TILE_CASE(NR, MT)                                                                                          \
    case (NR - 1) * XT + MT - 1: tile_dot(kind, w, row_bytes, NR, in, x, m0, MT, res); break;
    switch ((nr - 1) * XT + mt - 1) {
        TILE_CASE(1, 1) TILE_CASE(1, 2) TILE_CASE(2, 1) TILE_CASE(2, 2)
        TILE_CASE(3, 1) TILE_CASE(3, 2) TILE_CASE(4, 1) TILE_CASE(4, 2)
        TILE_CASE(5, 1) TILE_CASE(5, 2) TILE_CASE(6, 1) TILE_CASE(6, 2)
        TILE_CASE(7, 1) TILE_CASE(7, 2) TILE_CASE(8, 1) TILE_CASE(8, 2)
    }
#undef TILE_CASE
}
#endif

int tf_gguf_matmul_bf16(int kind, const uint16_t *x, int64_t n, int64_t in, const uint8_t *w, int64_t out,
                         const uint16_t *bias, uint16_t *y, int64_t ldy, int threads)
{
    int64_t row_bytes = in / BLOCK[kind] * BYTES[kind];
#if GGUF_SIMD
    qrows xq;
    if (!scratch_for(&xq, n, in / 32))
        return -1;
    quantize_x(x, n, OFFSET[kind], &xq, threads);
    int64_t tiles = (out + RT - 1) / RT;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        int64_t o = t * RT;
        int nr = out - o < RT ? (int)(out - o) : RT;
        for (int64_t m0 = 0; m0 < n; m0 += XT) {
            int mt = n - m0 < XT ? (int)(n - m0) : XT;
            float res[RT][XT];
            tile(kind, w + o * row_bytes, row_bytes, nr, in, &xq, m0, mt, res);
            for (int r = 0; r < nr; r++)
                for (int j = 0; j < mt; j++)
                    y[(m0 + j) * ldy + o + r] = to_bf16(res[r][j] + (bias ? from_bf16(bias[o + r]) : 0.f));
        }
    }
#else
    int64_t groups = in / 32;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t o = 0; o < out; o++) {
        for (int64_t r = 0; r < n; r++) {
            float v[32], sum = 0.f;
            for (int64_t g = 0; g < groups; g++) {
                group_values(kind, w + o * row_bytes, g, v);
                for (int l = 0; l < 32; l++)
                    sum += v[l] * from_bf16(x[r * in + 32 * g + l]);
            }
            y[r * ldy + o] = to_bf16(sum + (bias ? from_bf16(bias[o]) : 0.f));
        }
    }
#endif
    return 0;
}
