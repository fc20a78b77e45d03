/*
 * Batch-norm kernels. Every op is: (optionally) a per-channel reduction,
 * a per-channel finalisation (one thread per channel: statistics, parameter
 * gradients, coefficients of the elementwise pass), then one elementwise
 * pass. The formulas are the reference backend's (ref_norm.c,
 * ref_tangent.c), evaluated in double in the same order.
 *
 * Determinism: a channel's M = n*hw elements are cut into `chunks` ranges
 * that depend only on the shape; one block sums a range (each thread a
 * fixed stride, then a fixed shared-memory tree) into a double partial, and
 * the finalisation adds the partials in chunk order. No atomics.
 */
#include <cuda_runtime.h>
#include <math.h>

#include "norm_kernels.h"
#include "launch.h"

namespace {

constexpr int kThreads = 256;       /* reduction and elementwise blocks */
constexpr int kFinThreads = 128;    /* finalisation: one thread per channel */
constexpr int kMaxSums = 7;         /* bwd tangent's seven channel sums */
constexpr int kNumCoef = 10;        /* per-channel doubles of the elementwise pass */
constexpr int64_t kPerChunk = 8192; /* elements a reduction block takes at least */
constexpr int64_t kMaxChunks = 128;
constexpr int64_t kMaxGrid = 1 << 16;

/* What a reduction sums per element (K terms each). */
enum SumMode { SUM_X, SUM_SQDEV, SUM_BWD, SUM_FWDT, SUM_BWDT };
/* What the elementwise pass writes. */
enum ApplyMode { AP_FWD, AP_BWD, AP_FWDT, AP_BWDT };

/* Per-channel coefficient slots (coef[ch*kNumCoef + slot]): gamma, mean
 * and inverse deviation s for every pass, then the pass's own. */
enum {
    C_GAMMA, C_MU, C_S,
    C_BETA = 3,                 /* forward */
    C_MG = 3, C_MGX,            /* backward: mean(g), mean(g xhat) */
    C_B = 3, C_A,               /* tangents: mean(t), mean(xhat t) */
    C_MG_T, C_MGX_T, C_MGT, C_MGTX, C_MG_XHAT_T /* backward tangent's means */
};

struct In {
    const float *x, *mask, *xt, *dy, *dyt;
};

int64_t chunks_of(int64_t n, int64_t hw)
{
    int64_t ch = (n * hw + kPerChunk - 1) / kPerChunk;
    return ch < 1 ? 1 : ch > kMaxChunks ? kMaxChunks : ch;
}

int grid_of(int64_t work, int threads)
{
    int64_t b = (work + threads - 1) / threads;
    return (int)(b < 1 ? 1 : b > kMaxGrid ? kMaxGrid : b);
}

/* Scratch carve-up: coefficients, then the partial sums. */
struct Scratch {
    double *coef, *part;
};

Scratch carve(void *scratch, int64_t c)
{
    Scratch s;
    s.coef = static_cast<double *>(scratch);
    s.part = s.coef + c * kNumCoef;
    return s;
}

/* The fused relu's routing: y > 0 keeps the gradient (NaN does not). */
__device__ __forceinline__ bool passes(const float *mask, int64_t i)
{
    return !mask || mask[i] > 0.0f;
}

/* The K terms one element adds to its channel's sums. */
template <int MODE>
__device__ __forceinline__ void terms(const In &in, int64_t i, double mu, double s, double *v)
{
    const double x = in.x[i];
    if constexpr (MODE == SUM_X) {
        v[0] = x;
    } else if constexpr (MODE == SUM_SQDEV) {
        const double d = x - mu;
        v[0] = d * d;
    } else if constexpr (MODE == SUM_BWD) {
        const double g = passes(in.mask, i) ? (double)in.dy[i] : 0.0;
        const double xhat = (x - mu) * s;
        v[0] = g;
        v[1] = g * xhat;
    } else if constexpr (MODE == SUM_FWDT) {
        const double t = in.xt[i];
        v[0] = t;
        v[1] = (x - mu) * s * t;
    } else { /* SUM_BWDT: g, g xhat, gt, gt xhat, g t, t, xhat t */
        const double mk = passes(in.mask, i) ? 1.0 : 0.0;
        const double g = mk * in.dy[i], gt = mk * in.dyt[i], t = in.xt[i];
        const double xhat = (x - mu) * s;
        v[0] = g;
        v[1] = g * xhat;
        v[2] = gt;
        v[3] = gt * xhat;
        v[4] = g * t;
        v[5] = t;
        v[6] = xhat * t;
    }
}

/* Channel mean and inverse deviation: from the double mean of the first
 * training pass (mu_d) or from the float statistics given to the op. */
__device__ __forceinline__ void chan_stats(const double *mu_d, const float *mean, const float *var,
                                           float eps, int64_t ch, double *mu, double *s)
{
    if (mu_d) {
        *mu = mu_d[ch * kNumCoef + C_MU];
        *s = 0.0;
    } else if (mean) {
        *mu = mean[ch];
        *s = 1.0 / sqrt((double)var[ch] + (double)eps);
    } else {
        *mu = 0.0;
        *s = 0.0;
    }
}

/* part[(ch*chunks + j)*K + k] = sum of term k over chunk j of channel ch. */
template <int MODE, int K>
__global__ void __launch_bounds__(kThreads)
    bn_reduce(In in, int64_t n, int64_t c, int64_t hw, int64_t chunks, const double *mu_d,
              const float *mean, const float *var, float eps, double *part)
{
    __shared__ double sh[K][kThreads];
    const int tid = threadIdx.x;
    const int64_t m = n * hw, per = (m + chunks - 1) / chunks;
    /* the block's stride in (sample, position) steps, so the loop needs no
     * division: step_p < hw always */
    const int64_t step_n = kThreads / hw, step_p = kThreads % hw;
    for (int64_t task = blockIdx.x; task < c * chunks; task += gridDim.x) {
        const int64_t ch = task / chunks, j = task % chunks;
        double mu, s;
        chan_stats(mu_d, mean, var, eps, ch, &mu, &s);
        double acc[K];
        for (int k = 0; k < K; k++)
            acc[k] = 0.0;
        const int64_t end = (j + 1) * per < m ? (j + 1) * per : m;
        int64_t e = j * per + tid, ni = e / hw, p = e % hw;
        for (; e < end; e += kThreads) {
            double v[K];
            terms<MODE>(in, (ni * c + ch) * hw + p, mu, s, v);
            for (int k = 0; k < K; k++)
                acc[k] += v[k];
            ni += step_n;
            p += step_p;
            if (p >= hw) {
                p -= hw;
                ni++;
            }
        }
        for (int k = 0; k < K; k++)
            sh[k][tid] = acc[k];
        __syncthreads();
        for (int w = kThreads / 2; w > 0; w >>= 1) {
            if (tid < w)
                for (int k = 0; k < K; k++)
                    sh[k][tid] += sh[k][tid + w];
            __syncthreads();
        }
        if (tid == 0)
            for (int k = 0; k < K; k++)
                part[(ch * chunks + j) * K + k] = sh[k][0];
        __syncthreads(); /* sh is reused by the next task */
    }
}

/* The K channel totals, partials added in chunk order (zeros without part). */
template <int K>
__device__ __forceinline__ void channel_sums(const double *part, int64_t ch, int64_t chunks,
                                             double *S)
{
    for (int k = 0; k < K; k++)
        S[k] = 0.0;
    if (!part)
        return;
    for (int64_t j = 0; j < chunks; j++)
        for (int k = 0; k < K; k++)
            S[k] += part[(ch * chunks + j) * K + k];
}

#define FOR_EACH_CHANNEL(ch, c)                                                      \
    for (int64_t ch = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; ch < (c);     \
         ch += (int64_t)gridDim.x * blockDim.x)

__global__ void fin_train_mean(int64_t c, int64_t chunks, double m, const double *part,
                               double *coef)
{
    FOR_EACH_CHANNEL(ch, c) {
        double S[1];
        channel_sums<1>(part, ch, chunks, S);
        coef[ch * kNumCoef + C_MU] = S[0] / m;
    }
}

__global__ void fin_train_var(int64_t c, int64_t chunks, int64_t m_count, float eps,
                              float momentum, const float *gamma, const float *beta,
                              float *running_mean, float *running_var, float *save_mean,
                              float *save_var, const double *part, double *coef)
{
    FOR_EACH_CHANNEL(ch, c) {
        double S[1];
        channel_sums<1>(part, ch, chunks, S);
        double *k = coef + ch * kNumCoef;
        const double mean = k[C_MU], var = S[0] / (double)m_count;
        const double mom = momentum;
        save_mean[ch] = (float)mean;
        save_var[ch] = (float)var;
        /* M == 1: the (zero) biased variance as is, as the reference */
        const double unbiased =
            m_count > 1 ? var * (double)m_count / (double)(m_count - 1) : var;
        running_mean[ch] = (float)((1.0 - mom) * (double)running_mean[ch] + mom * mean);
        running_var[ch] = (float)((1.0 - mom) * (double)running_var[ch] + mom * unbiased);
        k[C_GAMMA] = gamma[ch];
        k[C_S] = 1.0 / sqrt(var + (double)eps);
        k[C_BETA] = beta[ch];
    }
}

__global__ void fin_infer(int64_t c, float eps, const float *gamma, const float *beta,
                          const float *running_mean, const float *running_var, double *coef)
{
    FOR_EACH_CHANNEL(ch, c) {
        double *k = coef + ch * kNumCoef;
        k[C_GAMMA] = gamma[ch];
        k[C_MU] = running_mean[ch];
        k[C_S] = 1.0 / sqrt((double)running_var[ch] + (double)eps);
        k[C_BETA] = beta[ch];
    }
}

__global__ void fin_bwd(int64_t c, int64_t chunks, double m, float eps, const float *gamma,
                        const float *mean, const float *var, float *dgamma, float *dbeta,
                        const double *part, double *coef)
{
    FOR_EACH_CHANNEL(ch, c) {
        double S[2]; /* sum g, sum g xhat */
        channel_sums<2>(part, ch, chunks, S);
        double *k = coef + ch * kNumCoef;
        chan_stats(nullptr, mean, var, eps, ch, &k[C_MU], &k[C_S]);
        k[C_GAMMA] = gamma[ch];
        k[C_MG] = S[0] / m;
        k[C_MGX] = S[1] / m;
        if (dgamma)
            dgamma[ch] += (float)S[1];
        if (dbeta)
            dbeta[ch] += (float)S[0];
    }
}

__global__ void fin_fwd_tangent(int64_t c, int64_t chunks, double m, float eps,
                                const float *gamma, const float *mean, const float *var,
                                const double *part, double *coef)
{
    FOR_EACH_CHANNEL(ch, c) {
        double S[2]; /* sum t, sum xhat t */
        channel_sums<2>(part, ch, chunks, S);
        double *k = coef + ch * kNumCoef;
        chan_stats(nullptr, mean, var, eps, ch, &k[C_MU], &k[C_S]);
        k[C_GAMMA] = gamma[ch];
        k[C_B] = S[0] / m;
        k[C_A] = S[1] / m;
    }
}

__global__ void fin_bwd_tangent(int64_t c, int64_t chunks, double m, float eps, int training,
                                const float *gamma, const float *mean, const float *var,
                                float *dgamma_t, float *dbeta_t, const double *part,
                                double *coef)
{
    FOR_EACH_CHANNEL(ch, c) {
        double S[7]; /* g, g xhat, gt, gt xhat, g t, t, xhat t */
        channel_sums<7>(part, ch, chunks, S);
        double *k = coef + ch * kNumCoef;
        chan_stats(nullptr, mean, var, eps, ch, &k[C_MU], &k[C_S]);
        const double s = k[C_S];
        k[C_GAMMA] = gamma[ch];
        if (!training) {
            /* dgamma = sum g xhat with xhat_t = s t */
            if (dgamma_t)
                dgamma_t[ch] += (float)(S[3] + s * S[4]);
            if (dbeta_t)
                dbeta_t[ch] += (float)S[2];
            continue;
        }
        const double mg = S[0] / m, mgx = S[1] / m, mgt = S[2] / m, mgtx = S[3] / m,
                     b = S[5] / m, a = S[6] / m;
        /* mean(g xhat_t) with xhat_t = s (t - b - xhat a) */
        const double mg_xhat_t = s * (S[4] / m - b * mg - a * mgx);
        k[C_B] = b;
        k[C_A] = a;
        k[C_MG_T] = mg;
        k[C_MGX_T] = mgx;
        k[C_MGT] = mgt;
        k[C_MGTX] = mgtx;
        k[C_MG_XHAT_T] = mg_xhat_t;
        if (dgamma_t)
            dgamma_t[ch] += (float)(S[3] + m * mg_xhat_t);
        if (dbeta_t)
            dbeta_t[ch] += (float)S[2];
    }
}

/* The elementwise pass; I is the index type (32 bits when it fits: the
 * channel of an element costs a division). */
template <int MODE, typename I>
__global__ void __launch_bounds__(kThreads)
    bn_apply(In in, I total, I c, I hw, int flag, const double *coef, float *out)
{
    for (I i = (I)blockIdx.x * kThreads + threadIdx.x; i < total; i += (I)gridDim.x * kThreads) {
        const double *k = coef + (i / hw % c) * kNumCoef;
        const double gm = k[C_GAMMA], mu = k[C_MU], s = k[C_S];
        if constexpr (MODE == AP_FWD) { /* flag: fuse_relu */
            double v = gm * ((double)in.x[i] - mu) * s + k[C_BETA];
            if (flag && v < 0.0)
                v = 0.0;
            out[i] = (float)v;
        } else if constexpr (MODE == AP_BWD) { /* flag: training */
            const double g = passes(in.mask, i) ? (double)in.dy[i] : 0.0;
            double d;
            if (flag) {
                const double xhat = ((double)in.x[i] - mu) * s;
                d = gm * s * (g - k[C_MG] - xhat * k[C_MGX]);
            } else {
                d = gm * s * g;
            }
            out[i] = (float)d;
        } else if constexpr (MODE == AP_FWDT) { /* flag: training */
            const double mk = passes(in.mask, i) ? 1.0 : 0.0;
            const double t = in.xt[i];
            double xhat_t;
            if (flag) {
                const double xhat = ((double)in.x[i] - mu) * s;
                xhat_t = s * (t - k[C_B] - xhat * k[C_A]);
            } else {
                xhat_t = s * t;
            }
            out[i] = (float)(mk * gm * xhat_t);
        } else { /* AP_BWDT, flag: training */
            const double mk = passes(in.mask, i) ? 1.0 : 0.0;
            if (!flag) {
                out[i] = (float)(gm * s * mk * (double)in.dyt[i]);
                continue;
            }
            const double g = mk * in.dy[i], gt = mk * in.dyt[i], t = in.xt[i];
            const double a = k[C_A], mg = k[C_MG_T], mgx = k[C_MGX_T];
            const double xhat = ((double)in.x[i] - mu) * s;
            const double xhat_t = s * (t - k[C_B] - xhat * a);
            /* d/dt of gamma s (g - mean g - xhat mean(g xhat)): s_t = -s^2 a,
             * then the bracket's own tangent */
            const double d = -s * a * (g - mg - xhat * mgx) + gt - k[C_MGT] - xhat_t * mgx -
                             xhat * (k[C_MGTX] + k[C_MG_XHAT_T]);
            out[i] = (float)(gm * s * d);
        }
    }
}

template <int MODE, int K>
cudaError_t reduce(cudaStream_t stream, const In &in, int64_t n, int64_t c, int64_t hw,
                   const double *mu_d, const float *mean, const float *var, float eps,
                   double *part)
{
    const int64_t chunks = chunks_of(n, hw);
    const int64_t tasks = c * chunks;
    const int grid = (int)(tasks > kMaxGrid ? kMaxGrid : tasks);
    ELLE_LAUNCH(grid, kThreads, stream, bn_reduce<MODE, K>)
        (in, n, c, hw, chunks, mu_d, mean, var, eps, part);
    return cudaGetLastError();
}

template <int MODE>
cudaError_t apply(cudaStream_t stream, const In &in, int64_t n, int64_t c, int64_t hw, int flag,
                  const double *coef, float *out)
{
    const int64_t total = n * c * hw;
    const int grid = grid_of(total, kThreads);
    /* i + grid*threads must not wrap either */
    if (total + (int64_t)grid * kThreads <= (int64_t)UINT32_MAX)
        ELLE_LAUNCH(grid, kThreads, stream, bn_apply<MODE, unsigned>)
            (in, (unsigned)total, (unsigned)c, (unsigned)hw, flag, coef, out);
    else
        ELLE_LAUNCH(grid, kThreads, stream, bn_apply<MODE, unsigned long long>)
            (in, (unsigned long long)total, (unsigned long long)c, (unsigned long long)hw, flag,
             coef, out);
    return cudaGetLastError();
}

#define TRY(call)                                                                    \
    do {                                                                             \
        cudaError_t e_ = (call);                                                     \
        if (e_ != cudaSuccess)                                                       \
            return (int)e_;                                                          \
    } while (0)

#define FIN_LAUNCH(kernel, c, stream, ...)                                                         \
    do {                                                                                           \
        ELLE_LAUNCH(grid_of((c), kFinThreads), kFinThreads, (stream), kernel)((c), __VA_ARGS__);   \
        TRY(cudaGetLastError());                                                                   \
    } while (0)

In make_in(const float *x, const float *mask, const float *xt, const float *dy, const float *dyt)
{
    In in;
    in.x = x;
    in.mask = mask;
    in.xt = xt;
    in.dy = dy;
    in.dyt = dyt;
    return in;
}

} /* namespace */

