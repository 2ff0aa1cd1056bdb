/* Native CPU kernels of the batched RandAugment (noisystudent/augment/native.py builds and loads it).
 *
 * Plain C99, no Python or torch headers. The torch code in ops.py / randaugment.py draws every
 * random number and computes every per-sample parameter (ops.sample_params rows, the fixed-point
 * sampling terms of ops.affine_terms); this file only does the pixel work, one sample at a time
 * through all its layers, reproducing exactly what the torch ops compute (which equals PIL). Every
 * rounding decision mirrors the torch op named in the kernel's comment; ops.py says why those equal
 * PIL's.
 *
 * Images are uint8 (B, C, H, W), contiguous. Build: cc -O3 -shared -fPIC -std=c99 -ffp-contract=off
 * (no fused multiply-add: the float32 blends and float64 tables round after every operation, as the
 * separate torch ops do). On x86-64 the float32 kernels have an SSE2 main loop (SSE2 is part of the
 * x86-64 baseline, so the build stays portable; the compiler's own vectorisation of the clamps is
 * poor) that computes the same float32 operations as the scalar code, which handles the remaining
 * pixels and every other platform; -DNS_NO_SIMD builds the scalar code alone.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__) && !defined(NS_NO_SIMD)
#include <emmintrin.h>
#define NS_SSE2 1
#else
#define NS_SSE2 0
#endif

#define NS_ABI_VERSION 1

/* Kernels, in the order of native.KERNELS. */
enum {
    K_IDENTITY, K_AUTOCONTRAST, K_EQUALIZE, K_SOLARIZE, K_COLOR, K_POSTERIZE, K_CONTRAST, K_BRIGHTNESS,
    K_SHARPNESS, K_CUTOUT, K_WARP, K_SHIFT, N_KERNELS
};

/* Columns of an ops.sample_params row (ops.P_*). */
enum { P_FACTOR, P_THRESHOLD, P_MASK, P_ROW0, P_COL0, P_ROW1, P_COL1, P_VALUE, N_PARAMS };

#define FILL 128      /* ops.FILL: gray where geometric ops and cutout leave no image */
#define LEVELS 256    /* grey levels of a uint8 channel */
#define FIX_SHIFT 16  /* ops._FIX_SHIFT: 16.16 fixed point */

/* One sample's geometry, and scratch space shared by the samples of a call. */
typedef struct {
    int c, h, w;       /* channels, rows, columns */
    size_t plane;      /* h * w pixels */
    int32_t *index;    /* (w,) warp: source offsets of one output row in the padded planes */
    uint16_t *column_sums;  /* (w,) sharpness: 3-row sums of each column */
    uint8_t *padded;   /* warp: the input with a FILL border, (c, h + 2, w + 2) uint8 or (h + 2, w + 2) uint32 */
} Image;

/* ---------------------------------------------------------------------------------------------
 * Scalar building blocks
 * ------------------------------------------------------------------------------------------- */

/* A float32 pixel value as uint8: trunc(clip(t, 0, 255)) (torch: clamp_(0, 255).to(int16)). */
static inline uint8_t to_pixel(float t) {
    t = t < 0.0f ? 0.0f : t;
    t = t > 255.0f ? 255.0f : t;
    return (uint8_t)(int32_t)t;
}

/* PIL's Image.blend(d, x, f) for one pixel, as ops.blend_: (x - d) * f + d in float32, rounding after
 * the multiplication and after the addition, then to_pixel. */
static inline uint8_t blend(float x, float d, float f) {
    float t = (x - d) * f;
    return to_pixel(t + d);
}

/* PIL's "L" conversion of one RGB pixel (ops.grayscale): (19595 R + 38470 G + 7471 B + 2^15) >> 16. */
static inline uint32_t gray_of(uint32_t r, uint32_t g, uint32_t b) {
    return (19595u * r + 38470u * g + 7471u * b + 32768u) >> 16;
}

/* dst[i] = lut[src[i]] for n pixels, 8 at a time through a uint64 (one load and one store for 8
 * look-ups; byte k of the word stays byte k whatever the byte order). */
static void apply_lut(const uint8_t *restrict src, uint8_t *restrict dst, size_t n, const uint8_t *restrict lut) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t in, out = 0;
        memcpy(&in, src + i, 8);
        for (int k = 0; k < 64; k += 8) out |= (uint64_t)lut[(in >> k) & 0xFF] << k;
        memcpy(dst + i, &out, 8);
    }
    for (; i < n; i++) dst[i] = lut[src[i]];
}

/* ---------------------------------------------------------------------------------------------
 * SSE2 building blocks: 16 pixels as four vectors of four float32 values
 * ------------------------------------------------------------------------------------------- */

