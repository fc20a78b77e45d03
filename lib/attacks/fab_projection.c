/*
 * FAB's L-inf projection (spec/autoattack.md §4.3): the smallest-L-inf
 * displacement d with <w, t + d> = b and t + d in [0,1]^D.
 *
 * After orienting the hyperplane so that <w, .> must decrease by -c >= 0,
 * every coordinate moves towards the box face that helps (a_i = 1 where
 * w_i < 0, else 0), with room p_i. A budget lambda changes the inner
 * product by phi(lambda) = -sum |w_i| min(lambda, p_i), piecewise linear
 * with breakpoints at the p_i. The three outcomes, as the reference:
 *   (a) c <= phi(inf) = b0: unreachable; go to the corner a (d_full);
 *   (b) nothing saturates: lambda = (SB_last - c) / S_last, clamped at 0;
 *   (c) otherwise lambda on the segment found by the reference's binary
 *       search over p sorted descending (ceil(log2 D) floor-midpoint
 *       halvings), d_i = +-min(lambda, p_i).
 * Zero-weight coordinates never move.
 *
 * Rounding follows the reference's float32 tensors: element products
 * (w_i t_i, w_i d_i, |w_i| p_i) are float, reductions and cumulative sums
 * are accumulated in double (as PyTorch's CPU cumsum) and rounded to float
 * where the reference stores a tensor, and the scalar arithmetic on those
 * sums is float. Only the sort order of ties differs (the reference's sort
 * is unstable); phi at a breakpoint does not depend on it.
 *
 * The sort (case (c) only) is an LSD radix sort on the float bits of p,
 * carrying |w_i| in the low word: O(D) and allocation-free.
 */
#include <math.h>
#include <string.h>

#include "attacks/autoattack_internal.h"

size_t elle__fab_projection_scratch_bytes(int64_t numel)
{
    /* two (numel) uint64 arrays: the radix sort's keys and its ping-pong
     * buffer, the latter reused for the cumulative sums */
    return (size_t)(numel > 0 ? numel : 1) * 2 * sizeof(uint64_t);
}

/* Float bits mapped so that unsigned order is float order (p may be a
 * rounding below 0 when t strays a hair outside the box). */