extern "C" size_t elle__cuda_bn_scratch_bytes(int64_t n, int64_t c, int64_t hw)
{
    return (size_t)(c * kNumCoef + c * chunks_of(n, hw) * kMaxSums) * sizeof(double);
}

extern "C" int elle__cuda_launch_bn_fwd_train(cudaStream_t stream, int64_t n, int64_t c,
                                              int64_t hw, float eps, float momentum,
                                              int fuse_relu, const float *x, const float *gamma,
                                              const float *beta, float *running_mean,
                                              float *running_var, float *y, float *save_mean,
                                              float *save_var, void *scratch)
{
    const Scratch sc = carve(scratch, c);
    const In in = make_in(x, nullptr, nullptr, nullptr, nullptr);
    const int64_t chunks = chunks_of(n, hw), m = n * hw;
    /* two passes, the second around the mean, as the reference */
    TRY((reduce<SUM_X, 1>(stream, in, n, c, hw, nullptr, nullptr, nullptr, eps, sc.part)));
    FIN_LAUNCH(fin_train_mean, c, stream, chunks, (double)m, sc.part, sc.coef);
    TRY((reduce<SUM_SQDEV, 1>(stream, in, n, c, hw, sc.coef, nullptr, nullptr, eps, sc.part)));
    FIN_LAUNCH(fin_train_var, c, stream, chunks, m, eps, momentum, gamma, beta, running_mean,
               running_var, save_mean, save_var, sc.part, sc.coef);
    TRY(apply<AP_FWD>(stream, in, n, c, hw, fuse_relu, sc.coef, y));
    return (int)cudaSuccess;
}