#if NS_SSE2
/* 16 uint8 at p -> v[0..3] float32. */
static inline void load16(const uint8_t *p, __m128 v[4]) {
    __m128i z = _mm_setzero_si128(), x = _mm_loadu_si128((const __m128i *)p);
    __m128i lo = _mm_unpacklo_epi8(x, z), hi = _mm_unpackhi_epi8(x, z);
    v[0] = _mm_cvtepi32_ps(_mm_unpacklo_epi16(lo, z));
    v[1] = _mm_cvtepi32_ps(_mm_unpackhi_epi16(lo, z));
    v[2] = _mm_cvtepi32_ps(_mm_unpacklo_epi16(hi, z));
    v[3] = _mm_cvtepi32_ps(_mm_unpackhi_epi16(hi, z));
}

/* to_pixel of v[0..3] -> 16 uint8 at p. Truncation toward zero, then the saturating packs (int32 ->
 * int16 -> uint8) clip to 0..255: the same as clip-then-truncate for |v| < 2^31, which callers
 * ensure with simd_factor. */
static inline __m128i pack_pixels(__m128 a, __m128 b, __m128 c, __m128 d) {
    __m128i lo = _mm_packs_epi32(_mm_cvttps_epi32(a), _mm_cvttps_epi32(b));
    __m128i hi = _mm_packs_epi32(_mm_cvttps_epi32(c), _mm_cvttps_epi32(d));
    return _mm_packus_epi16(lo, hi);
}

static inline void store16(uint8_t *p, const __m128 v[4]) {
    _mm_storeu_si128((__m128i *)p, pack_pixels(v[0], v[1], v[2], v[3]));
}

/* (x - d) * f + d, before to_pixel (blend). */
static inline __m128 blend4(__m128 x, __m128 d, __m128 f) {
    return _mm_add_ps(_mm_mul_ps(_mm_sub_ps(x, d), f), d);
}

/* gray_of in float32: every product and partial sum is an integer below 2^24, so exact; the shift
 * is an exact multiplication by 2^-16 and a truncation (as ops.grayscale). */
static inline __m128 gray4(__m128 r, __m128 g, __m128 b) {
    __m128 t = _mm_mul_ps(r, _mm_set1_ps(19595.0f));
    t = _mm_add_ps(t, _mm_mul_ps(g, _mm_set1_ps(38470.0f)));
    t = _mm_add_ps(t, _mm_mul_ps(b, _mm_set1_ps(7471.0f)));
    t = _mm_add_ps(t, _mm_set1_ps(32768.0f));
    return _mm_cvtepi32_ps(_mm_cvttps_epi32(_mm_mul_ps(t, _mm_set1_ps(1.0f / 65536.0f))));
}

/* 8 uint16 at p -> 8 uint16 lanes. */
static inline __m128i load8_u16(const uint16_t *p) {
    return _mm_loadu_si128((const __m128i *)p);
}

/* Four int32 clamped to [0, hi]. */
static inline __m128i clamp4(__m128i v, __m128i hi) {
    v = _mm_andnot_si128(_mm_cmpgt_epi32(_mm_setzero_si128(), v), v);
    __m128i over = _mm_cmpgt_epi32(v, hi);
    return _mm_or_si128(_mm_andnot_si128(over, v), _mm_and_si128(over, hi));
}
#endif

/* Whether the SSE2 loops may run with blend factor f: their float -> int conversion needs |values| <
 * 2^31, i.e. |f| (255 + 255) + 255 < 2^31 (always so for RandAugment's factors 0.1 .. 1.9). */
static inline int simd_factor(float f) { return NS_SSE2 && f < 1048576.0f && f > -1048576.0f; }

/* ---------------------------------------------------------------------------------------------
 * Pixel kernels: src -> dst (distinct buffers), one (C, H, W) sample, p its sample_params row.
 * ------------------------------------------------------------------------------------------- */

static void k_identity(const uint8_t *restrict src, uint8_t *restrict dst, const Image *im) {
    memcpy(dst, src, (size_t)im->c * im->plane);
}

/* ops.autocontrast_lut: per channel, min..max -> 0..255 by v * scale + offset in float64 (scale =
 * 255 / (hi - lo), offset = -lo * scale), clipped to 0..255 and truncated; flat channels unchanged. */
static void k_autocontrast(const uint8_t *restrict src, uint8_t *restrict dst, const Image *im) {
    for (int ch = 0; ch < im->c; ch++) {
        const uint8_t *restrict s = src + ch * im->plane;
        uint8_t *restrict d = dst + ch * im->plane;
        uint8_t lo = 255, hi = 0;
        for (size_t i = 0; i < im->plane; i++) {
            lo = s[i] < lo ? s[i] : lo;
            hi = s[i] > hi ? s[i] : hi;
        }
        if (hi <= lo) {
            memcpy(d, s, im->plane);
            continue;
        }
        double scale = 255.0 / (double)(hi - lo);
        double offset = -(double)lo * scale;
        uint8_t lut[LEVELS];
        for (int v = 0; v < LEVELS; v++) {
            double t = (double)v * scale;
            t = t + offset;
            t = t < 0.0 ? 0.0 : (t > 255.0 ? 255.0 : t);
            lut[v] = (uint8_t)t;
        }
        apply_lut(s, d, im->plane, lut);
    }
}

