/* The per-step arithmetic of spikelight's fused spiking layer, as plain C loops.
 *
 * From Python each step's ~20 small tensor operations cost microseconds of dispatch; here one
 * call does a chunk of forward steps, or one backward step, for any neuron of the linear form
 * of dynamics.py (whose docstring has the equations and names). The forward repeats
 * dynamics.step operation for operation (built with -ffp-contract=off: no fused multiply-adds
 * added), so its spikes are the PyTorch loops'; the backward is fused.py's _back_step.
 * native.py builds this, checks on load that its structs and constants match (layout_entries)
 * and that the surrogate formulas equal the Python ones. Tensors are contiguous, time-major, of
 * one type: the typed part is compiled twice (the file includes itself), for float (_f32) and
 * double (_f64). */
#ifndef REAL /* ---------------------------------------- the part compiled once ---------- */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HALF_PI 1.57079632679489661923
#define MAX_PARTS 64 /* threads a chunk is split over, at most */
#define MAX_STATES 4
#define MAX_TERMS (MAX_STATES * MAX_STATES)

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
/* Where each coefficient's gradient goes in Back.sums: A's and E's entries by their place in
 * the term lists, B, c and D by row, then threshold and v_reset. */
enum { SLOT_PRE = 0, SLOT_POST = MAX_TERMS, SLOT_INPUT = 2 * MAX_TERMS,
       SLOT_CONSTANT = SLOT_INPUT + MAX_STATES, SLOT_POST_SPIKE = SLOT_CONSTANT + MAX_STATES,
       SLOT_THRESHOLD = SLOT_POST_SPIKE + MAX_STATES, SLOT_V_RESET, N_SLOTS };

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

/* What stays fixed over a sequence: sizes, the neuron's form, its coefficients ([size] each). */
typedef struct {
    int64_t batch, size, states;
    int32_t membrane, adaptive; /* adaptive: the row added to the threshold, or -1 */
    int32_t reset, detach_reset, rectify, surrogate, n_pre, n_post;
    double beta, scale; /* the surrogate's steepness and the factor on its derivative */
    int32_t pre_row[MAX_TERMS], pre_col[MAX_TERMS]; /* the entries of A, in dynamics.py order */
    int32_t post_row[MAX_TERMS], post_col[MAX_TERMS]; /* of E */
    int32_t replaced[MAX_STATES]; /* 1: the post-spike update replaces this row */
    const void *pre[MAX_TERMS], *post[MAX_TERMS];
    const void *input[MAX_STATES], *constant[MAX_STATES], *post_spike[MAX_STATES]; /* or NULL */
    const void *threshold, *v_reset; /* v_reset: NULL unless reset is RESET_ZERO */
    const void *w_t; /* recurrent weights transposed [size, size] (row j: from neuron j), or NULL */
} Layer;

/* A run of forward steps: in the forward pass (decide = 1) or recomputed in backward (0). */
typedef struct {
    int64_t steps;
    const void *x;      /* [steps, B, N] input current, without the recurrent part */
    const void *z_prev; /* [B, N] spikes of the step before, or NULL (none) */
    void *z;            /* [steps, B, N] spikes: written (decide) or read */
    int32_t decide;
    void *s;            /* [states, B, N] state, advanced in place */
    void *p_hist;       /* [steps, states, B, N] out: each step's pre-spike update p, or NULL */
    void *s_hist;       /* [steps, states, B, N] out: the state before each step, or NULL */
    void *in_hist;      /* [steps, B, N] out: each step's input in_t, or NULL */
    int32_t *events;    /* decide: positions s * B * N + e of the spikes, ascending, or NULL */
    int64_t *counts;    /* decide: spikes per step [steps], or NULL */
} Chunk;

/* One backward step s of a chunk: lam moves from dL/ds_t to dL/ds_{t-1}. */
typedef struct {
    int64_t s;           /* step within the chunk */
    const void *outside; /* [steps, B, N] dL/dz from outside the layer, or NULL (zero) */
    const void *rec;     /* [B, N] dL/dz_t through the recurrence (dL/din_{t+1} W), or NULL */
    const void *p, *z, *s_hist, *in_hist; /* as Chunk's (s_hist, in_hist: NULL if not needed) */
    void *lam;           /* [states, B, N] */
    void *grad_in;       /* [steps, B, N] out: dL/din_t */
    void *grad_z;        /* [steps, B, N] out: dL/dz_t before the surrogate, or NULL */
    double *sums[N_SLOTS]; /* [size] accumulators of the coefficients' gradients, or NULL */
} Back;