extern "C" int elle__cuda_launch_bn_fwd_infer(cudaStream_t stream, int64_t n, int64_t c,
                                              int64_t hw, float eps, int fuse_relu,
                                              const float *x, const float *gamma,
                                              const float *beta, const float *running_mean,
                                              const float *running_var, float *y, void *scratch)
{
    const Scratch sc = carve(scratch, c);
    const In in = make_in(x, nullptr, nullptr, nullptr, nullptr);
    FIN_LAUNCH(fin_infer, c, stream, eps, gamma, beta, running_mean, running_var, sc.coef);
    TRY(apply<AP_FWD>(stream, in, n, c, hw, fuse_relu, sc.coef, y));
    return (int)cudaSuccess;
}

extern "C" int elle__cuda_launch_bn_bwd(cudaStream_t stream, int64_t n, int64_t c, int64_t hw,
                                        float eps, int training, const float *x,
                                        const float *mask, const float *dy, const float *gamma,
                                        const float *mean, const float *var, float *dx,
                                        float *dgamma, float *dbeta, void *scratch)
{
    const Scratch sc = carve(scratch, c);
    const In in = make_in(x, mask, nullptr, dy, nullptr);
    const int64_t chunks = chunks_of(n, hw);
    const bool sums = training || dgamma || dbeta;
    if (sums)
        TRY((reduce<SUM_BWD, 2>(stream, in, n, c, hw, nullptr, mean, var, eps, sc.part)));
    FIN_LAUNCH(fin_bwd, c, stream, chunks, (double)(n * hw), eps, gamma, mean, var, dgamma,
               dbeta, sums ? sc.part : nullptr, sc.coef);
    TRY(apply<AP_BWD>(stream, in, n, c, hw, training, sc.coef, dx));
    return (int)cudaSuccess;
}