/* Histogram of n pixels, in four interleaved partial histograms (no store-to-load stall on runs of
 * equal values). */
static void histogram(const uint8_t *restrict s, size_t n, uint64_t hist[LEVELS]) {
    uint32_t part[4][LEVELS];
    memset(part, 0, sizeof part);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        part[0][s[i]]++;
        part[1][s[i + 1]]++;
        part[2][s[i + 2]]++;
        part[3][s[i + 3]]++;
    }
    for (; i < n; i++) part[0][s[i]]++;
    for (int v = 0; v < LEVELS; v++) hist[v] = (uint64_t)part[0][v] + part[1][v] + part[2][v] + part[3][v];
}

/* ops.equalize_lut: below(v) = pixels < v, step = below(top) // 255 (top: highest occupied value);
 * v -> min(255, (step // 2 + below(v)) // step); channels with step == 0 unchanged. (The torch code's
 * float64 floor divisions of integers below 2^53 are these integer divisions exactly.) */
static void k_equalize(const uint8_t *restrict src, uint8_t *restrict dst, const Image *im) {
    for (int ch = 0; ch < im->c; ch++) {
        const uint8_t *restrict s = src + ch * im->plane;
        uint8_t *restrict d = dst + ch * im->plane;
        uint64_t hist[LEVELS];
        histogram(s, im->plane, hist);
        int top = LEVELS - 1;
        while (top > 0 && hist[top] == 0) top--;
        uint64_t below_top = 0;
        for (int v = 0; v < top; v++) below_top += hist[v];
        uint64_t step = below_top / 255;
        if (step == 0) {
            memcpy(d, s, im->plane);
            continue;
        }
        uint8_t lut[LEVELS];
        uint64_t below = 0;
        for (int v = 0; v < LEVELS; v++) {
            uint64_t level = (step / 2 + below) / step;
            lut[v] = (uint8_t)(level > 255 ? 255 : level);
            below += hist[v];
        }
        apply_lut(s, d, im->plane, lut);
    }
}

/* ops._solarize, in its int16 arithmetic: (t - 1 - x) >> 8 is all ones where x >= t, XOR-ed into x. */
static void k_solarize(const uint8_t *restrict src, uint8_t *restrict dst, const Image *im, const double *p) {
    int16_t t_minus_1 = (int16_t)((int16_t)p[P_THRESHOLD] - 1);
    size_t n = (size_t)im->c * im->plane;
    for (size_t i = 0; i < n; i++) {
        int16_t x = src[i];
        int16_t invert = (int16_t)((int16_t)(t_minus_1 - x) >> 8);
        dst[i] = (uint8_t)(invert ^ x);
    }
}

/* ops._posterize: x & mask. */
static void k_posterize(const uint8_t *restrict src, uint8_t *restrict dst, const Image *im, const double *p) {
    uint8_t mask = (uint8_t)(int32_t)p[P_MASK];
    size_t n = (size_t)im->c * im->plane;
    for (size_t i = 0; i < n; i++) dst[i] = src[i] & mask;
}

/* ops.adjust_color: blend each channel with the grayscale image (identity for one channel). */
static void k_color(const uint8_t *restrict src, uint8_t *restrict dst, const Image *im, const double *p) {
    if (im->c != 3) {
        k_identity(src, dst, im);
        return;
    }
    float f = (float)p[P_FACTOR];
    size_t n = im->plane, i = 0;
    const uint8_t *restrict r = src, *restrict g = src + n, *restrict b = src + 2 * n;
    uint8_t *restrict dr = dst, *restrict dg = dst + n, *restrict db = dst + 2 * n;
#if NS_SSE2
    __m128 f4 = _mm_set1_ps(f);
    for (; simd_factor(f) && i + 16 <= n; i += 16) {
        __m128 vr[4], vg[4], vb[4];
        load16(r + i, vr);
        load16(g + i, vg);
        load16(b + i, vb);
        for (int k = 0; k < 4; k++) {
            __m128 gray = gray4(vr[k], vg[k], vb[k]);
            vr[k] = blend4(vr[k], gray, f4);
            vg[k] = blend4(vg[k], gray, f4);
            vb[k] = blend4(vb[k], gray, f4);
        }
        store16(dr + i, vr);
        store16(dg + i, vg);
        store16(db + i, vb);
    }
#endif
    for (; i < n; i++) {
        float gray = (float)gray_of(r[i], g[i], b[i]);
        dr[i] = blend((float)r[i], gray, f);
        dg[i] = blend((float)g[i], gray, f);
        db[i] = blend((float)b[i], gray, f);
    }
}

