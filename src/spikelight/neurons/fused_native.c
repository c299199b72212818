/* The per-step arithmetic of spikelight's fused spiking layer, as plain C loops.
 *
 * fused.py drives the time loop; issued from Python, each step's ~20 small tensor operations
 * cost a few microseconds each in dispatch alone. These functions do one chunk of forward
 * steps, or one backward step, in a single call. Equations and variable names are those of
 * fused.py's module docstring; the arithmetic follows the PyTorch operations there (the LIF
 * membrane is torch.lerp's fused multiply-add form), so spikes agree with that path.
 *
 * Built by native.py with the system C compiler (-ffp-contract=off, so the compiler adds no
 * fused multiply-adds of its own) and called through ctypes. Every tensor is contiguous,
 * time-major [steps, batch, size], of one floating type: each function exists for float (f32)
 * and double (f64).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HALF_PI 1.57079632679489661923
#define MAX_PARTS 64 /* threads a chunk is split over, at most */

#ifdef _OPENMP
#include <omp.h>
#define PRAGMA(text) _Pragma(#text)
#define PARALLEL(n) PRAGMA(omp parallel num_threads(n))
#define THREAD omp_get_thread_num()
#define THREADS omp_get_num_threads()
#define MAX_TEAM omp_get_max_threads()
#else
#define PARALLEL(n) (void)(n);
#define THREAD 0
#define THREADS 1
#define MAX_TEAM 1
#endif

enum { RESET_SUBTRACT = 0, RESET_ZERO = 1, RESET_NONE = 2 };
enum { SURROGATE_FAST_SIGMOID = 0, SURROGATE_LOGISTIC = 1, SURROGATE_ATAN = 2,
       SURROGATE_TRIANGLE = 3, SURROGATE_EXPONENTIAL = 4, SURROGATE_HEAVISIDE = 5 };

/* The first e in [0, n) with index[e] >= value (index ascending), or n. */
static int64_t first_at_least(const int32_t *index, int64_t n, int64_t value) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (index[mid] < value) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* What stays fixed over a sequence: sizes, the shape of the dynamics, per-neuron coefficients. */
typedef struct {
    int64_t batch, size;
    int32_t reset, detach_reset, synapse, leaky, adaptive, rectify, surrogate, has_leak;
    double adapt_jump, beta;
    const void *a_syn, *a_mem, *v_leak, *threshold, *v_reset, *a_adapt; /* [size] or NULL */
    const void *w_t; /* recurrent weights transposed [size, size] (row j: from neuron j), or NULL */
} Layer;

/* A run of forward steps: in the forward pass (decide = 1) or recomputed in backward (0). */
typedef struct {
    int64_t steps;
    const void *x;      /* [steps, B, N] input current, without the recurrent part */
    const void *z_prev; /* [B, N] spikes of the step before, or NULL (none) */
    void *z;            /* [steps, B, N] spikes: written (decide) or read */
    int32_t decide;
    void *i, *v, *b;    /* state [B, N], advanced in place (i: synapse; b: adaptive) */
    void *u;            /* [steps, B, N] pre-reset membrane out, or NULL */
    void *i_hist, *v_hist, *b_hist; /* [steps, B, N] state after each step, or NULL */
    int32_t *events;    /* decide: positions s * B * N + e of the spikes, ascending, or NULL */
    int64_t *counts;    /* decide: spikes per step [steps], or NULL */
} Chunk;

/* One backward step s of a chunk: the adjoints lam_* move from step s + 1 to step s. */
typedef struct {
    int64_t s, t;       /* step within the chunk, and in the sequence */
    const void *outside; /* [steps, B, N] dL/dz from outside the layer, or NULL (zero) */
    const void *rec;    /* [B, N] dL/dz_t through the recurrence (dL/din_{t+1} W), or NULL */
    const void *u, *z;  /* [steps, B, N] */
    const void *i_hist, *v_hist, *b_hist; /* [steps + 1, B, N]: state before step 0, after each */
    void *lam_v, *lam_i, *lam_b; /* [B, N] */
    void *grad_in;      /* [steps, B, N] out: dL/din_t */
    void *grad_z;       /* [steps, B, N] out: dL/dz_t before the surrogate, or NULL */
    double *sum_a_syn, *sum_a_mem, *sum_v_leak, *sum_threshold, *sum_v_reset, *sum_a_adapt;
} Back; /* the sums: [size] accumulators of the coefficients' gradients, or NULL (not needed) */

/* Each row of a step (one batch element, N neurons) is done in short passes over N entries,
 * each with its branch outside the loop, so that the compiler vectorises them. */
