/* SHAN fused CPU kernel: steps 1 (attention and relevance), 2 and 3 for a block of image-caption
 * pairs, each pair's data kept in L1/L2 (the batched torch path is bound by memory bandwidth on a
 * CPU). The maths is docs/METHOD.md's; shan/model/alignment.py is the readable reference.
 *
 * Inputs are prepared by shan/model/scoring.py (PreparedImages / PreparedCaptions); the step-1
 * affinities come from torch (one GEMM per chunk). Loaded by shan/model/fused_cpu.py, which
 * declares shan_pairs' signature once and checks every argument before the call: keep the two in
 * step (tests/test_fused_cpu.py compares them).
 *
 * Where the time goes (one pair, k = 36 regions, n = 12 words, d = 1024): the two attended products
 * of step 2 (k n 2d multiply-adds per side, register-blocked 2 rows x 64 columns, at the FMA
 * units' peak), then per fused element a sigmoid and a few FMAs. Everything else (softmaxes,
 * pooling, global-to-local attention, cosines) is O((k + n) d) and kept out of memory round trips:
 * the pooling logits are summed while each 64-column block of fused rows is still in L1, and
 * weighted sums accumulate in registers.
 *
 * C99 + GCC vector extensions; built without -ffast-math (which would switch the whole process to
 * flush-to-zero), with the individual flags listed in fused_cpu.py. */
#include <math.h>
#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>
#define SHAN_AVX512 1
#endif
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef int vi16 __attribute__((vector_size(64)));

#define EPS 1e-8f
#define LOG2E 1.44269504088896341f

static inline v16 ld(const float *p) { return *(const v16u *)p; }
static inline void st(float *p, v16 v) { *(v16u *)p = v; }
static inline v16 splat(float a) { return (v16){a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a}; }
static inline float hsum(v16 v) {
    float s = 0.f;
    for (int i = 0; i < 16; i++) s += v[i];
    return s;
}
static inline v16 vmin(v16 a, v16 b) {
#if defined(SHAN_AVX512)
    return (v16)_mm512_min_ps((__m512)a, (__m512)b);
#else
    const vi16 lt = a < b;
    return (v16)((lt & (vi16)a) | (~lt & (vi16)b));
#endif
}
static inline v16 vmax(v16 a, v16 b) {
    const vi16 gt = a > b;
    return (v16)((gt & (vi16)a) | (~gt & (vi16)b));
}

/* 2^f for 0 <= f < 1: degree-6 polynomial (relative error < 1e-8 before float32 rounding). */
static inline v16 exp2_poly(v16 f) {
    v16 p = splat(2.170225543e-4f);
    p = p * f + splat(1.243968840e-3f);
    p = p * f + splat(9.678840859e-3f);
    p = p * f + splat(5.548334210e-2f);
    p = p * f + splat(2.402298362e-1f);
    p = p * f + splat(6.931469838e-1f);
    p = p * f + splat(1.000000002f);
    return p;
}