/* Sum of the grayscale image (ops.adjust_contrast's total, exact): of the pixels for one channel,
 * of gray_of for three. */
static uint64_t gray_total(const uint8_t *restrict src, const Image *im) {
    size_t n = im->plane, i = 0;
    uint64_t total = 0;
    int rgb = im->c == 3;
#if NS_SSE2
    __m128i sums = _mm_setzero_si128(), z = _mm_setzero_si128();  /* two uint64 lanes */
    for (; i + 16 <= n; i += 16) {
        __m128i gray8 = _mm_loadu_si128((const __m128i *)(src + i));
        if (rgb) {
            __m128 vr[4], vg[4], vb[4];
            load16(src + i, vr);
            load16(src + n + i, vg);
            load16(src + 2 * n + i, vb);
            gray8 = pack_pixels(gray4(vr[0], vg[0], vb[0]), gray4(vr[1], vg[1], vb[1]), gray4(vr[2], vg[2], vb[2]),
                                gray4(vr[3], vg[3], vb[3]));
        }
        sums = _mm_add_epi64(sums, _mm_sad_epu8(gray8, z));  /* + the sums of each 8 bytes */
    }
    uint64_t lanes[2];
    _mm_storeu_si128((__m128i *)lanes, sums);
    total = lanes[0] + lanes[1];
#endif
    for (; i < n; i++) total += rgb ? gray_of(src[i], src[n + i], src[2 * n + i]) : src[i];
    return total;
}

/* ops.adjust_contrast: blend with the rounded mean of the grayscale image,
 * floor((total + n / 2) / n) = (2 total + n) // (2 n) exactly. */
static void k_contrast(const uint8_t *restrict src, uint8_t *restrict dst, const Image *im, const double *p) {
    uint64_t n = im->plane;
    float mean = (float)((2 * gray_total(src, im) + n) / (2 * n));
    float f = (float)p[P_FACTOR];
    size_t all = (size_t)im->c * n, i = 0;
#if NS_SSE2
    __m128 f4 = _mm_set1_ps(f), d4 = _mm_set1_ps(mean);
    for (; simd_factor(f) && i + 16 <= all; i += 16) {
        __m128 v[4];
        load16(src + i, v);
        for (int k = 0; k < 4; k++) v[k] = blend4(v[k], d4, f4);
        store16(dst + i, v);
    }
#endif
    for (; i < all; i++) dst[i] = blend((float)src[i], mean, f);
}

/* ops.adjust_brightness: trunc(clip(x * f, 0, 255)) in float32. */
static void k_brightness(const uint8_t *restrict src, uint8_t *restrict dst, const Image *im, const double *p) {
    float f = (float)p[P_FACTOR];
    size_t n = (size_t)im->c * im->plane, i = 0;
#if NS_SSE2
    __m128 f4 = _mm_set1_ps(f);
    for (; simd_factor(f) && i + 16 <= n; i += 16) {
        __m128 v[4];
        load16(src + i, v);
        for (int k = 0; k < 4; k++) v[k] = _mm_mul_ps(v[k], f4);
        store16(dst + i, v);
    }
#endif
    for (; i < n; i++) dst[i] = to_pixel((float)src[i] * f);
}

/* The SMOOTH value of a 3x3 window sum: (sum + 4 x + 6) // 13 (the kernel [[1,1,1],[1,5,1],[1,1,1]] / 13
 * rounded half up, as ops.adjust_sharpness), computed as (total * 5042) >> 16, equal to total // 13
 * for totals below 6564 (here at most 13 * 255 + 6 = 3321). */
static inline uint32_t smooth_of(uint32_t window_sum, uint32_t x) {
    return ((window_sum + 4u * x + 6u) * 5042u) >> 16;
}