#define ROW for (int64_t n = 0; n < N; ++n)

#define DEFINE_KERNELS(T, SUF, EXP, FMA, NO_SIGNS)                                              \
    static void slopes_##SUF(int kind, int64_t N, const T *restrict u, const T *restrict theta, \
                             T beta, T *restrict out) {                                         \
        switch (kind) {                                                                         \
        case SURROGATE_FAST_SIGMOID:                                                            \
            ROW {                                                                               \
                T d = beta * (T)fabs(u[n] - theta[n]) + (T)1;                                   \
                out[n] = (T)1 / (d * d);                                                        \
            }                                                                                   \
            break;                                                                              \
        case SURROGATE_LOGISTIC:                                                                \
            ROW {                                                                               \
                T s = (T)1 / ((T)1 + EXP(-(beta * (u[n] - theta[n]))));                         \
                out[n] = beta * s * ((T)1 - s);                                                 \
            }                                                                                   \
            break;                                                                              \
        case SURROGATE_ATAN:                                                                    \
            ROW {                                                                               \
                T y = (T)HALF_PI * beta * (u[n] - theta[n]);                                    \
                out[n] = (beta / (T)2) / ((T)1 + y * y);                                        \
            }                                                                                   \
            break;                                                                              \
        case SURROGATE_TRIANGLE:                                                                \
            ROW {                                                                               \
                T r = (T)1 - beta * (T)fabs(u[n] - theta[n]);                                   \
                out[n] = beta * (r > 0 ? r : (T)0);                                             \
            }                                                                                   \
            break;                                                                              \
        case SURROGATE_EXPONENTIAL:                                                             \
            ROW out[n] = (beta / (T)2) * EXP(-beta * (T)fabs(u[n] - theta[n]));                 \
            break;                                                                              \
        default:                                                                                \
            ROW out[n] = (T)0;                                                                  \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    /* acc += w. Its own function: inlined, GCC swaps the loops over spikes and neurons */      \
    __attribute__((noinline)) static void add_row_##SUF(int64_t N, const T *restrict w,         \
                                                        T *restrict acc) {                      \
        ROW acc[n] += w[n];                                                                     \
    }                                                                                           \
                                                                                                \
    /* Whether x[0..7] are all zero (+0 or -0): their bits as 64-bit words, OR-ed. */           \
    static int zero8_##SUF(const T *restrict x) {                                               \
        uint64_t words[sizeof(T)], any = 0;                                                     \
        memcpy(words, x, 8 * sizeof(T));                                                        \
        for (size_t j = 0; j < sizeof(T); ++j) any |= words[j];                                 \
        return (any & NO_SIGNS) == 0;                                                           \
    }                                                                                           \
                                                                                                \
    /* The positions of the non-zero entries of z [N] into out; returns how many. */            \
    static int64_t list_spikes_##SUF(int64_t N, const T *restrict z, int32_t *restrict out) {   \
        int64_t count = 0, n = 0;                                                               \
        for (; n + 8 <= N; n += 8) { /* most runs of 8 neurons hold no spike: skip them */      \
            if (zero8_##SUF(z + n)) continue;                                                   \
            for (int j = 0; j < 8; ++j) {                                                       \
                out[count] = (int32_t)(n + j);                                                  \
                count += z[n + j] != 0;                                                         \
            }                                                                                   \
        }                                                                                       \
        for (; n < N; ++n) {                                                                    \
            out[count] = (int32_t)n;                                                            \
            count += z[n] != 0;                                                                 \
        }                                                                                       \
        return count;                                                                           \
    }                                                                                           \
                                                                                                \
    /* The chunk's steps for the batch rows lo .. hi - 1 (independent of the others): their     \
     * spike positions into events, their spike counts per step into step_counts. */            \
    static int64_t run_rows_##SUF(const Layer *L, const Chunk *C, int64_t lo, int64_t hi,       \
                                  int32_t *restrict events, int64_t *step_counts) {             \
        const int64_t B = L->batch, N = L->size, plane = B * N, rows = hi - lo;                 \
        const int synapse = L->synapse, leaky = L->leaky, adaptive = L->adaptive;               \
        const int reset = L->reset, rectify = L->rectify, has_leak = L->has_leak;               \
        const int decide = C->decide;                                                           \
        const T *restrict a_syn = L->a_syn, *restrict a_mem = L->a_mem;                         \
        const T *restrict v_leak = L->v_leak, *restrict threshold = L->threshold;               \
        const T *restrict v_reset = L->v_reset, *restrict a_adapt = L->a_adapt;                 \
        const T *restrict w_t = L->w_t;                                                         \
        const T adapt_jump = (T)L->adapt_jump;                                                  \
        T *restrict z = C->z;                                                                   \
        /* the spikes of the step before (fired) and of this step (next): per row, the count    \
         * and the positions, listed branch-free since spikes are rare and unpredictable */     \
        T *scratch = malloc(sizeof(T) * 3 * N);                                                 \
        int32_t *lists = malloc(sizeof(int32_t) * 2 * rows * N);                                \
        int64_t *counts = malloc(sizeof(int64_t) * 2 * rows);                                   \
        if (!scratch || !lists || !counts) {                                                    \
            free(scratch);                                                                      \
            free(lists);                                                                        \
            free(counts);                                                                       \
            return -1;                                                                          \
        }                                                                                       \
        T *restrict cur = scratch, *restrict u = scratch + N, *restrict theta = scratch + 2 * N; \
        int32_t *fired = lists, *next = lists + rows * N; /* row r: from (r - lo) * N */        \
        int64_t *n_fired = counts, *n_next = counts + rows;                                     \
        int have_fired = w_t && C->z_prev;                                                      \
        if (have_fired)                                                                         \
            for (int64_t row = lo; row < hi; ++row)                                             \
                n_fired[row - lo] = list_spikes_##SUF(N, (const T *)C->z_prev + row * N,        \
                                                      fired + (row - lo) * N);                  \
        int64_t total = 0;                                                                      \
        for (int64_t s = 0; s < C->steps; ++s) {                                                \
            int64_t count = 0;                                                                  \
            for (int64_t row = lo; row < hi; ++row) {                                           \
                const int64_t base = s * plane + row * N, at = row * N, own = (row - lo) * N;   \
                const T *restrict x = (const T *)C->x + base;                                   \
                T *restrict i = synapse ? (T *)C->i + at : NULL, *restrict v = (T *)C->v + at;  \
                T *restrict b = adaptive ? (T *)C->b + at : NULL, *restrict zr = z + base;      \
                /* in_t = x_t + W z_{t-1}: a sum of W's columns over the spikes */              \
                memcpy(cur, x, sizeof(T) * N);                                                  \
                if (have_fired && n_fired[row - lo]) {                                          \
                    memset(u, 0, sizeof(T) * N); /* u: the recurrent sum, for now */            \
                    for (int64_t f = 0; f < n_fired[row - lo]; ++f)                             \
                        add_row_##SUF(N, w_t + (int64_t)fired[own + f] * N, u);                 \
                    ROW cur[n] += u[n];                                                         \
                }                                                                               \
                if (synapse) ROW { /* i_t = a_syn i_{t-1} + in_t */                             \
                    cur[n] = cur[n] + a_syn[n] * i[n];                                          \
                    i[n] = cur[n];                                                              \
                }                                                                               \
                if (leaky) { /* torch.lerp(i + v_leak, v, a_mem), in its FMA form */            \
                    if (has_leak) ROW u[n] = cur[n] + v_leak[n];                                \
                    else ROW u[n] = cur[n];                                                     \
                    ROW {                                                                       \
                        T w = a_mem[n], start = u[n], d = v[n] - start;                         \
                        u[n] = fabs(w) < 0.5 ? FMA(w, d, start) : FMA(w - (T)1, d, v[n]);       \
                    }                                                                           \
                } else { /* IF: u = v + i */                                                    \
                    ROW u[n] = v[n] + cur[n];                                                   \
                }                                                                               \
                if (adaptive) ROW theta[n] = threshold[n] + b[n];                               \
                else ROW theta[n] = threshold[n];                                               \
                if (decide) ROW zr[n] = u[n] > theta[n] ? (T)1 : (T)0;                          \
                n_next[row - lo] = list_spikes_##SUF(N, zr, next + own);                        \
                if (decide && events)                                                           \
                    for (int64_t f = 0; f < n_next[row - lo]; ++f)                              \
                        events[total + count + f] = (int32_t)(base + next[own + f]);            \
                count += n_next[row - lo];                                                      \
                if (reset == RESET_SUBTRACT) ROW v[n] = u[n] - zr[n] * theta[n];                \
                else if (reset == RESET_ZERO) ROW v[n] = u[n] - zr[n] * (u[n] - v_reset[n]);    \
                else ROW v[n] = u[n];                                                           \
                if (rectify) ROW v[n] = v[n] < 0 ? (T)0 : v[n]; /* relu; NaN stays NaN */       \
                if (adaptive) ROW b[n] = a_adapt[n] * b[n] + adapt_jump * zr[n];                \
                if (C->u) memcpy((T *)C->u + base, u, sizeof(T) * N);                           \
                if (C->i_hist) memcpy((T *)C->i_hist + base, cur, sizeof(T) * N);               \
                if (C->v_hist) memcpy((T *)C->v_hist + base, v, sizeof(T) * N);                 \
                if (C->b_hist) memcpy((T *)C->b_hist + base, b, sizeof(T) * N);                 \
            }                                                                                   \
            if (step_counts) step_counts[s] = count;                                            \
            total += count;                                                                     \
            int32_t *swap = fired; /* this step's spikes feed the next */                       \
            fired = next;                                                                       \
            next = swap;                                                                        \
            int64_t *swap_n = n_fired;                                                          \
            n_fired = n_next;                                                                   \
            n_next = swap_n;                                                                    \
            have_fired = w_t != NULL;                                                           \
        }                                                                                       \
        free(scratch);                                                                          \
        free(lists);                                                                            \
        free(counts);                                                                           \
        return total;                                                                           \
    }                                                                                           \
                                                                                                \
    /* A chunk of steps: the state advanced in place, the spikes decided (written into z, their \
     * positions into events, ascending, their counts per step into counts) or read from z.     \
     * The batch rows are split over the OpenMP threads (torch's own pool where torch uses      \
     * GNU OpenMP); their spike positions are merged back into step order. Returns the number   \
     * of spikes, or -1 when out of memory. */                                                  \
    int64_t run_chunk_##SUF(const Layer *L, const Chunk *C) {                                   \
        const int64_t B = L->batch, N = L->size, k = C->steps;                                  \
        int64_t parts = MAX_TEAM < MAX_PARTS ? MAX_TEAM : MAX_PARTS; /* torch's thread count */ \
        if (parts > B) parts = B;                                                               \
        int32_t *events = C->events ? malloc(sizeof(int32_t) * k * B * N) : NULL;               \
        int64_t *counts = malloc(sizeof(int64_t) * k * parts), total[MAX_PARTS];                \
        int64_t team = 1;                                                                       \
        if ((C->events && !events) || !counts) {                                                \
            free(events);                                                                       \
            free(counts);                                                                       \
            return -1;                                                                          \
        }                                                                                       \
        PARALLEL(parts)                                                                         \
        {                                                                                       \
            const int64_t p = THREAD, n = THREADS, lo = B * p / n, hi = B * (p + 1) / n;        \
            if (p == 0) team = n;                                                               \
            total[p] = run_rows_##SUF(L, C, lo, hi, events ? events + k * lo * N : NULL,        \
                                      counts + p * k);                                          \
        }                                                                                       \
        int64_t failed = 0, spikes = 0, offset[MAX_PARTS] = {0};                                \
        for (int64_t p = 0; p < team; ++p) failed |= total[p] < 0;                              \
        for (int64_t s = 0; !failed && s < k; ++s) {                                            \
            int64_t count = 0;                                                                  \
            for (int64_t p = 0; p < team; ++p) {                                                \
                const int64_t n = counts[p * k + s], lo = B * p / team;                         \
                if (C->events)                                                                  \
                    memcpy(C->events + spikes + count, events + k * lo * N + offset[p],         \
                           sizeof(int32_t) * n);                                                \
                offset[p] += n;                                                                 \
                count += n;                                                                     \
            }                                                                                   \
            if (C->counts) C->counts[s] = count;                                                \
            spikes += count;                                                                    \
        }                                                                                       \
        free(events);                                                                           \
        free(counts);                                                                           \
        return failed ? -1 : spikes;                                                            \
    }                                                                                           \
                                                                                                \
    /* One backward step for the batch rows lo .. hi - 1; the coefficients' gradients are added \
     * into sums (a_syn, a_mem, v_leak, threshold, v_reset, a_adapt; NULL: not needed). */      \
    static int back_rows_##SUF(const Layer *L, const Back *K, int64_t lo, int64_t hi,           \
                               double *const *sums) {                                           \
        const int64_t B = L->batch, N = L->size, plane = B * N;                                 \
        const int synapse = L->synapse, leaky = L->leaky, adaptive = L->adaptive;               \
        const int reset = L->reset, rectify = L->rectify, detach = L->detach_reset;             \
        const int need_theta = sums[3] != NULL || adaptive;                                     \
        const T *restrict a_syn = L->a_syn, *restrict a_mem = L->a_mem;                         \
        const T *restrict v_leak = L->v_leak, *restrict threshold = L->threshold;               \
        const T *restrict v_reset = L->v_reset, *restrict a_adapt = L->a_adapt;                 \
        const T adapt_jump = (T)L->adapt_jump, beta = (T)L->beta;                               \
        double *restrict sum_a_syn = sums[0], *restrict sum_a_mem = sums[1];                    \
        double *restrict sum_v_leak = sums[2], *restrict sum_threshold = sums[3];               \
        double *restrict sum_v_reset = sums[4], *restrict sum_a_adapt = sums[5];                \
        T *scratch = malloc(sizeof(T) * 5 * N);                                                 \
        if (!scratch) return -1;                                                                \
        T *restrict grad_z = scratch, *restrict grad_u = scratch + N;                           \
        T *restrict grad_theta = scratch + 2 * N, *restrict theta = scratch + 3 * N;            \
        T *restrict slope = scratch + 4 * N;                                                    \
        for (int64_t row = lo; row < hi; ++row) {                                               \
            const int64_t now = K->s * plane + row * N, at = row * N;                           \
            const int64_t before = K->s * plane + at, after = (K->s + 1) * plane + at;          \
            const T *restrict u = (const T *)K->u + now, *restrict z = (const T *)K->z + now;   \
            const T *restrict i_before = K->i_hist ? (const T *)K->i_hist + before : NULL;      \
            const T *restrict i_after = K->i_hist ? (const T *)K->i_hist + after : NULL;        \
            const T *restrict v_before = K->v_hist ? (const T *)K->v_hist + before : NULL;      \
            const T *restrict v_after = K->v_hist ? (const T *)K->v_hist + after : NULL;        \
            const T *restrict b_before = K->b_hist ? (const T *)K->b_hist + before : NULL;      \
            T *restrict lam_v = (T *)K->lam_v + at, *restrict lam_i = (T *)K->lam_i + at;       \
            T *restrict lam_b = adaptive ? (T *)K->lam_b + at : NULL;                           \
            T *restrict grad_in = (T *)K->grad_in + now;                                        \
            /* dL/dz_t: from outside the layer, through the recurrence, through b_t */          \
            if (K->outside && K->rec) {                                                         \
                const T *restrict o = (const T *)K->outside + now;                              \
                const T *restrict r = (const T *)K->rec + at;                                   \
                ROW grad_z[n] = o[n] + r[n];                                                    \
            } else if (K->outside) {                                                            \
                memcpy(grad_z, (const T *)K->outside + now, sizeof(T) * N);                     \
            } else if (K->rec) {                                                                \
                memcpy(grad_z, (const T *)K->rec + at, sizeof(T) * N);                          \
            } else {                                                                            \
                ROW grad_z[n] = 0;                                                              \
            }                                                                                   \
            if (adaptive) ROW grad_z[n] = grad_z[n] + adapt_jump * lam_b[n];                    \
            /* grad_u starts as dL/dv_t (the post-reset membrane) */                            \
            if (rectify) ROW grad_u[n] = lam_v[n] * (v_after[n] > 0 ? (T)1 : (T)0);             \
            else memcpy(grad_u, lam_v, sizeof(T) * N);                                          \
            if (adaptive) ROW theta[n] = threshold[n] + b_before[n];                            \
            else memcpy(theta, threshold, sizeof(T) * N);                                       \
            if (reset == RESET_SUBTRACT) { /* v = u - r theta */                                \
                if (need_theta) ROW grad_theta[n] = -z[n] * grad_u[n];                          \
                if (!detach) ROW grad_z[n] = grad_z[n] + -theta[n] * grad_u[n];                 \
            } else if (reset == RESET_ZERO) { /* v = u - r (u - v_reset) */                     \
                if (sum_v_reset) ROW sum_v_reset[n] += z[n] * grad_u[n];                        \
                if (!detach) ROW grad_z[n] = grad_z[n] + (v_reset[n] - u[n]) * grad_u[n];       \
                ROW grad_u[n] = grad_u[n] * ((T)1 - z[n]);                                      \
            }                                                                                   \
            if (K->grad_z) memcpy((T *)K->grad_z + now, grad_z, sizeof(T) * N);                 \
            slopes_##SUF(L->surrogate, N, u, theta, beta, slope); /* z = H(u - theta) */        \
            if (need_theta) {                                                                   \
                ROW {                                                                           \
                    T pre = grad_z[n] * slope[n];                                               \
                    grad_u[n] = grad_u[n] + pre;                                                \
                    grad_theta[n] = reset == RESET_SUBTRACT ? grad_theta[n] - pre : -pre;       \
                }                                                                               \
                if (sum_threshold) ROW sum_threshold[n] += grad_theta[n];                       \
            } else {                                                                            \
                ROW grad_u[n] = grad_u[n] + grad_z[n] * slope[n];                               \
            }                                                                                   \
            if (adaptive) { /* theta_t = threshold + b_{t-1} */                                 \
                if (sum_a_adapt) ROW sum_a_adapt[n] += lam_b[n] * b_before[n];                  \
                ROW lam_b[n] = grad_theta[n] + a_adapt[n] * lam_b[n];                           \
            }                                                                                   \
            if (leaky) { /* u = v_leak + a_mem (v_{t-1} - v_leak) + (1 - a_mem) i_t */          \
                if (sum_a_mem)                                                                  \
                    ROW sum_a_mem[n] += grad_u[n] * (v_before[n] - v_leak[n] - i_after[n]);     \
                if (sum_v_leak) ROW sum_v_leak[n] += grad_u[n];                                 \
                ROW {                                                                           \
                    grad_in[n] = lam_i[n] + ((T)1 - a_mem[n]) * grad_u[n];                      \
                    lam_v[n] = a_mem[n] * grad_u[n];                                            \
                }                                                                               \
            } else { /* u = v_{t-1} + i_t */                                                    \
                ROW {                                                                           \
                    grad_in[n] = lam_i[n] + grad_u[n];                                          \
                    lam_v[n] = grad_u[n];                                                       \
                }                                                                               \
            }                                                                                   \
            if (synapse) { /* i_t = a_syn i_{t-1} + in_t */                                     \
                if (sum_a_syn) ROW sum_a_syn[n] += grad_in[n] * i_before[n];                    \
                ROW lam_i[n] = a_syn[n] * grad_in[n];                                           \
            }                                                                                   \
        }                                                                                       \
        free(scratch);                                                                          \
        return 0;                                                                               \
    }                                                                                           \
                                                                                                \
    /* One backward step (see Back), the batch rows split over the OpenMP threads, each adding  \
     * the coefficients' gradients into its own sums first. -1: out of memory. */               \
    int back_step_##SUF(const Layer *L, const Back *K) {                                        \
        const int64_t B = L->batch, N = L->size;                                                \
        double *given[6] = {K->t > 0 ? K->sum_a_syn : NULL, K->sum_a_mem, K->sum_v_leak,        \
                            K->sum_threshold, K->sum_v_reset, K->sum_a_adapt};                  \
        int any = 0;                                                                            \
        for (int i = 0; i < 6; ++i) any |= given[i] != NULL;                                    \
        int64_t parts = B < 8 ? 1 : MAX_TEAM < MAX_PARTS ? MAX_TEAM : MAX_PARTS;                \
        double *partial = any && parts > 1 ? calloc(parts * 6 * N, sizeof(double)) : NULL;      \
        if (any && !partial) parts = 1;                                                         \
        int64_t team = 1;                                                                       \
        int status[MAX_PARTS];                                                                  \
        PARALLEL(parts)                                                                         \
        {                                                                                       \
            const int64_t p = THREAD, n = THREADS;                                              \
            double *mine[6];                                                                    \
            for (int i = 0; i < 6; ++i)                                                         \
                mine[i] = given[i] && partial ? partial + (p * 6 + i) * N : given[i];           \
            if (p == 0) team = n;                                                               \
            status[p] = back_rows_##SUF(L, K, B * p / n, B * (p + 1) / n, mine);                \
        }                                                                                       \
        int failed = 0;                                                                         \
        for (int64_t p = 0; p < team; ++p) {                                                    \
            failed |= status[p] < 0;                                                            \
            for (int i = 0; partial && i < 6; ++i)                                              \
                if (given[i])                                                                   \
                    for (int64_t n = 0; n < N; ++n) given[i][n] += partial[(p * 6 + i) * N + n]; \
        }                                                                                       \
        free(partial);                                                                          \
        return failed ? -1 : 0;                                                                 \
    }                                                                                           \
                                                                                                \
    /* The flat positions of the non-zero entries of x[lo .. hi - 1] into out; returns how many \
     * and sets *ones to whether every one of them is 1. */                                     \
    static int64_t list_range_##SUF(const T *restrict x, int64_t lo, int64_t hi,                \
                                    int64_t *restrict out, int *ones) {                         \
        int64_t count = 0, n = lo;                                                              \
        int all = 1;                                                                            \
        for (; n + 8 <= hi; n += 8) { /* binned spike data: mostly empty runs */                \
            if (zero8_##SUF(x + n)) continue;                                                   \
            for (int j = 0; j < 8; ++j) {                                                       \
                out[count] = n + j;                                                             \
                all &= x[n + j] == 0 || x[n + j] == 1;                                          \
                count += x[n + j] != 0;                                                         \
            }                                                                                   \
        }                                                                                       \
        for (; n < hi; ++n) {                                                                   \
            out[count] = n;                                                                     \
            all &= x[n] == 0 || x[n] == 1;                                                      \
            count += x[n] != 0;                                                                 \
        }                                                                                       \
        *ones = all;                                                                            \
        return count;                                                                           \
    }                                                                                           \
                                                                                                \
    /* The flat positions of the non-zero entries of x [numel], ascending, into out (room for   \
     * numel); returns how many, and sets *all_ones to whether every one of them is 1. Each     \
     * thread lists a stretch of x into its own stretch of out; these are then closed up. */    \
    int64_t list_nonzero_##SUF(const T *restrict x, int64_t numel, int64_t *restrict out,       \
                               int32_t *all_ones) {                                             \
        int64_t parts = numel < (1 << 16) ? 1 : MAX_TEAM < MAX_PARTS ? MAX_TEAM : MAX_PARTS;    \
        int64_t count[MAX_PARTS], team = 1;                                                     \
        int ones[MAX_PARTS];                                                                    \
        PARALLEL(parts)                                                                         \
        {                                                                                       \
            const int64_t p = THREAD, n = THREADS, lo = numel * p / n, hi = numel * (p + 1) / n; \
            if (p == 0) team = n;                                                               \
            count[p] = list_range_##SUF(x, lo, hi, out + lo, &ones[p]);                         \
        }                                                                                       \
        int64_t total = 0;                                                                      \
        int all = 1;                                                                            \
        for (int64_t p = 0; p < team; ++p) {                                                    \
            const int64_t lo = numel * p / team;                                                \
            if (total != lo) memmove(out + total, out + lo, sizeof(int64_t) * count[p]);        \
            total += count[p];                                                                  \
            all &= ones[p];                                                                     \
        }                                                                                       \
        *all_ones = all;                                                                        \
        return total;                                                                           \
    }                                                                                           \
                                                                                                \
    /* acc[c] += value_e * src[r] for each entry e of a sparse [rows, width] matrix, given by   \
     * its ascending flat positions index = r * width + c (and values, or NULL for ones): S^T   \
     * src, the weight gradient of a product with S. Rows are shifted by row_shift, then taken  \
     * relative to row_lo; src is [.., K] and acc [width, K]. The entries are first grouped by  \
     * column (a counting sort), so that each row of acc is summed in cache and written once;   \
     * the threads share out the columns. -1: out of memory. */                                 \
    int scatter_rows_##SUF(T *restrict acc, const int32_t *restrict index,                      \
                           const T *restrict values, int64_t n_entries, int64_t width,          \
                           int64_t row_shift, int64_t row_lo, const T *restrict src,            \
                           int64_t K) {                                                         \
        int64_t *first = calloc(width + 1, sizeof(int64_t)); /* column c: first[c] .. */        \
        int32_t *order = malloc(sizeof(int32_t) * (n_entries ? n_entries : 1));                 \
        int32_t *rows = malloc(sizeof(int32_t) * (n_entries ? n_entries : 1));                  \
        if (!first || !order || !rows) {                                                        \
            free(first);                                                                        \
            free(order);                                                                        \
            free(rows);                                                                         \
            return -1;                                                                          \
        }                                                                                       \
        int64_t row = 0, start = 0; /* the entry's row and that row's first position */         \
        for (int64_t e = 0; e < n_entries; ++e) {                                               \
            const int64_t at = index[e];                                                        \
            if (at < start || at >= start + width) { /* a new row (division is slow) */         \
                row = at / width;                                                               \
                start = row * width;                                                            \
            }                                                                                   \
            rows[e] = (int32_t)(row + row_shift - row_lo);                                      \
            ++first[at - start + 1];                                                            \
        }                                                                                       \
        for (int64_t c = 0; c < width; ++c) first[c + 1] += first[c];                           \
        int64_t *fill = malloc(sizeof(int64_t) * (width ? width : 1));                          \
        if (!fill) {                                                                            \
            free(first);                                                                        \
            free(order);                                                                        \
            free(rows);                                                                         \
            return -1;                                                                          \
        }                                                                                       \
        memcpy(fill, first, sizeof(int64_t) * width);                                           \
        for (int64_t e = 0; e < n_entries; ++e) { /* the column, without a division */          \
            const int64_t c = index[e] - (rows[e] - row_shift + row_lo) * width;                \
            order[fill[c]++] = (int32_t)e;                                                      \
        }                                                                                       \
        free(fill);                                                                             \
        const int64_t parts = width < 16 ? 1 : MAX_TEAM < MAX_PARTS ? MAX_TEAM : MAX_PARTS;     \
        PARALLEL(parts)                                                                         \
        {                                                                                       \
            const int64_t c0 = width * THREAD / THREADS, c1 = width * (THREAD + 1) / THREADS;   \
            for (int64_t c = c0; c < c1; ++c) {                                                 \
                T *restrict a = acc + c * K;                                                    \
                for (int64_t f = first[c]; f < first[c + 1]; ++f) {                             \
                    const int64_t e = order[f];                                                 \
                    const T *restrict g = src + (int64_t)rows[e] * K;                           \
                    if (values) {                                                               \
                        const T w = values[e];                                                  \
                        for (int64_t k = 0; k < K; ++k) a[k] += w * g[k];                       \
                    } else {                                                                    \
                        for (int64_t k = 0; k < K; ++k) a[k] += g[k];                           \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        free(first);                                                                            \
        free(order);                                                                            \
        free(rows);                                                                             \
        return 0;                                                                               \
    }                                                                                           \
                                                                                                \
    /* out[r] = sum of value_e * src[c] over the entries e in row row_lo + r of a sparse        \
     * [.., width] matrix (ascending flat positions index = row * width + c, and values, or NULL \
     * for ones), for r < rows: the product S src, src being [width, K] and out [rows, K].      \
     * Each thread writes its own rows, finding their entries by bisection. */                  \
    void gather_rows_##SUF(T *restrict out, const int32_t *restrict index,                      \
                           const T *restrict values, int64_t n_entries, int64_t width,          \
                           int64_t row_lo, int64_t rows, const T *restrict src, int64_t K) {    \
        const int64_t parts = rows < 64 ? 1 : MAX_TEAM < MAX_PARTS ? MAX_TEAM : MAX_PARTS;      \
        PARALLEL(parts)                                                                         \
        {                                                                                       \
            const int64_t r0 = rows * THREAD / THREADS, r1 = rows * (THREAD + 1) / THREADS;     \
            int64_t e = first_at_least(index, n_entries, (row_lo + r0) * width);                \
            for (int64_t r = r0; r < r1; ++r) {                                                 \
                T *restrict o = out + r * K;                                                    \
                const int64_t end = (row_lo + r + 1) * width;                                   \
                for (int64_t k = 0; k < K; ++k) o[k] = 0;                                       \
                for (; e < n_entries && index[e] < end; ++e) {                                  \
                    const T *restrict w = src + (index[e] - (end - width)) * K;                 \
                    if (values) {                                                               \
                        const T v = values[e];                                                  \
                        for (int64_t k = 0; k < K; ++k) o[k] += v * w[k];                       \
                    } else {                                                                    \
                        for (int64_t k = 0; k < K; ++k) o[k] += w[k];                           \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    /* The leaky readout over time: i = x_t + a_syn i, v = lerp(i, v, a_mem) (torch's FMA       \
     * forms), out_t = v; backwards in time when reverse (the filter's adjoint). */             \
    int leaky_filter_##SUF(const T *restrict x, T *restrict out, int64_t steps, int64_t width,  \
                           T a_syn, T a_mem, int32_t reverse) {                                 \
        T *state = calloc(2 * width, sizeof(T));                                                \
        if (!state) return -1;                                                                  \
        T *restrict i = state, *restrict v = state + width;                                     \
        const int small = fabs(a_mem) < 0.5;                                                    \
        for (int64_t step = 0; step < steps; ++step) {                                          \
            const int64_t t = reverse ? steps - 1 - step : step;                                \
            const T *restrict xt = x + t * width;                                               \
            T *restrict o = out + t * width;                                                    \
            for (int64_t n = 0; n < width; ++n) {                                               \
                i[n] = FMA(a_syn, i[n], xt[n]);                                                 \
                v[n] = small ? FMA(a_mem, v[n] - i[n], i[n])                                    \
                             : FMA(a_mem - (T)1, v[n] - i[n], v[n]);                            \
                o[n] = v[n];                                                                    \
            }                                                                                   \
        }                                                                                       \
        free(state);                                                                            \
        return 0;                                                                               \
    }

DEFINE_KERNELS(float, f32, expf, fmaf, 0x7fffffff7fffffffull)
DEFINE_KERNELS(double, f64, exp, fma, 0x7fffffffffffffffull)
