/* SHAN fused CPU kernel: steps 1 (attention and relevance), 2 and 3 for a block of image-caption
 * pairs, each pair's data kept in L1/L2 (the batched torch path is bound by memory bandwidth on a
 * CPU). The maths is docs/METHOD.md's; shan/model/alignment.py is the readable reference.
 *
 * Inputs are prepared by shan/model/scoring.py (PreparedImages / PreparedCaptions); the step-1
 * affinities come from torch (one GEMM per chunk). Loaded by shan/model/fused_cpu.py, which
 * declares shan_pairs' signature once and checks every argument before the call: keep the two in
 * step (tests/test_fused_cpu.py compares them).
 *
 * C99 + GCC vector extensions; built without -ffast-math (which would switch the whole process to
 * flush-to-zero), with the individual flags listed in fused_cpu.py. */
#include <math.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef int vi16 __attribute__((vector_size(64)));

#define EPS 1e-8f

static inline v16 ld(const float *p) { return *(const v16u *)p; }
static inline void st(float *p, v16 v) { *(v16u *)p = v; }
static inline v16 splat(float a) { return (v16){a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a}; }
static inline float hsum(v16 v) {
    float s = 0.f;
    for (int i = 0; i < 16; i++) s += v[i];
    return s;
}

/* 2^f for |f| <= 1/2: degree-6 polynomial (relative error ~2e-7). */
static inline v16 exp2_poly(v16 f) {
    v16 p = splat(1.54035304e-4f);
    p = p * f + splat(1.33335581e-3f);
    p = p * f + splat(9.61812911e-3f);
    p = p * f + splat(5.55041087e-2f);
    p = p * f + splat(2.40226507e-1f);
    p = p * f + splat(6.93147181e-1f);
    p = p * f + splat(1.0f);
    return p;
}

/* 1 / (1 + exp(-g)), exp via exp2_poly and an exponent scale. */
static inline v16 vsigmoid(v16 g) {
#if defined(__AVX512F__) && !defined(SHAN_NO_RCP)
    /* exp(-g) = 2^r * 2^f (r = round(-g log2 e), |f| <= 1/2) with VSCALEFPS doing the 2^r: no
     * integer conversions, and only the overflow side needs a clamp (den stays finite). */
    const __m512 t = _mm512_min_ps(_mm512_mul_ps((__m512)g, _mm512_set1_ps(-1.44269504088896341f)),
                                   _mm512_set1_ps(126.f));
    const __m512 r = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const v16 f = (v16)_mm512_sub_ps(t, r);
    const v16 p = exp2_poly(f);
    const v16 den = splat(1.f) + (v16)_mm512_scalef_ps((__m512)p, r);
    /* reciprocal estimate (14 bits) + one Newton step: ~1e-7 relative error, no division */
    v16 rc = (v16)_mm512_rcp14_ps((__m512)den);
    return rc * (splat(2.f) - den * rc);
#else
    v16 x = -g;
    vi16 lo = x < splat(-87.f), hi = x > splat(87.f);
    x = (v16)((lo & (vi16)splat(-87.f)) | (~lo & (vi16)x));
    x = (v16)((hi & (vi16)splat(87.f)) | (~hi & (vi16)x));
    v16 t = x * splat(1.44269504088896341f);
    vi16 n = __builtin_convertvector(t + splat(128.5f), vi16) - 128;
    v16 f = t - __builtin_convertvector(n, v16);
    const v16 p = exp2_poly(f);
    v16 scale = (v16)((n + 127) << 23);
    return splat(1.f) / (splat(1.f) + p * scale);
#endif
}

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

static inline float sigmoid1(float g) { return 1.f / (1.f + expf(-g)); }

/* One side of step 2 for one pair: gated fusion, context pooling -> ctx (d); also the step-1
 * relevance mean over real rows (cos(x_i, star_i), star = the attended vector).
 * att(i, j) = att[i * ars + j * acs] (L rows x K), src (K x 2d) = [y ; -W_att y],
 * bias (L x 2d) = [-x ; -(W_own x + b)], x (L x d). Scratch: f (L x d) fused rows x^c,
 * u (d), wt (L), rv (2 L x 16), rows (L ints). */