/* One inner row of k_sharpness: columns 1 .. w - 2 of `row`; column_sums[x] = up[x] + mid[x] + down[x]. */
static void sharpen_row(const uint8_t *restrict mid, const uint16_t *restrict column_sums, uint8_t *restrict row,
                        int w, float f) {
    int x = 1;
#if NS_SSE2
    __m128 f4 = _mm_set1_ps(f);
    __m128i z = _mm_setzero_si128(), six = _mm_set1_epi16(6), by_13 = _mm_set1_epi16(5042);
    for (; simd_factor(f) && x + 9 <= w; x += 8) {  /* outputs x .. x + 7, reading columns x - 1 .. x + 8 */
        __m128i centre = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(mid + x)), z);
        __m128i t = _mm_add_epi16(load8_u16(column_sums + x - 1), load8_u16(column_sums + x));
        t = _mm_add_epi16(t, load8_u16(column_sums + x + 1));
        t = _mm_add_epi16(_mm_add_epi16(t, _mm_slli_epi16(centre, 2)), six);  /* + 4 x + 6 */
        __m128i smooth = _mm_mulhi_epu16(t, by_13);  /* (t * 5042) >> 16 */
        __m128 s_lo = _mm_cvtepi32_ps(_mm_unpacklo_epi16(smooth, z));
        __m128 s_hi = _mm_cvtepi32_ps(_mm_unpackhi_epi16(smooth, z));
        __m128 x_lo = _mm_cvtepi32_ps(_mm_unpacklo_epi16(centre, z));
        __m128 x_hi = _mm_cvtepi32_ps(_mm_unpackhi_epi16(centre, z));
        __m128 b_lo = blend4(x_lo, s_lo, f4), b_hi = blend4(x_hi, s_hi, f4);
        _mm_storel_epi64((__m128i *)(row + x), pack_pixels(b_lo, b_hi, b_lo, b_hi));
    }
#endif
    for (; x < w - 1; x++) {
        uint32_t window = (uint32_t)column_sums[x - 1] + column_sums[x] + column_sums[x + 1];
        row[x] = blend((float)mid[x], (float)smooth_of(window, mid[x]), f);
    }
}

/* ops.adjust_sharpness: blend with the SMOOTH-filtered image; border pixels unchanged.
 * column_sums: (w,) scratch. */
static void k_sharpness(const uint8_t *restrict src, uint8_t *restrict dst, const Image *im, const double *p) {
    int h = im->h, w = im->w;
    if (h < 3 || w < 3) {
        k_identity(src, dst, im);
        return;
    }
    float f = (float)p[P_FACTOR];
    uint16_t *restrict column_sums = im->column_sums;
    for (int ch = 0; ch < im->c; ch++) {
        const uint8_t *restrict s = src + ch * im->plane;
        uint8_t *restrict d = dst + ch * im->plane;
        memcpy(d, s, (size_t)w);  /* first and last rows */
        memcpy(d + (size_t)(h - 1) * w, s + (size_t)(h - 1) * w, (size_t)w);
        for (int y = 1; y < h - 1; y++) {
            const uint8_t *restrict up = s + (size_t)(y - 1) * w, *restrict mid = up + w, *restrict down = mid + w;
            uint8_t *restrict row = d + (size_t)y * w;
            for (int x = 0; x < w; x++) column_sums[x] = (uint16_t)(up[x] + mid[x] + down[x]);
            row[0] = mid[0];
            row[w - 1] = mid[w - 1];
            sharpen_row(mid, column_sums, row, w, f);
        }
    }
}

/* The positions i in [0, n) with first <= i < end (float64, as ops._cutout compares): [*lo, *hi). */
static void covered(double first, double end, int n, int *lo, int *hi) {
    *lo = 0;
    *hi = 0;
    for (int i = n - 1; i >= 0; i--)
        if (i >= first && i < end) {
            if (*hi == 0) *hi = i + 1;
            *lo = i;
        }
}

/* ops._cutout: FILL in rows [P_ROW0, P_ROW1) x columns [P_COL0, P_COL1), clipped to the image. */
static void k_cutout(const uint8_t *restrict src, uint8_t *restrict dst, const Image *im, const double *p) {
    k_identity(src, dst, im);
    int y0, y1, x0, x1;
    covered(p[P_ROW0], p[P_ROW1], im->h, &y0, &y1);
    covered(p[P_COL0], p[P_COL1], im->w, &x0, &x1);
    if (y0 >= y1 || x0 >= x1) return;
    for (int ch = 0; ch < im->c; ch++)
        for (int y = y0; y < y1; y++) memset(dst + ch * im->plane + (size_t)y * im->w + x0, FILL, (size_t)(x1 - x0));
}

/* ---------------------------------------------------------------------------------------------
 * Geometric kernels. ct: (2, W) col_terms, rt: (2, H) row_terms of ops.affine_terms: output pixel
 * (y, x) samples column (ct[0][x] + rt[0][y]) >> 16 and row (ct[1][x] + rt[1][y]) >> 16 of the
 * input padded by one FILL pixel on every side (int32 arithmetic, as the torch code's).
 * ------------------------------------------------------------------------------------------- */

/* (a + b) >> 16 in int32 arithmetic that wraps like torch's (no signed overflow in C). */
static inline int32_t fixed_sum(int32_t a, int32_t b) {
    return (int32_t)((uint32_t)a + (uint32_t)b) >> FIX_SHIFT;
}