/* The names and values native.py checks its declarations against: sizes, offsets, enums. */
#define SIZE(S) {"sizeof " #S, sizeof(S)}
#define FIELD(S, f) {#S "." #f, offsetof(S, f)}
#define VALUE(name) {#name, name}
static const struct { const char *name; int64_t value; } LAYOUT[] = {
    SIZE(Layer), FIELD(Layer, batch), FIELD(Layer, size), FIELD(Layer, states),
    FIELD(Layer, membrane), FIELD(Layer, adaptive), FIELD(Layer, reset),
    FIELD(Layer, detach_reset), FIELD(Layer, rectify), FIELD(Layer, surrogate),
    FIELD(Layer, n_pre), FIELD(Layer, n_post), FIELD(Layer, beta), FIELD(Layer, scale),
    FIELD(Layer, pre_row),
    FIELD(Layer, pre_col), FIELD(Layer, post_row), FIELD(Layer, post_col),
    FIELD(Layer, replaced), FIELD(Layer, pre), FIELD(Layer, post), FIELD(Layer, input),
    FIELD(Layer, constant), FIELD(Layer, post_spike), FIELD(Layer, threshold),
    FIELD(Layer, v_reset), FIELD(Layer, w_t),
    SIZE(Chunk), FIELD(Chunk, steps), FIELD(Chunk, x), FIELD(Chunk, z_prev), FIELD(Chunk, z),
    FIELD(Chunk, decide), FIELD(Chunk, s), FIELD(Chunk, p_hist), FIELD(Chunk, s_hist),
    FIELD(Chunk, in_hist), FIELD(Chunk, events), FIELD(Chunk, counts),
    SIZE(Back), FIELD(Back, s), FIELD(Back, outside), FIELD(Back, rec), FIELD(Back, p),
    FIELD(Back, z), FIELD(Back, s_hist), FIELD(Back, in_hist), FIELD(Back, lam),
    FIELD(Back, grad_in), FIELD(Back, grad_z), FIELD(Back, sums),
    VALUE(MAX_STATES), VALUE(MAX_TERMS), VALUE(RESET_SUBTRACT), VALUE(RESET_ZERO),
    VALUE(RESET_NONE), VALUE(SURROGATE_FAST_SIGMOID), VALUE(SURROGATE_LOGISTIC),
    VALUE(SURROGATE_ATAN), VALUE(SURROGATE_TRIANGLE), VALUE(SURROGATE_EXPONENTIAL),
    VALUE(SURROGATE_HEAVISIDE), VALUE(SLOT_PRE), VALUE(SLOT_POST), VALUE(SLOT_INPUT),
    VALUE(SLOT_CONSTANT), VALUE(SLOT_POST_SPIKE), VALUE(SLOT_THRESHOLD), VALUE(SLOT_V_RESET),
    VALUE(N_SLOTS),
};

/* Up to capacity entries of LAYOUT into names and values; returns how many there are. */
int64_t layout_entries(const char **names, int64_t *values, int64_t capacity) {
    const int64_t count = sizeof(LAYOUT) / sizeof(LAYOUT[0]);
    for (int64_t e = 0; e < count && e < capacity; ++e) {
        names[e] = LAYOUT[e].name;
        values[e] = LAYOUT[e].value;
    }
    return count;
}

/* Each row of a step (one batch element, N neurons) is done in short passes over N entries,
 * each with its branch outside the loop, so that the compiler vectorises them. */
#define ROW for (int64_t n = 0; n < N; ++n)
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define F(name) CAT(name, SUF) /* name_f32 or name_f64 */

#define REAL float
#define SUF f32
#define EXP expf
#define FMA fmaf
#define NO_SIGNS 0x7fffffff7fffffffull
#include __FILE__
#undef REAL
#undef SUF
#undef EXP
#undef FMA
#undef NO_SIGNS

#define REAL double
#define SUF f64
#define EXP exp
#define FMA fma
#define NO_SIGNS 0x7fffffffffffffffull
#include __FILE__

#else /* --------------------------------------- the typed part, once per REAL ---------- */
#define T REAL

/* The surrogate's derivative at u - theta: the formulas of surrogates.py (checked on load),
 * times scale (Surrogate.derivative multiplies the same way, after the formula). */