/* 2^t for t <= 126 (t far below -126 gives 0, or a tiny number on the portable path). */
static inline v16 vexp2(v16 t) {
#if defined(SHAN_AVX512)
    /* f = t - floor(t) in one VREDUCEPS; VSCALEFPS multiplies by 2^floor(t): no integer
     * conversions, and underflow goes gracefully to zero */
    const __m512 f = _mm512_reduce_ps((__m512)t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    return (v16)_mm512_scalef_ps((__m512)exp2_poly((v16)f), (__m512)t);
#else
    t = vmax(t, splat(-126.f));
    const vi16 n = __builtin_convertvector(t + splat(128.f), vi16) - 128; /* floor(t) */
    const v16 f = t - __builtin_convertvector(n, v16);
    return exp2_poly(f) * (v16)((n + 127) << 23);
#endif
}

/* 1 / (1 + exp(-g)) */
static inline v16 vsigmoid(v16 g) {
    /* the clamp keeps 1 + 2^t finite (t = 126 already makes the sigmoid 0 in float32) */
    const v16 den = splat(1.f) + vexp2(vmin(g * splat(-LOG2E), splat(126.f)));
#if defined(SHAN_AVX512)
    /* reciprocal estimate (14 bits) + one Newton step: ~1e-7 relative error, no division */
    const v16 rc = (v16)_mm512_rcp14_ps((__m512)den);
    return rc * (splat(2.f) - den * rc);
#else
    return splat(1.f) / den;
#endif
}

static inline float sigmoid1(float g) { return 1.f / (1.f + expf(-g)); }

/* a . b with four independent vector accumulators (the FMA latency, not throughput, bounds a
 * single-accumulator dot product) */
static inline float dot(const float *a, const float *b, int d) {
    int c = 0;
    float s = 0.f;
    if (d >= 64) {
        v16 s0 = splat(0.f), s1 = s0, s2 = s0, s3 = s0;
        for (; c + 64 <= d; c += 64) {
            s0 += ld(a + c) * ld(b + c); s1 += ld(a + c + 16) * ld(b + c + 16);
            s2 += ld(a + c + 32) * ld(b + c + 32); s3 += ld(a + c + 48) * ld(b + c + 48);
        }
        s = hsum((s0 + s1) + (s2 + s3));
    }
    for (; c < d; c++) s += a[c] * b[c];
    return s;
}

static float cosv(const float *a, const float *b, int d) {
    const float den = sqrtf(dot(a, a, d)) * sqrtf(dot(b, b, d));
    return dot(a, b, d) / (den > EPS ? den : EPS);
}

/* out = sum_r wt[rows[r]] * y_{rows[r]} over the listed rows (rows ys floats apart), accumulated
 * in registers 64 columns at a time. */
static void weighted_sum(int nrows, const int *rows, const float *wt, const float *y, long ys,
                         int d, float *out) {
    const int dv = d - d % 64;
    for (int c0 = 0; c0 < dv; c0 += 64) {
        v16 a0 = splat(0.f), a1 = a0, a2 = a0, a3 = a0;
        for (int r = 0; r < nrows; r++) {
            const float *yi = y + rows[r] * ys + c0;
            const v16 a = splat(wt[rows[r]]);
            a0 += a * ld(yi); a1 += a * ld(yi + 16); a2 += a * ld(yi + 32); a3 += a * ld(yi + 48);
        }
        st(out + c0, a0); st(out + c0 + 16, a1); st(out + c0 + 32, a2); st(out + c0 + 48, a3);
    }
    for (int c = dv; c < d; c++) {
        float a = 0.f;
        for (int r = 0; r < nrows; r++) a += wt[rows[r]] * y[rows[r] * ys + c];
        out[c] = a;
    }
}

/* Softmax over the listed rows, in place in wt (entries of other rows are left alone). */
static void softmax_rows(int nrows, const int *rows, float *wt) {
    float mx = -3.0e38f, z = 0.f;
    for (int r = 0; r < nrows; r++) mx = wt[rows[r]] > mx ? wt[rows[r]] : mx;
    for (int r = 0; r < nrows; r++) {
        wt[rows[r]] = expf(wt[rows[r]] - mx);
        z += wt[rows[r]];
    }
    const float iz = 1.f / z;
    for (int r = 0; r < nrows; r++) wt[rows[r]] *= iz;
}

static int real_rows(int L, const float *mask, int *rows) {
    int nreal = 0;
    for (int i = 0; i < L; i++)
        if (mask[i] != 0.f) rows[nreal++] = i;
    return nreal;
}

/* One side of steps 1-2 for one pair: the L own rows x (ss floats apart) attend to the K rows y of
 * the other modality with the step-1 attention att (L x K, row-major). Computes the fused rows
 * x^c_i = x_i + (1 - g_i) (star_i - x_i), star_i = sum_j att_ij y_j, the step-1 relevance mean of
 * cos(x_i, star_i) over real rows (returned), and the context ctx (d) by attention pooling.
 * src (K rows, ss floats apart) = [y ; -W_att y]; own (L rows, os floats apart) = -(W_own x + b).
 * Scratch: f (L x d) fused rows, part (3 x 16 L) lane partials, wt (L), rows (L ints). */
static float side(int L, int K, int d, const float *att, const float *src, const float *x, long ss,
                  const float *own, long os, const float *mask, float cnt, const float *w,
                  const float *xnorm, float *f, float *part, float *wt, int *rows, float *ctx) {
    const int dv = d - d % 32; /* columns done 32 at a time; the rest one by one */
    const float inv = 1.f / cnt;
    float *rn = part, *rs = part + 16L * L, *lg = part + 32L * L; /* x.star, |star|^2, logits */
    memset(part, 0, sizeof(float) * 48 * (size_t)L);
    const int nreal = real_rows(L, mask, rows);
    for (int c0 = 0; c0 < dv; c0 += 32) {
        v16 u0 = splat(0.f), u1 = u0;
        /* four rows x 32 columns at a time: each src vector loaded once feeds 4 FMAs, 16
         * independent accumulators [star ; gate pre-activation] x 2 vectors x 4 rows */
        for (int r = 0; r < nreal; r += 4) {
            int ir[4];
            for (int t = 0; t < 4; t++) ir[t] = rows[r + t < nreal ? r + t : r];
            const float *a0 = att + (long)ir[0] * K, *a1 = att + (long)ir[1] * K;
            const float *a2 = att + (long)ir[2] * K, *a3 = att + (long)ir[3] * K;
            const float *o0 = own + ir[0] * os + c0, *o1 = own + ir[1] * os + c0;
            const float *o2 = own + ir[2] * os + c0, *o3 = own + ir[3] * os + c0;
            v16 s00 = splat(0.f), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00,
                s30 = s00, s31 = s00;
            v16 g00 = ld(o0), g01 = ld(o0 + 16), g10 = ld(o1), g11 = ld(o1 + 16), g20 = ld(o2),
                g21 = ld(o2 + 16), g30 = ld(o3), g31 = ld(o3 + 16);
            for (int j = 0; j < K; j++) {
                const float *sj = src + j * ss + c0;
                const v16 y0 = ld(sj), y1 = ld(sj + 16), z0 = ld(sj + d), z1 = ld(sj + d + 16);
                v16 a = splat(a0[j]);
                s00 += a * y0; s01 += a * y1; g00 += a * z0; g01 += a * z1;
                a = splat(a1[j]);
                s10 += a * y0; s11 += a * y1; g10 += a * z0; g11 += a * z1;
                a = splat(a2[j]);
                s20 += a * y0; s21 += a * y1; g20 += a * z0; g21 += a * z1;
                a = splat(a3[j]);
                s30 += a * y0; s31 += a * y1; g30 += a * z0; g31 += a * z1;
            }
            /* per row: s = star_i (attended vector): relevance partials, and the fused
             * x^c = x + (1 - g) (star - x) with 1 - g = sigmoid(-pre) */
#define SHAN_FUSE_ROW(I, S0, S1, G0, G1)                                                       \
    do {                                                                                       \
        const float *xi = x + (I) * ss + c0;                                                   \
        float *fi = f + (long)(I) * d + c0, *rni = rn + 16L * (I), *rsi = rs + 16L * (I);       \
        const v16 x0 = ld(xi), x1 = ld(xi + 16);                                               \
        st(rni, ld(rni) + S0 * x0 + S1 * x1);                                                  \
        st(rsi, ld(rsi) + S0 * S0 + S1 * S1);                                                  \
        const v16 f0 = x0 + (S0 - x0) * vsigmoid(G0), f1 = x1 + (S1 - x1) * vsigmoid(G1);     \
        st(fi, f0);                                                                            \
        st(fi + 16, f1);                                                                       \
        u0 += f0;                                                                              \
        u1 += f1;                                                                              \
    } while (0)
            SHAN_FUSE_ROW(ir[0], s00, s01, g00, g01);
            if (r + 1 < nreal) SHAN_FUSE_ROW(ir[1], s10, s11, g10, g11);
            if (r + 2 < nreal) SHAN_FUSE_ROW(ir[2], s20, s21, g20, g21);
            if (r + 3 < nreal) SHAN_FUSE_ROW(ir[3], s30, s31, g30, g31);
#undef SHAN_FUSE_ROW
        }
        /* the guide u = w * mean(x^c) is column-wise: this block's part is final, so the pooling
         * logits x^c_i . u get this block's share while the fused rows are still in L1 */
        const v16 w0 = u0 * splat(inv) * ld(w + c0), w1 = u1 * splat(inv) * ld(w + c0 + 16);
        for (int r = 0; r < nreal; r++) {
            const float *fi = f + (long)rows[r] * d + c0;
            float *li = lg + 16L * rows[r];
            st(li, ld(li) + ld(fi) * w0 + ld(fi + 16) * w1);
        }
    }
    for (int c = dv; c < d; c++) { /* scalar columns (d not a multiple of 32) */
        float uc = 0.f;
        for (int r = 0; r < nreal; r++) {
            const int i = rows[r];
            float s = 0.f, g = own[i * os + c];
            for (int j = 0; j < K; j++) {
                const float a = att[(long)i * K + j];
                s += a * src[j * ss + c];
                g += a * src[j * ss + d + c];
            }
            const float xv = x[i * ss + c];
            rn[16L * i] += s * xv;
            rs[16L * i] += s * s;
            const float fv = xv + (s - xv) * sigmoid1(g);
            f[(long)i * d + c] = fv;
            uc += fv;
        }
        uc *= inv * w[c];
        for (int r = 0; r < nreal; r++) lg[16L * rows[r]] += f[(long)rows[r] * d + c] * uc;
    }
    /* relevance mean; pooling weights softmax_i(x^c_i . u) and the context sum_i a_i x^c_i */
    float rsum = 0.f;
    for (int r = 0; r < nreal; r++) {
        const int i = rows[r];
        const float num = hsum(ld(rn + 16L * i)), sq = hsum(ld(rs + 16L * i));
        const float den = xnorm[i] * sqrtf(sq > 0.f ? sq : 0.f);
        rsum += num / (den > EPS ? den : EPS);
        wt[i] = hsum(ld(lg + 16L * i));
    }
    softmax_rows(nreal, rows, wt);
    weighted_sum(nreal, rows, wt, f, d, d, ctx);
    return rsum * inv;
}

/* Global-to-local attention: context q (d) over rows y (L rows, ys floats apart):
 * softmax_i(lam cos(q, y_i)) over real rows, the attended vector in out (d). */
static void g2l_attend(int L, int d, const float *q, const float *y, long ys, const float *ynorm,
                       const float *mask, float lam, float *wt, int *rows, float *out) {
    const int nreal = real_rows(L, mask, rows);
    const float qn = sqrtf(dot(q, q, d));
    for (int r = 0; r < nreal; r++) {
        const int i = rows[r];
        const float den = qn * ynorm[i];
        wt[i] = lam * dot(q, y + i * ys, d) / (den > EPS ? den : EPS);
    }
    softmax_rows(nreal, rows, wt);
    weighted_sum(nreal, rows, wt, y, ys, d, out);
}

/* Step 1 attention of one pair from its affinities aff(i, j) = aff[i * ars + j] (k x n):
 * ex = exp(lam (A - 1)) on real (region, word) pairs (|A| <= 1: no overflow, and no underflow to 0
 * for lam <= 40), alpha (k x n) normalised over words, beta_t (n x k) over regions. */
static void attention(int k, int n, const float *aff, long ars, const float *mv, const float *mt,
                      float lam, float *alpha, float *beta_t, float *col) {
    const float c = lam * LOG2E;
    float buf[16];
    for (int j = 0; j < n; j++) col[j] = 0.f;
    for (int i = 0; i < k; i++) {
        float *ai = alpha + (long)i * n;
        const float *fi = aff + i * ars;
        float row = 0.f;
        if (mv[i] != 0.f) {
            for (int j0 = 0; j0 < n; j0 += 16) { /* 16 words per vector exp */
                const int nw = n - j0 < 16 ? n - j0 : 16;
                for (int l = 0; l < 16; l++) buf[l] = l < nw ? fi[j0 + l] : 1.f;
                st(buf, vexp2(splat(c) * (ld(buf) - splat(1.f))));
                for (int l = 0; l < nw; l++) {
                    const float ex = mt[j0 + l] != 0.f ? buf[l] : 0.f;
                    ai[j0 + l] = ex;
                    row += ex;
                    col[j0 + l] += ex;
                }
            }
        } else {
            for (int j = 0; j < n; j++) ai[j] = 0.f;
        }
        const float ir = row > 0.f ? 1.f / row : 0.f;
        for (int j = 0; j < n; j++) beta_t[(long)j * k + i] = ai[j]; /* unnormalised for now */
        for (int j = 0; j < n; j++) ai[j] *= ir;
    }
    for (int j = 0; j < n; j++) {
        const float ic = col[j] > 0.f ? 1.f / col[j] : 0.f;
        float *bj = beta_t + (long)j * k;
        for (int i = 0; i < k; i++) bj[i] *= ic;
    }
}

/* Pairs p in [p0, p1) of an (nc images x mc captions) block, p = image * mc + caption.
 * aff: (nc, k, mc, n) step-1 affinities. Images: ibias (nc, k, 2d) = [-v ; -(W_own v + b)] (only
 * the second half is read), isrc (nc, k rows ss floats apart, 2d) = [v ; -W_att v] (its first half
 * is also where the kernel reads v), imask / inorm (nc, k), icnt (nc); captions likewise.
 * Outputs (nc, mc): l2l, g2l, g2g. Returns 0, or 1 if out of memory. */
int shan_pairs(int nc, int mc, int k, int n, int d, long p0, long p1, long ss, const float *aff,
               const float *ibias, const float *isrc, const float *imask, const float *icnt,
               const float *inorm, const float *tbias, const float *tsrc, const float *tmask,
               const float *tcnt, const float *tnorm, const float *wi, const float *wt, float mu,
               float lam, float *l2l, float *g2l, float *g2g) {
    const int L = k > n ? k : n;
    float *e = (float *)malloc(sizeof(float) * ((size_t)L * (d + 50) + 5 * (size_t)d +
                                                2 * (size_t)k * n + (size_t)n));
    int *rows = (int *)malloc(sizeof(int) * (size_t)L);
    if (!e || !rows) {
        free(e);
        free(rows);
        return 1;
    }
    float *vc = e + (size_t)L * d, *tc = vc + d, *tsc = tc + d, *vsc = tsc + d, *tmp = vsc + d,
          *part = tmp + d, *wv = part + 48 * (size_t)L, *al = wv + L, *bt = al + (size_t)k * n,
          *col = bt + (size_t)k * n;
    const long d2 = 2L * d, kmn = (long)k * mc * n;
    (void)nc;
    for (long p = p0; p < p1; p++) {
        const long v = p / mc, m = p % mc;
        const float *s_v = isrc + v * k * ss, *m_v = imask + v * k, *n_v = inorm + v * k;
        const float *s_t = tsrc + m * n * ss, *m_t = tmask + m * n, *n_t = tnorm + m * n;
        attention(k, n, aff + v * kmn + m * n, (long)mc * n, m_v, m_t, lam, al, bt, col);
        /* step 1 relevance + step 2 fusion and pooling: regions attend to the words with alpha,
         * words to the regions with beta (the regions v are the first half of isrc's rows) */
        const float r_v = side(k, n, d, al, s_t, s_v, ss, ibias + v * k * d2 + d, d2, m_v,
                               icnt[v], wi, n_v, e, part, wv, rows, vc);
        const float r_t = side(n, k, d, bt, s_v, s_t, ss, tbias + m * n * d2 + d, d2, m_t,
                               tcnt[m], wt, n_t, e, part, wv, rows, tc);
        l2l[p] = mu * r_v + (1.f - mu) * r_t;
        /* step 2 global-to-local */
        g2l_attend(n, d, vc, s_t, ss, n_t, m_t, lam, wv, rows, tsc);
        g2l_attend(k, d, tc, s_v, ss, n_v, m_v, lam, wv, rows, vsc);
        g2l[p] = 0.5f * (cosv(vc, tsc, d) + cosv(tc, vsc, d));
        /* step 3 global-to-global */
        for (int c = 0; c < d; c++) { tmp[c] = vc[c] + tsc[c]; vsc[c] += tc[c]; }
        g2g[p] = cosv(tmp, vsc, d);
    }
    free(e);
    free(rows);
    return 0;
}