extern "C" int elle__cuda_launch_bn_fwd_tangent(cudaStream_t stream, int64_t n, int64_t c,
                                                int64_t hw, float eps, int training,
                                                const float *x, const float *mask,
                                                const float *xt, const float *gamma,
                                                const float *mean, const float *var, float *yt,
                                                void *scratch)
{
    const Scratch sc = carve(scratch, c);
    const In in = make_in(x, mask, xt, nullptr, nullptr);
    const int64_t chunks = chunks_of(n, hw);
    if (training)
        TRY((reduce<SUM_FWDT, 2>(stream, in, n, c, hw, nullptr, mean, var, eps, sc.part)));
    FIN_LAUNCH(fin_fwd_tangent, c, stream, chunks, (double)(n * hw), eps, gamma, mean, var,
               training ? sc.part : nullptr, sc.coef);
    TRY(apply<AP_FWDT>(stream, in, n, c, hw, training, sc.coef, yt));
    return (int)cudaSuccess;
}

extern "C" int elle__cuda_launch_bn_bwd_tangent(cudaStream_t stream, int64_t n, int64_t c,
                                                int64_t hw, float eps, int training,
                                                const float *x, const float *mask,
                                                const float *xt, const float *dy,
                                                const float *dyt, const float *gamma,
                                                const float *mean, const float *var, float *dxt,
                                                float *dgamma_t, float *dbeta_t, void *scratch)
{
    const Scratch sc = carve(scratch, c);
    const In in = make_in(x, mask, xt, dy, dyt);
    const int64_t chunks = chunks_of(n, hw);
    const bool sums = training || dgamma_t || dbeta_t;
    if (sums)
        TRY((reduce<SUM_BWDT, 7>(stream, in, n, c, hw, nullptr, mean, var, eps, sc.part)));
    FIN_LAUNCH(fin_bwd_tangent, c, stream, chunks, (double)(n * hw), eps, training, gamma, mean,
               var, dgamma_t, dbeta_t, sums ? sc.part : nullptr, sc.coef);
    if (dxt)
        TRY(apply<AP_BWDT>(stream, in, n, c, hw, training, sc.coef, dxt));
    return (int)cudaSuccess;
}