void F(surrogate_slopes)(int kind, int64_t N, const T *restrict u, const T *restrict theta,
                         T beta, T scale, T *restrict out) {
    switch (kind) {
    case SURROGATE_FAST_SIGMOID:
        ROW {
            T d = beta * (T)fabs(u[n] - theta[n]) + (T)1;
            out[n] = (T)1 / (d * d);
        }
        break;
    case SURROGATE_LOGISTIC:
        ROW {
            T s = (T)1 / ((T)1 + EXP(-(beta * (u[n] - theta[n]))));
            out[n] = beta * s * ((T)1 - s);
        }
        break;
    case SURROGATE_ATAN:
        ROW {
            T y = (T)HALF_PI * beta * (u[n] - theta[n]);
            out[n] = (beta / (T)2) / ((T)1 + y * y);
        }
        break;
    case SURROGATE_TRIANGLE:
        ROW {
            T r = (T)1 - beta * (T)fabs(u[n] - theta[n]);
            out[n] = beta * (r > 0 ? r : (T)0);
        }
        break;
    case SURROGATE_EXPONENTIAL:
        ROW out[n] = (beta / (T)2) * EXP(-beta * (T)fabs(u[n] - theta[n]));
        break;
    default:
        ROW out[n] = (T)0;
    }
    if (scale != (T)1) ROW out[n] = out[n] * scale;
}

/* acc += v_f * base[(rows[f] - shift) * ld ..] for f < count (v_f = values[f], or 1 when
 * values is NULL), in the order of f, as one add per row would sum them (the same floats),
 * but four rows per pass: acc is loaded and stored once for four rows, which halves the memory
 * traffic of a sum over spikes. Its own function: inlined, GCC swaps the loops. */
__attribute__((noinline)) static void F(add_rows)(int64_t N, const T *restrict base, int64_t ld,
                                                     const int32_t *restrict rows, int64_t shift,
                                                     const T *restrict values, int64_t count,
                                                     T *restrict acc) {
#define AT(i) (base + ((int64_t)rows[f + (i)] - shift) * ld)
    int64_t f = 0;
    for (; f + 4 <= count; f += 4) {
        const T *restrict a = AT(0), *restrict b = AT(1), *restrict c = AT(2), *restrict d = AT(3);
        if (values) {
            const T va = values[f], vb = values[f + 1], vc = values[f + 2], vd = values[f + 3];
            ROW acc[n] = (((acc[n] + va * a[n]) + vb * b[n]) + vc * c[n]) + vd * d[n];
        } else {
            ROW acc[n] = (((acc[n] + a[n]) + b[n]) + c[n]) + d[n];
        }
    }
    for (; f < count; ++f) { /* the last rows; x 1 is exact */
        const T v = values ? values[f] : (T)1, *restrict a = AT(0);
        ROW acc[n] = acc[n] + v * a[n];
    }
#undef AT
}

/* Whether x[0..7] are all zero (+0 or -0): their bits as 64-bit words, OR-ed. */
static int F(zero8)(const T *restrict x) {
    uint64_t words[sizeof(T)], any = 0;
    memcpy(words, x, 8 * sizeof(T));
    for (size_t j = 0; j < sizeof(T); ++j) any |= words[j];
    return (any & NO_SIGNS) == 0;
}

/* The positions of the non-zero entries of z [N] (-0 is zero, NaN is not) into out; returns
 * how many. */
static int64_t F(list_spikes)(int64_t N, const T *restrict z, int32_t *restrict out) {
    int64_t count = 0, n = 0;
    for (; n + 8 <= N; n += 8) { /* most runs of 8 neurons hold no spike: skip them */
        if (F(zero8)(z + n)) continue;
        for (int j = 0; j < 8; ++j) {
            out[count] = (int32_t)(n + j);
            count += z[n + j] != 0;
        }
    }
    for (; n < N; ++n) {
        out[count] = (int32_t)n;
        count += z[n] != 0;
    }
    return count;
}

/* dst = first ? a * b : dst + a * b, over a row: one term of a sum, rounded as PyTorch does. */
static void F(add_product)(int64_t N, int first, const T *restrict a, const T *restrict b,
                           T *restrict dst) {
    if (first) ROW dst[n] = a[n] * b[n];
    else ROW dst[n] = dst[n] + a[n] * b[n];
}

/* The chunk's steps for the batch rows lo .. hi - 1 (independent of the others): their
 * spike positions into events, their spike counts per step into step_counts. */