/* src -> im->padded: each channel with a FILL border of one pixel, (h + 2, w + 2). */
static void pad_planes(const uint8_t *restrict src, const Image *im) {
    int h = im->h, w = im->w;
    size_t pw = (size_t)w + 2, pplane = ((size_t)h + 2) * pw;
    for (int ch = 0; ch < im->c; ch++) {
        uint8_t *restrict out = im->padded + ch * pplane;
        const uint8_t *restrict s = src + ch * im->plane;
        memset(out, FILL, pw);
        for (int y = 0; y < h; y++) {
            uint8_t *restrict row = out + (y + 1) * pw;
            row[0] = FILL;
            memcpy(row + 1, s + (size_t)y * w, (size_t)w);
            row[w + 1] = FILL;
        }
        memset(out + (h + 1) * pw, FILL, pw);
    }
}

/* The source offsets of output row y in the padded planes (pw = w + 2 columns): the terms' column
 * and row, clamped to the border (as the torch code does). */
static void row_sources(const Image *im, const int32_t *restrict ct, const int32_t *restrict rt, int y) {
    int h = im->h, w = im->w;
    int32_t pw = w + 2, col_of_row = rt[y], row_of_row = rt[h + y];
    int32_t *restrict index = im->index;
    int x = 0;
#if NS_SSE2
    if (pw < 32768 && h + 2 < 32768) {  /* rows and the row stride fit the int16 multiply */
        __m128i rc = _mm_set1_epi32(col_of_row), rr = _mm_set1_epi32(row_of_row), stride = _mm_set1_epi32(pw);
        __m128i last_col = _mm_set1_epi32(w + 1), last_row = _mm_set1_epi32(h + 1);
        for (; x + 4 <= w; x += 4) {
            __m128i col = _mm_srai_epi32(_mm_add_epi32(_mm_loadu_si128((const __m128i *)(ct + x)), rc), FIX_SHIFT);
            __m128i row = _mm_srai_epi32(_mm_add_epi32(_mm_loadu_si128((const __m128i *)(ct + w + x)), rr), FIX_SHIFT);
            col = clamp4(col, last_col);
            row = clamp4(row, last_row);
            _mm_storeu_si128((__m128i *)(index + x), _mm_add_epi32(_mm_madd_epi16(row, stride), col));
        }
    }
#endif
    for (; x < w; x++) {
        int32_t col = fixed_sum(ct[x], col_of_row), row = fixed_sum(ct[w + x], row_of_row);
        col = col < 0 ? 0 : (col > w + 1 ? w + 1 : col);
        row = row < 0 ? 0 : (row > h + 1 ? h + 1 : row);
        index[x] = row * pw + col;
    }
}

/* ops.resample for one channel or any number of planes: a gather from the padded planes. */
static void warp_planes(const uint8_t *restrict src, uint8_t *restrict dst, const Image *im, const int32_t *restrict ct,
                        const int32_t *restrict rt) {
    size_t pplane = ((size_t)im->h + 2) * ((size_t)im->w + 2);
    pad_planes(src, im);
    for (int y = 0; y < im->h; y++) {
        row_sources(im, ct, rt, y);
        for (int ch = 0; ch < im->c; ch++) {
            const uint8_t *restrict pc = im->padded + ch * pplane;
            uint8_t *restrict d = dst + ch * im->plane + (size_t)y * im->w;
            for (int x = 0; x < im->w; x++) d[x] = pc[im->index[x]];
        }
    }
}

#if NS_SSE2
/* src (3, h, w) -> im->padded as (h + 2, w + 2) uint32 pixels R | G << 8 | B << 16 with a FILL border. */
static void pad_rgb32(const uint8_t *restrict src, const Image *im) {
    int h = im->h, w = im->w;
    size_t pw = (size_t)w + 2;
    uint32_t *restrict out = (uint32_t *)(void *)im->padded;
    const uint32_t fill = FILL | FILL << 8 | FILL << 16;
    for (size_t x = 0; x < pw; x++) out[x] = out[(h + 1) * pw + x] = fill;
    __m128i z = _mm_setzero_si128();
    for (int y = 0; y < h; y++) {
        uint32_t *restrict row = out + (y + 1) * pw;
        const uint8_t *restrict r = src + (size_t)y * w, *restrict g = r + im->plane, *restrict b = g + im->plane;
        row[0] = row[w + 1] = fill;
        int x = 0;
        for (; x + 16 <= w; x += 16) {
            __m128i vr = _mm_loadu_si128((const __m128i *)(r + x)), vg = _mm_loadu_si128((const __m128i *)(g + x));
            __m128i vb = _mm_loadu_si128((const __m128i *)(b + x));
            __m128i rg_lo = _mm_unpacklo_epi8(vr, vg), rg_hi = _mm_unpackhi_epi8(vr, vg);
            __m128i b_lo = _mm_unpacklo_epi8(vb, z), b_hi = _mm_unpackhi_epi8(vb, z);
            _mm_storeu_si128((__m128i *)(row + 1 + x), _mm_unpacklo_epi16(rg_lo, b_lo));
            _mm_storeu_si128((__m128i *)(row + 5 + x), _mm_unpackhi_epi16(rg_lo, b_lo));
            _mm_storeu_si128((__m128i *)(row + 9 + x), _mm_unpacklo_epi16(rg_hi, b_hi));
            _mm_storeu_si128((__m128i *)(row + 13 + x), _mm_unpackhi_epi16(rg_hi, b_hi));
        }
        for (; x < w; x++) row[1 + x] = (uint32_t)r[x] | (uint32_t)g[x] << 8 | (uint32_t)b[x] << 16;
    }
}