static void side(int L, int K, int d, const float *att, long ars, long acs, const float *src,
                 long ss,
                 const float *bias, const float *x, const float *mask, float cnt, const float *w,
                 const float *xnorm, float *f, float *u, float *wt, float *rv, float *ctx,
                 float *rel_mean, int *rows) {
    const long d2 = 2L * d;
    const int dv = (d % 64 == 0) ? d : 0; /* vector path for d multiple of 64 */
    const float inv = 1.f / cnt;
    float *rn = rv, *rs = rv + 16L * L; /* per-row partial dot products, 16 lanes each */
    memset(rv, 0, sizeof(float) * 32 * (size_t)L);
    int nreal = 0;
    for (int i = 0; i < L; i++)
        if (mask[i] != 0.f) rows[nreal++] = i;
    for (int c0 = 0; c0 < dv; c0 += 64) {
        v16 u0 = splat(0.f), u1 = u0, u2 = u0, u3 = u0;
        /* two rows at a time: each src vector loaded once feeds 2 FMAs, 16 independent chains */
        for (int r = 0; r < nreal; r += 2) {
            const int ia = rows[r], ib = rows[r + 1 < nreal ? r + 1 : r];
            const float *ba = bias + ia * d2 + c0, *bb = bias + ib * d2 + c0;
            v16 s0 = ld(ba), s1 = ld(ba + 16), s2 = ld(ba + 32), s3 = ld(ba + 48);
            v16 g0 = ld(ba + d), g1 = ld(ba + d + 16), g2 = ld(ba + d + 32), g3 = ld(ba + d + 48);
            v16 q0 = ld(bb), q1 = ld(bb + 16), q2 = ld(bb + 32), q3 = ld(bb + 48);
            v16 h0 = ld(bb + d), h1 = ld(bb + d + 16), h2 = ld(bb + d + 32), h3 = ld(bb + d + 48);
            const float *aa = att + ia * ars, *ab = att + ib * ars;
            for (int j = 0; j < K; j++) {
                const v16 va = splat(aa[j * acs]), vb = splat(ab[j * acs]);
                const float *sj = src + j * ss + c0;
                const v16 y0 = ld(sj), y1 = ld(sj + 16), y2 = ld(sj + 32), y3 = ld(sj + 48);
                const v16 z0 = ld(sj + d), z1 = ld(sj + d + 16), z2 = ld(sj + d + 32),
                          z3 = ld(sj + d + 48);
                s0 += va * y0; s1 += va * y1; s2 += va * y2; s3 += va * y3;
                g0 += va * z0; g1 += va * z1; g2 += va * z2; g3 += va * z3;
                q0 += vb * y0; q1 += vb * y1; q2 += vb * y2; q3 += vb * y3;
                h0 += vb * z0; h1 += vb * z1; h2 += vb * z2; h3 += vb * z3;
            }
            for (int h = 0; h < 2; h++) {
                if (h == 1 && r + 1 >= nreal) break;
                const int i = h ? ib : ia;
                if (h) { s0 = q0; s1 = q1; s2 = q2; s3 = q3; g0 = h0; g1 = h1; g2 = h2; g3 = h3; }
                const float *xi = x + (long)i * d + c0;
                float *fi = f + (long)i * d + c0;
                v16 x0 = ld(xi), x1 = ld(xi + 16), x2 = ld(xi + 32), x3 = ld(xi + 48);
                v16 t0 = s0 + x0, t1 = s1 + x1, t2 = s2 + x2, t3 = s3 + x3; /* attended vector */
                st(rn + 16L * i, ld(rn + 16L * i) + t0 * x0 + t1 * x1 + t2 * x2 + t3 * x3);
                st(rs + 16L * i, ld(rs + 16L * i) + t0 * t0 + t1 * t1 + t2 * t2 + t3 * t3);
                /* fused x^c = x + (1 - g) (star - x) */
                v16 f0 = x0 + s0 * vsigmoid(g0), f1 = x1 + s1 * vsigmoid(g1);
                v16 f2 = x2 + s2 * vsigmoid(g2), f3 = x3 + s3 * vsigmoid(g3);
                st(fi, f0); st(fi + 16, f1); st(fi + 32, f2); st(fi + 48, f3);
                u0 += f0; u1 += f1; u2 += f2; u3 += f3;
            }
        }
        const v16 sc = splat(inv);
        st(u + c0, u0 * sc * ld(w + c0)); st(u + c0 + 16, u1 * sc * ld(w + c0 + 16));
        st(u + c0 + 32, u2 * sc * ld(w + c0 + 32)); st(u + c0 + 48, u3 * sc * ld(w + c0 + 48));
    }
    for (int c = dv; c < d; c++) { /* scalar path (d not a multiple of 64) */
        float uc = 0.f;
        for (int i = 0; i < L; i++) {
            if (mask[i] == 0.f) continue;
            float s = bias[i * d2 + c], g = bias[i * d2 + d + c];
            for (int j = 0; j < K; j++) {
                const float a = att[i * ars + j * acs];
                s += a * src[j * ss + c];
                g += a * src[j * ss + d + c];
            }
            const float xv = x[(long)i * d + c], t = s + xv;
            rn[16L * i] += t * xv;
            rs[16L * i] += t * t;
            const float fv = xv + s * sigmoid1(g);
            f[(long)i * d + c] = fv;
            uc += fv;
        }
        u[c] = uc * inv * w[c];
    }
    /* relevance mean; pooling weights softmax_i(f_i . u) and context, one pass (online softmax) */
    float rsum = 0.f, mx = -3.0e38f, z = 0.f;
    for (int c = 0; c < d; c++) ctx[c] = 0.f;
    for (int i = 0; i < L; i++) {
        if (mask[i] == 0.f) continue;
        const float num = hsum(ld(rn + 16L * i)), sq = hsum(ld(rs + 16L * i));
        const float den = xnorm[i] * sqrtf(sq > 0.f ? sq : 0.f);
        rsum += num / (den > EPS ? den : EPS);
        const float *fi = f + (long)i * d;
        const float l = dot(fi, u, d);
        if (l > mx) {
            const float r = expf(mx - l);
            for (int c = 0; c < d; c++) ctx[c] *= r;
            z *= r;
            mx = l;
        }
        const float a = expf(l - mx);
        z += a;
        for (int c = 0; c < d; c++) ctx[c] += a * fi[c];
        wt[i] = a;
    }
    *rel_mean = rsum * inv;
    const float iz = 1.f / z;
    for (int c = 0; c < d; c++) ctx[c] *= iz;
}