static int64_t F(run_rows)(const Layer *L, const Chunk *C, int64_t lo, int64_t hi,
                           int32_t *restrict events, int64_t *step_counts) {
    const int64_t B = L->batch, N = L->size, K = L->states, plane = B * N, rows = hi - lo;
    const int m = L->membrane, decide = C->decide;
    const T *restrict threshold = L->threshold, *restrict v_reset = L->v_reset;
    const T *restrict w_t = L->w_t;
    T *restrict z = C->z;
    /* the spikes of the step before (fired) and of this step (next): per row, the count
     * and the positions, listed branch-free since spikes are rare and unpredictable */
    T *scratch = malloc(sizeof(T) * (2 + 2 * K) * N);
    int32_t *lists = malloc(sizeof(int32_t) * 2 * rows * N);
    int64_t *counts = malloc(sizeof(int64_t) * 2 * rows);
    if (!scratch || !lists || !counts) {
        free(scratch);
        free(lists);
        free(counts);
        return -1;
    }
    T *restrict cur = scratch, *restrict theta = scratch + N; /* in_t, the threshold */
    T *restrict P = scratch + 2 * N, *restrict Q = P + K * N;  /* p and the post rows, [K][N] */
    int32_t *fired = lists, *next = lists + rows * N; /* row r: from (r - lo) * N */
    int64_t *n_fired = counts, *n_next = counts + rows;
    int have_fired = w_t && C->z_prev;
    if (have_fired)
        for (int64_t row = lo; row < hi; ++row)
            n_fired[row - lo] = F(list_spikes)(N, (const T *)C->z_prev + row * N,
                                               fired + (row - lo) * N);
    int64_t total = 0;
    for (int64_t s = 0; s < C->steps; ++s) {
        int64_t count = 0;
        for (int64_t row = lo; row < hi; ++row) {
            const int64_t base = s * plane + row * N, at = row * N, own = (row - lo) * N;
            const int64_t hist = s * K * plane + at; /* row 0 of [steps, K, B, N] histories */
            T *restrict state = (T *)C->s + at, *restrict zr = z + base, *restrict u = P + m * N;
            /* in_t = x_t + W z_{t-1}: a sum of W's columns over the spikes */
            memcpy(cur, (const T *)C->x + base, sizeof(T) * N);
            if (have_fired && n_fired[row - lo]) {
                memset(Q, 0, sizeof(T) * N); /* Q: the recurrent sum, for now */
                F(add_rows)(N, w_t, N, fired + own, 0, NULL, n_fired[row - lo], Q);
                ROW cur[n] += Q[n];
            }
            if (C->in_hist) memcpy((T *)C->in_hist + base, cur, sizeof(T) * N);
            for (int64_t j = 0; C->s_hist && j < K; ++j)
                memcpy((T *)C->s_hist + hist + j * plane, state + j * plane, sizeof(T) * N);
            for (int64_t j = 0; j < K; ++j) { /* p_j = B_j x + c_j + sum_l A_jl s_l */
                T *restrict p = P + j * N;
                int first = 1;
                if (L->input[j]) {
                    F(add_product)(N, first, L->input[j], cur, p);
                    first = 0;
                }
                if (L->constant[j]) {
                    const T *restrict c = L->constant[j];
                    if (first) memcpy(p, c, sizeof(T) * N);
                    else ROW p[n] = p[n] + c[n];
                    first = 0;
                }
                for (int32_t e = 0; e < L->n_pre; ++e)
                    if (L->pre_row[e] == j) {
                        F(add_product)(N, first, L->pre[e], state + L->pre_col[e] * plane, p);
                        first = 0;
                    }
                if (first) memset(p, 0, sizeof(T) * N);
            }
            if (L->adaptive >= 0) ROW theta[n] = threshold[n] + P[L->adaptive * N + n];
            else memcpy(theta, threshold, sizeof(T) * N);
            if (decide) ROW zr[n] = u[n] > theta[n] ? (T)1 : (T)0;
            n_next[row - lo] = F(list_spikes)(N, zr, next + own);
            if (decide && events)
                for (int64_t f = 0; f < n_next[row - lo]; ++f)
                    events[total + count + f] = (int32_t)(base + next[own + f]);
            count += n_next[row - lo];
            for (int64_t j = 0; C->p_hist && j < K; ++j)
                memcpy((T *)C->p_hist + hist + j * plane, P + j * N, sizeof(T) * N);
            if (L->reset == RESET_SUBTRACT) ROW u[n] = u[n] - zr[n] * theta[n];
            else if (L->reset == RESET_ZERO) ROW u[n] = u[n] - zr[n] * (u[n] - v_reset[n]);
            if (L->rectify) ROW u[n] = u[n] < 0 ? (T)0 : u[n]; /* relu; NaN stays NaN */
            for (int64_t j = 0; j < K; ++j) { /* s'_j = sum_l E_jl q_l + D_j z, or q_j */
                T *restrict q = Q + j * N;
                int first = 1;
                if (!L->replaced[j]) {
                    memcpy(state + j * plane, P + j * N, sizeof(T) * N);
                    continue;
                }
                for (int32_t e = 0; e < L->n_post; ++e)
                    if (L->post_row[e] == j) {
                        F(add_product)(N, first, L->post[e], P + L->post_col[e] * N, q);
                        first = 0;
                    }
                if (L->post_spike[j]) F(add_product)(N, first, L->post_spike[j], zr, q);
            }
            for (int64_t j = 0; j < K; ++j)
                if (L->replaced[j]) memcpy(state + j * plane, Q + j * N, sizeof(T) * N);
        }
        if (step_counts) step_counts[s] = count;
        total += count;
        int32_t *swap = fired; /* this step's spikes feed the next */
        fired = next;
        next = swap;
        int64_t *swap_n = n_fired;
        n_fired = n_next;
        n_next = swap_n;
        have_fired = w_t != NULL;
    }
    free(scratch);
    free(lists);
    free(counts);
    return total;
}