static uint32_t order_key(float v)
{
    uint32_t u;
    v += 0.0f; /* -0 -> +0 */
    memcpy(&u, &v, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static float key_float(uint32_t k)
{
    uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* Stable ascending sort of a[] by the high 32 bits; tmp is the same size. */
static void radix_sort_hi32(uint64_t *a, uint64_t *tmp, int64_t n)
{
    uint64_t *src = a, *dst = tmp;
    for (int pass = 0; pass < 4; pass++) {
        const int shift = 32 + 8 * pass;
        int64_t count[257] = {0};
        for (int64_t i = 0; i < n; i++)
            count[((src[i] >> shift) & 0xffu) + 1]++;
        if (count[1 + ((src[0] >> shift) & 0xffu)] == n)
            continue; /* all keys share this byte: the pass is the identity */
        for (int b = 0; b < 256; b++)
            count[b + 1] += count[b];
        for (int64_t i = 0; i < n; i++)
            dst[count[(src[i] >> shift) & 0xffu]++] = src[i];
        uint64_t *sw = src;
        src = dst;
        dst = sw;
    }
    if (src != a)
        memcpy(a, src, (size_t)n * sizeof *a);
}

void elle__fab_projection_linf(const float *t, const float *w, float b, int64_t numel,
                               float *d, void *scratch)
{
    const int64_t D = numel;

    /* orientation: keep (w, b) iff <w, t> - b >= 0 */
    double acc = 0.0;
    for (int64_t i = 0; i < D; i++)
        acc += (double)(w[i] * t[i]);
    const float wt = (float)acc;
    const float sign = (wt - b >= 0.0f) ? 1.0f : -1.0f;
    /* the required change c = b' - <w', t> <= 0, w' = sign w, b' = sign b */
    const float c = sign * b - sign * wt;

    /* a_i = [w'_i < 0]; p_i = room towards that face; d_full_i = (a_i - t_i) [w_i != 0].
     * Totals for the no-sort cases: b0 = <w', d_full>, S_last = ||w||_1, the
     * last cumulative sum of |w_i| p_i, and p_min over all coordinates. */
    double acc_b0 = 0.0, acc_s = 0.0, acc_bs = 0.0;
    float p_min = INFINITY;
    for (int64_t i = 0; i < D; i++) {
        const float wi = sign * w[i];
        const int a = wi < 0.0f;
        const float p = a ? 1.0f - t[i] : t[i];
        if (p < p_min)
            p_min = p;
        if (wi != 0.0f) {
            const float dfull = a ? 1.0f - t[i] : -t[i];
            acc_b0 += (double)(wi * dfull);
            acc_s += (double)fabsf(wi);
            acc_bs += (double)(fabsf(wi) * p);
        }
        d[i] = (wi != 0.0f) ? (a ? 1.0f - t[i] : -t[i]) : 0.0f;
    }
    const float b0 = (float)acc_b0;
    const float s_last = (float)acc_s;
    const float sb_last = (float)acc_bs + b0;
    const float b2 = sb_last - s_last * p_min;

    if (c - b2 > 0.0f) {
        /* (b) no coordinate saturates */
        float lambda = (c - sb_last) / (-s_last);
        if (!(lambda >= 0.0f))
            lambda = 0.0f;
        for (int64_t i = 0; i < D; i++) {
            const float wi = sign * w[i];
            d[i] = (wi != 0.0f) ? (wi < 0.0f ? lambda : -lambda) : 0.0f;
        }
        return;
    }
    if (!(c - b0 > 0.0f))
        return; /* (a) unreachable inside the box: d = d_full (already written) */

    /* (c) sort p descending (ascending radix sort, read backwards) carrying |w| */
    uint64_t *keys = scratch;
    uint64_t *tmp = keys + D;
    for (int64_t i = 0; i < D; i++) {
        const float wi = sign * w[i];
        const float p = (wi < 0.0f) ? 1.0f - t[i] : t[i];
        const float aw = fabsf(wi);
        uint32_t awbits;
        memcpy(&awbits, &aw, sizeof awbits);
        keys[i] = ((uint64_t)order_key(p) << 32) | awbits;
    }
    radix_sort_hi32(keys, tmp, D);

    /* position k (descending): p_(k) = key_float(keys[D-1-k]);
     * s[k] = sum_{j<=k} |w_(j)|, sb[k] = sum_{j<=k} |w_(j)| p_(j) + b0 */
    float *s = (float *)tmp;
    float *sb = s + D;
    double cs = 0.0, cb = 0.0;
    for (int64_t k = 0; k < D; k++) {
        const uint64_t e = keys[D - 1 - k];
        const float p = key_float((uint32_t)(e >> 32));
        const uint32_t awbits = (uint32_t)e;
        float aw;
        memcpy(&aw, &awbits, sizeof aw);
        cs += (double)aw;
        cb += (double)(aw * p);
        s[k] = (float)cs;
        sb[k] = (float)cb + b0;
    }

    /* the reference's binary search: lb, ub start at 0 and D-1 */
    int64_t lb = 0, ub = D - 1;
    int niter = 0;
    while (((int64_t)1 << niter) < D)
        niter++; /* ceil(log2 D) */
    for (int it = 0; it < niter; it++) {
        const int64_t mid = (lb + ub) / 2;
        const float p_mid = key_float((uint32_t)(keys[D - 1 - mid] >> 32));
        const float phi = sb[mid] - s[mid] * p_mid;
        if (c - phi > 0.0f)
            lb = mid;
        else
            ub = mid;
    }
    float lambda;
    if (s[lb] != 0.0f)
        lambda = (c - sb[lb]) / (-s[lb]);
    else /* IEEE's +-inf of the reference; its NaN (0/0) taken as 0 */
        lambda = (sb[lb] > c) ? INFINITY : 0.0f;
    if (!(lambda >= 0.0f))
        lambda = 0.0f;
    for (int64_t i = 0; i < D; i++) {
        const float wi = sign * w[i];
        if (wi == 0.0f)
            d[i] = 0.0f;
        else if (wi < 0.0f)
            d[i] = fminf(lambda, d[i]); /* towards 1: d_full = 1 - t_i */
        else
            d[i] = fmaxf(-lambda, d[i]); /* towards 0: d_full = -t_i */
    }
}