/* Byte `shift / 8` of each of 16 uint32 pixels -> 16 uint8. */
static inline __m128i channel16(const __m128i v[4], int shift) {
    __m128i mask = _mm_set1_epi32(0xFF);
    __m128i a = _mm_and_si128(_mm_srl_epi32(v[0], _mm_cvtsi32_si128(shift)), mask);
    __m128i b = _mm_and_si128(_mm_srl_epi32(v[1], _mm_cvtsi32_si128(shift)), mask);
    __m128i c = _mm_and_si128(_mm_srl_epi32(v[2], _mm_cvtsi32_si128(shift)), mask);
    __m128i d = _mm_and_si128(_mm_srl_epi32(v[3], _mm_cvtsi32_si128(shift)), mask);
    return _mm_packus_epi16(_mm_packs_epi32(a, b), _mm_packs_epi32(c, d));
}

/* ops.resample for three channels: one uint32 gather per pixel from the interleaved padded image,
 * then split into the three output planes 16 pixels at a time. */
static void warp_rgb(const uint8_t *restrict src, uint8_t *restrict dst, const Image *im, const int32_t *restrict ct,
                     const int32_t *restrict rt) {
    int w = im->w;
    const uint32_t *restrict p = (const uint32_t *)(const void *)im->padded;
    const int32_t *restrict index = im->index;
    pad_rgb32(src, im);
    for (int y = 0; y < im->h; y++) {
        row_sources(im, ct, rt, y);
        uint8_t *restrict d0 = dst + (size_t)y * w, *restrict d1 = d0 + im->plane, *restrict d2 = d1 + im->plane;
        int x = 0;
        for (; x + 16 <= w; x += 16) {
            __m128i v[4];
            for (int k = 0; k < 4; k++) {
                const int32_t *i = index + x + 4 * k;
                v[k] = _mm_set_epi32((int)p[i[3]], (int)p[i[2]], (int)p[i[1]], (int)p[i[0]]);
            }
            _mm_storeu_si128((__m128i *)(d0 + x), channel16(v, 0));
            _mm_storeu_si128((__m128i *)(d1 + x), channel16(v, 8));
            _mm_storeu_si128((__m128i *)(d2 + x), channel16(v, 16));
        }
        for (; x < w; x++) {
            uint32_t pixel = p[index[x]];
            d0[x] = (uint8_t)pixel;
            d1[x] = (uint8_t)(pixel >> 8);
            d2[x] = (uint8_t)(pixel >> 16);
        }
    }
}
#endif

/* ops.resample: any affine map, nearest neighbour, sources clamped to the FILL border. */
static void k_warp(const uint8_t *restrict src, uint8_t *restrict dst, const Image *im, const int32_t *restrict ct,
                   const int32_t *restrict rt) {
#if NS_SSE2
    if (im->c == 3) {
        warp_rgb(src, dst, im, ct, rt);
        return;
    }
#endif
    warp_planes(src, dst, im, ct, rt);
}

/* ops.shift_rows: for translate_x / _y and shear_x (a == e == 1, d == 0) each output row is its
 * source row shifted, source column col0 + x: copy the overlap, FILL the rest. */