/* A chunk of steps: the state advanced in place, the spikes decided (written into z, their
 * positions into events, ascending, their counts per step into counts) or read from z.
 * The batch rows are split over the OpenMP threads (torch's own pool where torch uses
 * GNU OpenMP); their spike positions are merged back into step order. Returns the number
 * of spikes, or -1 when out of memory. */
int64_t F(run_chunk)(const Layer *L, const Chunk *C) {
    const int64_t B = L->batch, N = L->size, k = C->steps;
    int64_t parts = MAX_TEAM < MAX_PARTS ? MAX_TEAM : MAX_PARTS; /* torch's thread count */
    if (parts > B) parts = B;
    int32_t *events = C->events ? malloc(sizeof(int32_t) * k * B * N) : NULL;
    int64_t *counts = malloc(sizeof(int64_t) * k * parts), total[MAX_PARTS];
    int64_t team = 1;
    if ((C->events && !events) || !counts) {
        free(events);
        free(counts);
        return -1;
    }
    PARALLEL(parts)
    {
        const int64_t p = THREAD, n = THREADS, lo = B * p / n, hi = B * (p + 1) / n;
        if (p == 0) team = n;
        total[p] = F(run_rows)(L, C, lo, hi, events ? events + k * lo * N : NULL,
                                  counts + p * k);
    }
    int64_t failed = 0, spikes = 0, offset[MAX_PARTS] = {0};
    for (int64_t p = 0; p < team; ++p) failed |= total[p] < 0;
    for (int64_t s = 0; !failed && s < k; ++s) {
        int64_t count = 0;
        for (int64_t p = 0; p < team; ++p) {
            const int64_t n = counts[p * k + s], lo = B * p / team;
            if (C->events)
                memcpy(C->events + spikes + count, events + k * lo * N + offset[p],
                       sizeof(int32_t) * n);
            offset[p] += n;
            count += n;
        }
        if (C->counts) C->counts[s] = count;
        spikes += count;
    }
    free(events);
    free(counts);
    return failed ? -1 : spikes;
}

/* One backward step for the batch rows lo .. hi - 1 (fused.py's _back_step); the coefficients'
 * gradients are added into sums (by slot; NULL: not needed). */