/* Global-to-local attention: context q (d) over rows y (L x d): softmax_i(lam cos(q, y_i)) over
 * real rows, returns the attended vector in out (d). */
static void g2l_attend(int L, int d, const float *q, const float *y, const float *ynorm,
                       const float *mask, float lam, float *wt, float *out) {
    const float qn = sqrtf(dot(q, q, d));
    float mx = -3.0e38f, z = 0.f;
    for (int i = 0; i < L; i++) {
        if (mask[i] == 0.f) continue;
        const float den = qn * ynorm[i];
        wt[i] = lam * dot(q, y + (long)i * d, d) / (den > EPS ? den : EPS);
        if (wt[i] > mx) mx = wt[i];
    }
    for (int i = 0; i < L; i++) {
        if (mask[i] == 0.f) continue;
        wt[i] = expf(wt[i] - mx);
        z += wt[i];
    }
    for (int c = 0; c < d; c++) out[c] = 0.f;
    for (int i = 0; i < L; i++) {
        if (mask[i] == 0.f) continue;
        const float a = wt[i] / z;
        const float *yi = y + (long)i * d;
        for (int c = 0; c < d; c++) out[c] += a * yi[c];
    }
}

static float cosv(const float *a, const float *b, int d) {
    const float den = sqrtf(dot(a, a, d)) * sqrtf(dot(b, b, d));
    return dot(a, b, d) / (den > EPS ? den : EPS);
}