static void k_shift(const uint8_t *restrict src, uint8_t *restrict dst, const Image *im, const int32_t *restrict ct,
                    const int32_t *restrict rt) {
    int h = im->h, w = im->w;
    for (int y = 0; y < h; y++) {
        int64_t col0 = (int64_t)fixed_sum(ct[0], rt[y]) - 1;  /* unpadded source column of x = 0 */
        int64_t row = (int64_t)fixed_sum(ct[w], rt[h + y]) - 1;
        int64_t first = col0 < 0 ? -col0 : 0;  /* output columns [first, end) have a source */
        int64_t end = col0 > 0 ? (int64_t)w - col0 : w;
        int has_source = row >= 0 && row < h && first < end;
        for (int ch = 0; ch < im->c; ch++) {
            uint8_t *restrict d = dst + ch * im->plane + (size_t)y * w;
            if (!has_source) {
                memset(d, FILL, (size_t)w);
                continue;
            }
            const uint8_t *restrict s = src + ch * im->plane + (size_t)row * w;
            memset(d, FILL, (size_t)first);
            memcpy(d + first, s + col0 + first, (size_t)(end - first));
            memset(d + end, FILL, (size_t)(w - end));
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Exports
 * ------------------------------------------------------------------------------------------- */

int ns_abi_version(void) { return NS_ABI_VERSION; }
int ns_kernel_count(void) { return N_KERNELS; }
int ns_param_count(void) { return N_PARAMS; }
int ns_simd(void) { return NS_SSE2; }

/* Kernels that leave a sample of this many channels unchanged. */
static int is_no_op(int kernel, int channels) { return kernel == K_IDENTITY || (kernel == K_COLOR && channels == 1); }

/* One kernel on one sample. */
static void run_kernel(int kernel, const uint8_t *src, uint8_t *dst, const Image *im, const double *p,
                       const int32_t *ct, const int32_t *rt) {
    switch (kernel) {
        case K_AUTOCONTRAST: k_autocontrast(src, dst, im); break;
        case K_EQUALIZE: k_equalize(src, dst, im); break;
        case K_SOLARIZE: k_solarize(src, dst, im, p); break;
        case K_COLOR: k_color(src, dst, im, p); break;
        case K_POSTERIZE: k_posterize(src, dst, im, p); break;
        case K_CONTRAST: k_contrast(src, dst, im, p); break;
        case K_BRIGHTNESS: k_brightness(src, dst, im, p); break;
        case K_SHARPNESS: k_sharpness(src, dst, im, p); break;
        case K_CUTOUT: k_cutout(src, dst, im, p); break;
        case K_WARP: k_warp(src, dst, im, ct, rt); break;
        case K_SHIFT: k_shift(src, dst, im, ct, rt); break;
        default: k_identity(src, dst, im); break;
    }
}

/* RandAugment's pixel work for a batch: every sample goes through its `layers` kernels in turn, via
 * two scratch images (so it stays in the CPU cache from layer to layer; no-op layers are skipped).
 *
 * in, out: (batch, c, h, w) uint8, distinct; kernel: (layers, batch) int32 in [0, N_KERNELS);
 * params: (layers, batch, N_PARAMS) float64 sample_params rows; col_terms: (layers, batch, 2, w) and
 * row_terms: (layers, batch, 2, h) int32 affine_terms (read only for warp / shift samples; may be
 * NULL when there are none). Returns 0, 1 if out of memory, 2 if a kernel id is out of range, 3 if
 * a warp / shift sample has no terms. */
int ns_randaugment(const uint8_t *in, uint8_t *out, int64_t batch, int32_t c, int32_t h, int32_t w, int32_t layers,
                   const int32_t *kernel, const double *params, const int32_t *col_terms, const int32_t *row_terms) {
    for (int64_t i = 0; i < (int64_t)layers * batch; i++) {
        if (kernel[i] < 0 || kernel[i] >= N_KERNELS) return 2;
        if ((kernel[i] == K_WARP || kernel[i] == K_SHIFT) && (col_terms == NULL || row_terms == NULL)) return 3;
    }
    Image im = {c, h, w, (size_t)h * w, NULL, NULL, NULL};
    size_t bytes = (size_t)c * im.plane;
    uint8_t *scratch = malloc(2 * bytes + 1);
    im.index = malloc(((size_t)w + 1) * sizeof(int32_t));
    im.column_sums = malloc(((size_t)w + 1) * sizeof(uint16_t));
    im.padded = malloc((c > 4 ? (size_t)c : 4) * ((size_t)h + 2) * ((size_t)w + 2));
    if (scratch == NULL || im.index == NULL || im.column_sums == NULL || im.padded == NULL) {
        free(scratch);
        free(im.index);
        free(im.column_sums);
        free(im.padded);
        return 1;
    }
    for (int64_t b = 0; b < batch; b++) {
        const uint8_t *src = in + b * bytes;
        uint8_t *sample_out = out + b * bytes;
        int into = 0;  /* the scratch image the next intermediate result goes to */
        for (int32_t layer = 0; layer < layers; layer++) {
            int64_t row = (int64_t)layer * batch + b;
            int k = kernel[row];
            int last = layer == layers - 1;
            if (is_no_op(k, c) && !last) continue;  /* src stays where it is */
            uint8_t *dst = last ? sample_out : scratch + into * bytes;
            run_kernel(k, src, dst, &im, params + row * N_PARAMS, col_terms ? col_terms + row * 2 * w : NULL,
                       row_terms ? row_terms + row * 2 * h : NULL);
            src = dst;
            into ^= 1;
        }
        if (layers == 0) memcpy(sample_out, src, bytes);
    }
    free(scratch);
    free(im.index);
    free(im.column_sums);
    free(im.padded);
    return 0;
}