static int F(back_rows)(const Layer *L, const Back *K, int64_t lo, int64_t hi,
                        double *const *sums) {
    const int64_t B = L->batch, N = L->size, S = L->states, plane = B * N;
    const int m = L->membrane, a = L->adaptive, reset = L->reset;
    const T *restrict threshold = L->threshold, *restrict v_reset = L->v_reset;
    T *scratch = malloc(sizeof(T) * (5 + 2 * S) * N);
    if (!scratch) return -1;
    T *restrict grad_z = scratch, *restrict theta = scratch + N, *restrict q_m = scratch + 2 * N;
    T *restrict grad_theta = scratch + 3 * N, *restrict slope = scratch + 4 * N;
    T *restrict G = scratch + 5 * N, *restrict lam_new = G + S * N; /* [S][N] each */
    double *const sum_threshold = sums[SLOT_THRESHOLD], *const sum_v_reset = sums[SLOT_V_RESET];
    for (int64_t row = lo; row < hi; ++row) {
        const int64_t now = K->s * plane + row * N, at = row * N;
        const int64_t hist = K->s * S * plane + at; /* row 0 of [steps, S, B, N] histories */
        const T *restrict p = (const T *)K->p + hist, *restrict z = (const T *)K->z + now;
        const T *restrict u = p + m * plane;
        T *restrict lam = (T *)K->lam + at, *restrict grad_in = (T *)K->grad_in + now;
        T *restrict g = G + m * N; /* dL/dq_m, then dL/dp_m */
        /* dL/dz_t: from outside the layer and through the recurrence */
        if (K->outside && K->rec) {
            const T *restrict o = (const T *)K->outside + now, *restrict r = (const T *)K->rec + at;
            ROW grad_z[n] = o[n] + r[n];
        } else if (K->outside) {
            memcpy(grad_z, (const T *)K->outside + now, sizeof(T) * N);
        } else if (K->rec) {
            memcpy(grad_z, (const T *)K->rec + at, sizeof(T) * N);
        } else {
            ROW grad_z[n] = 0;
        }
        if (a >= 0) ROW theta[n] = threshold[n] + p[a * plane + n];
        else memcpy(theta, threshold, sizeof(T) * N);
        if (reset == RESET_SUBTRACT) ROW q_m[n] = u[n] - z[n] * theta[n];
        else if (reset == RESET_ZERO) ROW q_m[n] = u[n] - z[n] * (u[n] - v_reset[n]);
        else memcpy(q_m, u, sizeof(T) * N);
        if (L->rectify) ROW q_m[n] = q_m[n] < 0 ? (T)0 : q_m[n];
        /* s' = E q + D z on the replaced rows, q elsewhere: G = dL/dq */
        for (int64_t j = 0; j < S; ++j) {
            if (L->replaced[j]) memset(G + j * N, 0, sizeof(T) * N);
            else memcpy(G + j * N, lam + j * plane, sizeof(T) * N);
        }
        for (int32_t e = 0; e < L->n_post; ++e) {
            const T *restrict E = L->post[e], *restrict l = lam + L->post_row[e] * plane;
            const int col = L->post_col[e];
            const T *restrict q = col == m ? q_m : p + col * plane;
            T *restrict gq = G + col * N;
            double *restrict sum = sums[SLOT_POST + e];
            ROW gq[n] = gq[n] + E[n] * l[n];
            if (sum) ROW sum[n] += l[n] * q[n];
        }
        for (int64_t j = 0; j < S; ++j)
            if (L->post_spike[j]) {
                const T *restrict D = L->post_spike[j], *restrict l = lam + j * plane;
                double *restrict sum = sums[SLOT_POST_SPIKE + j];
                ROW grad_z[n] = grad_z[n] + D[n] * l[n];
                if (sum) ROW sum[n] += l[n] * z[n];
            }
        if (L->rectify) ROW g[n] = g[n] * (q_m[n] > 0 ? (T)1 : (T)0);
        if (reset == RESET_SUBTRACT) { /* q_m = p_m - r theta */
            ROW grad_theta[n] = -z[n] * g[n];
            if (!L->detach_reset) ROW grad_z[n] = grad_z[n] - theta[n] * g[n];
        } else if (reset == RESET_ZERO) { /* q_m = p_m - r (p_m - v_reset) */
            ROW grad_theta[n] = 0;
            if (sum_v_reset) ROW sum_v_reset[n] += z[n] * g[n];
            if (!L->detach_reset) ROW grad_z[n] = grad_z[n] + (v_reset[n] - u[n]) * g[n];
            ROW g[n] = g[n] * ((T)1 - z[n]);
        } else {
            ROW grad_theta[n] = 0;
        }
        if (K->grad_z) memcpy((T *)K->grad_z + now, grad_z, sizeof(T) * N);
        F(surrogate_slopes)(L->surrogate, N, u, theta, (T)L->beta, (T)L->scale, slope);
        /* z = H(u - theta) */
        ROW {
            const T through = grad_z[n] * slope[n];
            g[n] = g[n] + through;
            grad_theta[n] = grad_theta[n] - through;
        }
        if (sum_threshold) ROW sum_threshold[n] += grad_theta[n];
        if (a >= 0) ROW G[a * N + n] = G[a * N + n] + grad_theta[n]; /* theta = threshold + p_a */
        /* p = A s + B x + c: G is now dL/dp */
        int first = 1;
        for (int64_t j = 0; j < S; ++j) {
            const T *restrict gp = G + j * N;
            if (L->input[j]) {
                double *restrict sum = sums[SLOT_INPUT + j];
                F(add_product)(N, first, L->input[j], gp, grad_in);
                first = 0;
                if (sum) {
                    const T *restrict x = (const T *)K->in_hist + now;
                    ROW sum[n] += gp[n] * x[n];
                }
            }
            if (sums[SLOT_CONSTANT + j]) ROW sums[SLOT_CONSTANT + j][n] += gp[n];
        }
        if (first) memset(grad_in, 0, sizeof(T) * N);
        memset(lam_new, 0, sizeof(T) * S * N);
        for (int32_t e = 0; e < L->n_pre; ++e) {
            const T *restrict A = L->pre[e], *restrict gp = G + L->pre_row[e] * N;
            T *restrict l = lam_new + L->pre_col[e] * N;
            double *restrict sum = sums[SLOT_PRE + e];
            ROW l[n] = l[n] + A[n] * gp[n];
            if (sum) {
                const T *restrict s = (const T *)K->s_hist + hist + L->pre_col[e] * plane;
                ROW sum[n] += gp[n] * s[n];
            }
        }
        for (int64_t j = 0; j < S; ++j) memcpy(lam + j * plane, lam_new + j * N, sizeof(T) * N);
    }
    free(scratch);
    return 0;
}