/* Step 1 attention of one pair from its affinities aff(i, j) = aff[i * ars + j] (k x n):
 * ex = exp(lam (A - 1)) on real (region, word) pairs (|A| <= 1: no overflow, and no underflow to 0
 * for lam <= 40), alpha (k x n) normalised over words, beta_t (n x k) over regions. */
static void attention(int k, int n, const float *aff, long ars, const float *mv, const float *mt,
                      float lam, float *alpha, float *beta_t, float *col) {
    for (int j = 0; j < n; j++) col[j] = 0.f;
    for (int i = 0; i < k; i++) {
        float *ai = alpha + (long)i * n;
        const float *fi = aff + i * ars;
        float row = 0.f;
        if (mv[i] != 0.f) {
            for (int j = 0; j < n; j++) {
                const float ex = mt[j] != 0.f ? expf(lam * (fi[j] - 1.f)) : 0.f;
                ai[j] = ex;
                row += ex;
                col[j] += ex;
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
 * aff: (nc, k, mc, n) step-1 affinities. Outputs (nc, mc): l2l, g2l, g2g.
 * Returns 0, or 1 if out of memory. */
int shan_pairs(int nc, int mc, int k, int n, int d, long p0, long p1, long ss, const float *aff,
               const float *iv, const float *ibias, const float *isrc, const float *imask,
               const float *icnt, const float *inorm, const float *tt, const float *tbias,
               const float *tsrc, const float *tmask, const float *tcnt, const float *tnorm,
               const float *wi, const float *wt, float mu, float lam, float *l2l, float *g2l,
               float *g2g) {
    const int L = k > n ? k : n;
    const size_t extra = 6 * (size_t)d + 33 * (size_t)L + 2 * (size_t)k * n + (size_t)n;
    float *e = (float *)malloc(sizeof(float) * ((size_t)L * d + extra));
    int *rows = (int *)malloc(sizeof(int) * (size_t)L);
    if (!e || !rows) {
        free(e);
        free(rows);
        return 1;
    }
    float *u = e + (size_t)L * d, *vc = u + d, *tc = vc + d, *tsc = tc + d, *vsc = tsc + d,
          *tmp = vsc + d, *wv = tmp + d, *rv = wv + L, *al = rv + 32 * (size_t)L,
          *bt = al + (size_t)k * n, *col = bt + (size_t)k * n;
    const long d2 = 2L * d, kmn = (long)k * mc * n;
    (void)nc;
    for (long p = p0; p < p1; p++) {
        const long v = p / mc, m = p % mc;
        const float *x_v = iv + v * k * d, *m_v = imask + v * k, *n_v = inorm + v * k;
        const float *x_t = tt + m * n * d, *m_t = tmask + m * n, *n_t = tnorm + m * n;
        float r_v, r_t;
        attention(k, n, aff + v * kmn + m * n, (long)mc * n, m_v, m_t, lam, al, bt, col);
        /* step 1 relevance + step 2 fusion/pooling, region side then word side */
        side(k, n, d, al, n, 1, tsrc + m * n * ss, ss, ibias + v * k * d2, x_v, m_v, icnt[v], wi,
             n_v, e, u, wv, rv, vc, &r_v, rows);
        side(n, k, d, bt, k, 1, isrc + v * k * ss, ss, tbias + m * n * d2, x_t, m_t, tcnt[m], wt,
             n_t, e, u, wv, rv, tc, &r_t, rows);
        l2l[p] = mu * r_v + (1.f - mu) * r_t;
        /* step 2 global-to-local */
        g2l_attend(n, d, vc, x_t, n_t, m_t, lam, wv, tsc);
        g2l_attend(k, d, tc, x_v, n_v, m_v, lam, wv, vsc);
        g2l[p] = 0.5f * (cosv(vc, tsc, d) + cosv(tc, vsc, d));
        /* step 3 global-to-global */
        for (int c = 0; c < d; c++) { u[c] = vc[c] + tsc[c]; tmp[c] = tc[c] + vsc[c]; }
        g2g[p] = cosv(u, tmp, d);
    }
    free(e);
    free(rows);
    return 0;
}