/* One backward step (see Back), the batch rows split over the OpenMP threads, each adding
 * the coefficients' gradients into its own sums first. -1: out of memory. */
int F(back_step)(const Layer *L, const Back *K) {
    const int64_t B = L->batch, N = L->size;
    int any = 0;
    for (int i = 0; i < N_SLOTS; ++i) any |= K->sums[i] != NULL;
    int64_t parts = B < 8 ? 1 : MAX_TEAM < MAX_PARTS ? MAX_TEAM : MAX_PARTS;
    double *partial = any && parts > 1 ? calloc(parts * N_SLOTS * N, sizeof(double)) : NULL;
    if (any && !partial) parts = 1;
    int64_t team = 1;
    int status[MAX_PARTS];
    PARALLEL(parts)
    {
        const int64_t p = THREAD, n = THREADS;
        double *mine[N_SLOTS];
        for (int i = 0; i < N_SLOTS; ++i)
            mine[i] = K->sums[i] && partial ? partial + (p * N_SLOTS + i) * N : K->sums[i];
        if (p == 0) team = n;
        status[p] = F(back_rows)(L, K, B * p / n, B * (p + 1) / n, mine);
    }
    int failed = 0;
    for (int64_t p = 0; p < team; ++p) {
        failed |= status[p] < 0;
        for (int i = 0; partial && i < N_SLOTS; ++i)
            if (K->sums[i])
                for (int64_t n = 0; n < N; ++n) K->sums[i][n] += partial[(p * N_SLOTS + i) * N + n];
    }
    free(partial);
    return failed ? -1 : 0;
}

/* The flat positions of the non-zero entries of x [numel < 2^31], ascending, into out (room
 * for numel); returns how many. Each thread lists a stretch of x into its own stretch of out;
 * these are then closed up. */
int64_t F(list_nonzero)(const T *restrict x, int64_t numel, int32_t *restrict out) {
    int64_t parts = numel < (1 << 16) ? 1 : MAX_TEAM < MAX_PARTS ? MAX_TEAM : MAX_PARTS;
    int64_t count[MAX_PARTS], team = 1;
    PARALLEL(parts)
    {
        const int64_t p = THREAD, n = THREADS, lo = numel * p / n, hi = numel * (p + 1) / n;
        if (p == 0) team = n;
        count[p] = F(list_spikes)(hi - lo, x + lo, out + lo); /* positions from lo */
    }
    int64_t total = 0;
    for (int64_t p = 0; p < team; ++p) {
        const int64_t lo = numel * p / team;
        for (int64_t e = 0; e < count[p]; ++e) out[total + e] = out[lo + e] + (int32_t)lo;
        total += count[p];
    }
    return total;
}

/* acc[c] += value_e * src[r] for each entry e of a sparse [rows, width] matrix, given by
 * its ascending flat positions index = r * width + c (and values, or NULL for ones): S^T
 * src, the weight gradient of a product with S. Rows are shifted by row_shift, then taken
 * relative to row_lo; src is [.., K] and acc [width, K]. The entries' rows (and values) are
 * first grouped by column (a counting sort), so that each row of acc is summed in cache and
 * written once; the threads share out the columns. -1: out of memory. */
int F(scatter_rows)(T *restrict acc, const int32_t *restrict index,
                       const T *restrict values, int64_t n_entries, int64_t width,
                       int64_t row_shift, int64_t row_lo, const T *restrict src,
                       int64_t K) {
    const int64_t room = n_entries ? n_entries : 1;
    int64_t *first = calloc(width + 1, sizeof(int64_t)); /* column c: first[c] .. */
    int64_t *fill = malloc(sizeof(int64_t) * (width ? width : 1));
    int32_t *rows = malloc(sizeof(int32_t) * room), *by_column = malloc(sizeof(int32_t) * room);
    T *sorted = values ? malloc(sizeof(T) * room) : NULL;
    const int status = !first || !fill || !rows || !by_column || (values && !sorted) ? -1 : 0;
    if (status) n_entries = width = 0; /* nothing to do but free what was had */
    int64_t row = 0, start = 0; /* the entry's row and that row's first position */
    for (int64_t e = 0; e < n_entries; ++e) {
        const int64_t at = index[e];
        if (at < start || at >= start + width) { /* a new row (division is slow) */
            row = at / width;
            start = row * width;
        }
        rows[e] = (int32_t)(row + row_shift - row_lo);
        ++first[at - start + 1];
    }
    for (int64_t c = 0; c < width; ++c) first[c + 1] += first[c];
    memcpy(fill, first, sizeof(int64_t) * width);
    for (int64_t e = 0; e < n_entries; ++e) { /* the column, without a division */
        const int64_t c = index[e] - (rows[e] - row_shift + row_lo) * width, f = fill[c]++;
        by_column[f] = rows[e];
        if (values) sorted[f] = values[e];
    }
    const int64_t parts = width < 16 ? 1 : MAX_TEAM < MAX_PARTS ? MAX_TEAM : MAX_PARTS;
    PARALLEL(parts)
    {
        const int64_t c0 = width * THREAD / THREADS, c1 = width * (THREAD + 1) / THREADS;
        for (int64_t c = c0; c < c1; ++c)
            F(add_rows)(K, src, K, by_column + first[c], 0, values ? sorted + first[c] : NULL,
                        first[c + 1] - first[c], acc + c * K);
    }
    free(first);
    free(fill);
    free(rows);
    free(by_column);
    free(sorted);
    return status;
}

/* out[r] = sum of value_e * src[c] over the entries e in row row_lo + r of a sparse
 * [.., width] matrix (ascending flat positions index = row * width + c, and values, or NULL
 * for ones), for r < rows: the product S src, src being [width, K] and out [rows, K].
 * Each thread writes its own rows, finding their entries by bisection. */
void F(gather_rows)(T *restrict out, const int32_t *restrict index,
                       const T *restrict values, int64_t n_entries, int64_t width,
                       int64_t row_lo, int64_t rows, const T *restrict src, int64_t K) {
    const int64_t parts = rows < 64 ? 1 : MAX_TEAM < MAX_PARTS ? MAX_TEAM : MAX_PARTS;
    PARALLEL(parts)
    {
        const int64_t r0 = rows * THREAD / THREADS, r1 = rows * (THREAD + 1) / THREADS;
        int64_t e = first_at_least(index, n_entries, (row_lo + r0) * width);
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t start = (row_lo + r) * width;
            int64_t end = e;
            while (end < n_entries && index[end] < start + width) ++end;
            memset(out + r * K, 0, sizeof(T) * K);
            F(add_rows)(K, src, K, index + e, start, values ? values + e : NULL, end - e,
                        out + r * K);
            e = end;
        }
    }
}

/* The leaky readout over time from state (zeros [2, width]: i, v): i = x_t + a_syn i,
 * v = lerp(i, v, a_mem) (torch's FMA forms), out_t = v; backwards in time when reverse (the
 * filter's adjoint). */
void F(leaky_filter)(const T *restrict x, T *restrict out, T *restrict state, int64_t steps,
                     int64_t width, T a_syn, T a_mem, int32_t reverse) {
    T *restrict i = state, *restrict v = state + width;
    const int small = fabs(a_mem) < 0.5;
    for (int64_t step = 0; step < steps; ++step) {
        const int64_t t = reverse ? steps - 1 - step : step;
        const T *restrict xt = x + t * width;
        T *restrict o = out + t * width;
        for (int64_t n = 0; n < width; ++n) {
            i[n] = FMA(a_syn, i[n], xt[n]);
            v[n] = small ? FMA(a_mem, v[n] - i[n], i[n])
                         : FMA(a_mem - (T)1, v[n] - i[n], v[n]);
            o[n] = v[n];
        }
    }
}

#undef T
#endif
