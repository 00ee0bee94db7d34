/*
 * binsr packed XNOR-popcount kernels (CPython extension binsr.engine._kernels).
 *
 * Layout and arithmetic conventions are documented in kernels.h. This file has four parts:
 *   1. portable helpers: CPU feature detection, a fork-join thread helper (pthreads), scratch memory;
 *   2. the generic C path (any compiler, any CPU);
 *   3. x86-64 paths compiled with per-function target attributes (no -march flag needed):
 *      AVX2 (popcount by the nibble-LUT pshufb method) and AVX-512 (VPOPCNTQ);
 *   4. the Python bindings (plain CPython API + buffer protocol, no numpy headers).
 *
 * Convolution strategy (all paths): one output row at a time, split over threads by rows. A row is
 * computed in blocks of OCB output channels x PB output pixels; the SIMD paths vectorise across
 * *pixels* (8 per zmm / 4 per ymm, one 64-bit word each), broadcast one weight word per output
 * channel and keep OCB x PB/lanes accumulators in registers. Counts go to a small int32 tile,
 * and a vectorised epilogue turns them into floats along the row (alpha, bias, RPReLU, residual),
 * writes NCHW floats and/or ORs the re-binarized bits into a packed output row.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(BINSR_DISABLE_X86)
#define BINSR_X86 1
#include <immintrin.h>
#else
#define BINSR_X86 0
#endif

#if !defined(_WIN32)
#define BINSR_PTHREADS 1
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#else
#define BINSR_PTHREADS 0
#endif

/* ------------------------------------------------------------------------------------------------ */
/* 1. Portable helpers                                                                              */
/* ------------------------------------------------------------------------------------------------ */

static const char *const isa_names[BINSR_ISA_COUNT] = {"generic", "avx2", "avx512"};

int binsr_isa_supported(int isa) {
    switch (isa) {
    case BINSR_ISA_GENERIC:
        return 1;
#if BINSR_X86
    case BINSR_ISA_AVX2:
        return __builtin_cpu_supports("avx2") ? 1 : 0;
    case BINSR_ISA_AVX512:
        /* libgcc's detection also checks that the OS saves the zmm/opmask state (XGETBV). */
        return (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vpopcntdq"))
                   ? 1
                   : 0;
#endif
    default:
        return 0;
    }
}

static inline int64_t round_up(int64_t value, int64_t multiple) {
    return (value + multiple - 1) / multiple * multiple;
}

/* 64-byte aligned, zero-initialised scratch memory (freed with free()). */
static void *scratch_alloc(size_t bytes) {
    size_t size = (bytes + 63) / 64 * 64;
    void *ptr = NULL;
    if (size == 0)
        size = 64;
#if defined(_WIN32)
    ptr = malloc(size);
#else
    if (posix_memalign(&ptr, 64, size) != 0)
        ptr = NULL;
#endif
    if (ptr != NULL)
        memset(ptr, 0, size);
    return ptr;
}

/* A kernel over rows [begin, end); returns 0, or -1 if its scratch allocation failed. */
typedef int (*row_fn)(const void *ctx, int64_t begin, int64_t end);

/* Shared state of one parallel call: threads take chunks of rows from an atomic counter. */
typedef struct {
    row_fn fn;
    const void *ctx;
    int64_t rows, chunk;
#if BINSR_PTHREADS
    _Atomic int64_t next;
    _Atomic int failed;
#else
    int64_t next;
    int failed;
#endif
} work_queue;

#define BINSR_MAX_THREADS 256

/* Float outputs at least this large are written with non-temporal stores (AVX-512 path). */
#define BINSR_STREAM_BYTES ((int64_t)4 << 20)

/* Run chunks until the rows are exhausted (or some chunk failed). */
static void *work_loop(void *arg) {
    work_queue *q = (work_queue *)arg;
    for (;;) {
        int64_t begin, end;
#if BINSR_PTHREADS
        if (atomic_load(&q->failed))
            break;
        begin = atomic_fetch_add(&q->next, q->chunk);
#else
        begin = q->next;
        q->next += q->chunk;
#endif
        if (begin >= q->rows)
            break;
        end = (begin + q->chunk < q->rows) ? begin + q->chunk : q->rows;
        if (q->fn(q->ctx, begin, end) != 0) {
#if BINSR_PTHREADS
            atomic_store(&q->failed, 1);
#else
            q->failed = 1;
#endif
        }
    }
    return NULL;
}

/*
 * Fork-join over `rows` rows with up to `threads` threads (the caller is one of them). Rows are handed
 * out in chunks of about 1/8 of a thread's share, so a thread that the OS delays (a busy machine) does
 * not hold the others up. Threads are created per call: tens of microseconds, negligible next to a layer
 * of a millisecond or more. If a thread cannot be created, the others do its share. Returns 0 or -1.
 */
static int parallel_rows(int64_t rows, int threads, row_fn fn, const void *ctx) {
    work_queue q;
    if (rows <= 0)
        return 0;
    if (threads < 1)
        threads = 1;
    if (threads > BINSR_MAX_THREADS)
        threads = BINSR_MAX_THREADS;
    if ((int64_t)threads > rows)
        threads = (int)rows;
    q.fn = fn;
    q.ctx = ctx;
    q.rows = rows;
    q.chunk = (threads == 1) ? rows : (rows + 8 * threads - 1) / (8 * threads);
#if BINSR_PTHREADS
    atomic_init(&q.next, 0);
    atomic_init(&q.failed, 0);
    {
        pthread_t handles[BINSR_MAX_THREADS];
        int started[BINSR_MAX_THREADS];
        int t;
        for (t = 1; t < threads; ++t)
            started[t] = pthread_create(&handles[t], NULL, work_loop, &q) == 0;
        work_loop(&q);
        for (t = 1; t < threads; ++t)
            if (started[t])
                pthread_join(handles[t], NULL);
        return atomic_load(&q.failed) ? -1 : 0;
    }
#else
    q.next = 0;
    q.failed = 0;
    work_loop(&q);
    return q.failed ? -1 : 0;
#endif
}

/* Row stride (in words) of the planar scratch rows used while packing. */
static inline int64_t planar_stride(int64_t w) { return round_up(w, 16); }

/* Write a planar packed row ([CW][planar_stride(W)]) as NHWC words. */
static void planar_to_nhwc(const binsr_pack_args *a, const uint64_t *planar, uint64_t *dst) {
    const int64_t stride = planar_stride(a->w);
    int64_t x, j;
    if (a->cw == 1) {
        memcpy(dst, planar, (size_t)a->w * sizeof(uint64_t));
        return;
    }
    for (x = 0; x < a->w; ++x)
        for (j = 0; j < a->cw; ++j)
            dst[x * a->cw + j] = planar[j * stride + x];
}

/*
 * Ask the memory system for float row r (all channels) ahead of packing it. A row is C separate
 * segments of W floats, too many concurrent streams for the hardware prefetchers, so packing without
 * this waits on memory latency rather than bandwidth.
 */
static void prefetch_float_row(const binsr_pack_args *a, int64_t r) {
    const int64_t n = r / a->h, h = r % a->h;
    int64_t c, x;
    if (r >= a->n * a->h)
        return;
    for (c = 0; c < a->c; ++c) {
        const char *src = (const char *)(a->x + ((n * a->c + c) * a->h + h) * a->w);
        for (x = 0; x < a->w * (int64_t)sizeof(float); x += 64)
            __builtin_prefetch(src + x, 0, 2);
    }
}

/* Prefetch channel c's segment of float row r, called a few channels ahead of packing it. */
static inline void prefetch_channel(const binsr_pack_args *a, int64_t n, int64_t h, int64_t c) {
    if (c < a->c) {
        const char *src = (const char *)(a->x + ((n * a->c + c) * a->h + h) * a->w);
        int64_t x;
        for (x = 0; x < a->w * (int64_t)sizeof(float); x += 64)
            __builtin_prefetch(src + x, 0, 3);
    }
}

#define PACK_PREFETCH_CHANNELS 4

/* Row states of the fused float-input mode: not packed, being packed, packed. */
enum { ROW_EMPTY = 0, ROW_PACKING = 1, ROW_READY = 2 };

#if BINSR_PTHREADS
typedef _Atomic int row_state_t;
#else
typedef int row_state_t;
#endif

/*
 * Fused float-input mode: make sure packed input row r exists. The first thread to need a row packs it
 * (compare-and-swap EMPTY -> PACKING); a thread needing a row that another one is packing yields until
 * it is READY. A packing thread never waits, so this cannot deadlock.
 */
static void ensure_packed(const binsr_conv_args *a, int64_t r, uint64_t *planar) {
    row_state_t *state = (row_state_t *)a->row_state + r;
#if BINSR_PTHREADS
    int expected = ROW_EMPTY;
    if (atomic_load_explicit(state, memory_order_acquire) == ROW_READY)
        return;
    if (atomic_compare_exchange_strong(state, &expected, ROW_PACKING)) {
        a->pack_row(&a->pack, r, planar);
        atomic_store_explicit(state, ROW_READY, memory_order_release);
        /* the next output row will most likely need row r + 1: fetch it while this one is convolved */
        prefetch_float_row(&a->pack, r + 1);
        return;
    }
    while (atomic_load_explicit(state, memory_order_acquire) != ROW_READY)
        sched_yield();
#else
    if (*state != ROW_READY) {
        a->pack_row(&a->pack, r, planar);
        *state = ROW_READY;
        prefetch_float_row(&a->pack, r + 1);
    }
#endif
}

/* Pointers to the KH input rows feeding output row `oh` of image `n` (the zero row for padding). */
static void input_rows(const binsr_conv_args *a, int64_t n, int64_t oh, const uint64_t **rows,
                       uint64_t *planar) {
    int64_t i;
    for (i = 0; i < a->kh; ++i) {
        const int64_t ih = oh * a->sh + i - a->ph;
        if (ih >= 0 && ih < a->h) {
            if (a->row_state != NULL)
                ensure_packed(a, n * a->h + ih, planar);
            rows[i] = a->x + (n * a->h + ih) * a->w * a->cw;
        } else {
            rows[i] = a->zero_row;
        }
    }
}

/* Copy a planar row of packed output words ([OCW][stride]) into the NHWC output. */
static void store_row_bits(const binsr_conv_args *a, int64_t n, int64_t oh, const uint64_t *rowbits,
                           int64_t stride) {
    uint64_t *dst = a->out_bits + (n * a->oh + oh) * a->ow * a->ocw;
    int64_t ow, j;
    if (a->ocw == 1) {
        memcpy(dst, rowbits, (size_t)a->ow * sizeof(uint64_t));
        return;
    }
    for (ow = 0; ow < a->ow; ++ow)
        for (j = 0; j < a->ocw; ++j)
            dst[ow * a->ocw + j] = rowbits[j * stride + ow];
}

/* Per-row scratch shared by all paths: an int32 count tile and a planar packed-output row. */
typedef struct {
    int32_t *cnt;      /* [OCB][cnt_stride] */
    uint64_t *rowbits; /* [OCW][bits_stride], NULL without packed output */
    uint64_t *planar;  /* packing scratch of the fused float-input mode, else NULL */
    int64_t cnt_stride, bits_stride;
} conv_scratch;

static int conv_scratch_alloc(const binsr_conv_args *a, int64_t ocb, int64_t pb, conv_scratch *s) {
    /* Tiles are padded past the row end so pixel blocks and 16-wide epilogue loads stay inside. */
    s->cnt_stride = round_up(round_up(a->ow, pb), 16) + 16;
    s->bits_stride = round_up(a->ow, 16) + 16;
    s->cnt = (int32_t *)scratch_alloc((size_t)(ocb * s->cnt_stride) * sizeof(int32_t));
    s->rowbits = NULL;
    s->planar = NULL;
    if (s->cnt == NULL)
        return -1;
    if (a->out_bits != NULL) {
        s->rowbits = (uint64_t *)scratch_alloc((size_t)(a->ocw * s->bits_stride) * sizeof(uint64_t));
        if (s->rowbits == NULL) {
            free(s->cnt);
            return -1;
        }
    }
    if (a->row_state != NULL) {
        s->planar = (uint64_t *)scratch_alloc((size_t)(a->cw * planar_stride(a->w)) * sizeof(uint64_t));
        if (s->planar == NULL) {
            free(s->cnt);
            free(s->rowbits);
            return -1;
        }
    }
    return 0;
}

static void conv_scratch_free(conv_scratch *s) {
    free(s->cnt);
    free(s->rowbits);
    free(s->planar);
}

/* ------------------------------------------------------------------------------------------------ */
/* 2. Generic C path                                                                                */
/* ------------------------------------------------------------------------------------------------ */

#define GEN_OCB 8

static inline int popcount64(uint64_t v) { return __builtin_popcountll(v); }

/* Scalar epilogue for output channels [oc0, oc0 + nb) of one row: the reference float sequence. */
static void epilogue_generic(const binsr_conv_args *a, int64_t n, int64_t oh, int64_t oc0, int64_t nb,
                             const int32_t *cnt, int64_t cs, uint64_t *rowbits, int64_t bs) {
    int64_t i, ow;
    for (i = 0; i < nb; ++i) {
        const int64_t oc = oc0 + i;
        const int64_t plane = ((n * a->oc + oc) * a->oh + oh) * a->ow;
        const float alpha = a->alpha[oc];
        const float bias = a->bias ? a->bias[oc] : 0.0f;
        float *out = a->out ? a->out + plane : NULL;
        const float *res = a->residual ? a->residual + plane : NULL;
        uint64_t *bits = rowbits ? rowbits + (oc >> 6) * bs : NULL;
        const uint64_t bit = (uint64_t)1 << (oc & 63);
        for (ow = 0; ow < a->ow; ++ow) {
            float v = alpha * (float)(a->k - 2 * cnt[i * cs + ow]) + bias;
            if (a->gamma) {
                float t = v - a->gamma[oc];
                t = (t < 0.0f) ? t * a->slope[oc] : t;
                v = t + a->zeta[oc];
            }
            if (res)
                v = v + res[ow];
            if (out)
                out[ow] = v;
            if (bits && v + a->out_threshold[oc] < 0.0f)
                bits[ow] |= bit;
        }
    }
}

static int conv_rows_generic(const void *ctx, int64_t begin, int64_t end) {
    const binsr_conv_args *a = (const binsr_conv_args *)ctx;
    const int64_t taps_words = a->kh * a->kw * a->cw;
    const uint64_t *rows[BINSR_MAX_KERNEL];
    conv_scratch s;
    int64_t r, oc0, i, ow, y, x, j;
    if (conv_scratch_alloc(a, GEN_OCB, 1, &s) != 0)
        return -1;
    for (r = begin; r < end; ++r) {
        const int64_t n = r / a->oh, oh = r % a->oh;
        input_rows(a, n, oh, rows, s.planar);
        if (s.rowbits)
            memset(s.rowbits, 0, (size_t)(a->ocw * s.bits_stride) * sizeof(uint64_t));
        for (oc0 = 0; oc0 < a->oc; oc0 += GEN_OCB) {
            const int64_t nb = (a->oc - oc0 < GEN_OCB) ? a->oc - oc0 : GEN_OCB;
            for (i = 0; i < nb; ++i) {
                const uint64_t *wf = a->weights + (oc0 + i) * taps_words;
                for (ow = 0; ow < a->ow; ++ow) {
                    int32_t count = 0;
                    for (y = 0; y < a->kh; ++y) {
                        for (x = 0; x < a->kw; ++x) {
                            const int64_t col = ow * a->sw + x - a->pw;
                            const uint64_t *wp = wf + (y * a->kw + x) * a->cw;
                            if (col < 0 || col >= a->w) {
                                /* +1 padding is all-zero bits: a XOR w = w */
                                for (j = 0; j < a->cw; ++j)
                                    count += popcount64(wp[j]);
                            } else {
                                const uint64_t *ap = rows[y] + col * a->cw;
                                for (j = 0; j < a->cw; ++j)
                                    count += popcount64(ap[j] ^ wp[j]);
                            }
                        }
                    }
                    s.cnt[i * s.cnt_stride + ow] = count;
                }
            }
            epilogue_generic(a, n, oh, oc0, nb, s.cnt, s.cnt_stride, s.rowbits, s.bits_stride);
        }
        if (s.rowbits)
            store_row_bits(a, n, oh, s.rowbits, s.bits_stride);
    }
    conv_scratch_free(&s);
    return 0;
}

/*
 * Pack row r = n * H + h of an NCHW float tensor: the bits are ORed channel by channel into a planar
 * scratch row ([CW][planar_stride(W)] words, contiguous reads of each channel's row), then written out
 * as NHWC words.
 */
static void pack_row_generic(const binsr_pack_args *a, int64_t r, uint64_t *planar) {
    const int64_t n = r / a->h, h = r % a->h, stride = planar_stride(a->w);
    uint64_t *dst = a->out + r * a->w * a->cw;
    int64_t c, x;
    memset(planar, 0, (size_t)(a->cw * stride) * sizeof(uint64_t));
    for (c = 0; c < PACK_PREFETCH_CHANNELS; ++c)
        prefetch_channel(a, n, h, c);
    for (c = 0; c < a->c; ++c) {
        prefetch_channel(a, n, h, c + PACK_PREFETCH_CHANNELS);
        const float *src = a->x + ((n * a->c + c) * a->h + h) * a->w;
        const float b = a->threshold ? a->threshold[c] : 0.0f;
        const uint64_t bit = (uint64_t)1 << (c & 63);
        uint64_t *acc = planar + (c >> 6) * stride;
        for (x = 0; x < a->w; ++x)
            if (src[x] + b < 0.0f)
                acc[x] |= bit;
    }
    planar_to_nhwc(a, planar, dst);
}

/* ------------------------------------------------------------------------------------------------ */
/* 3a. AVX2 path: 4 pixels per ymm, popcount via 4-bit lookup (pshufb), byte counters flushed with  */
/*     psadbw before they can overflow.                                                             */
/* ------------------------------------------------------------------------------------------------ */
#if BINSR_X86

#define AVX2_TARGET __attribute__((target("avx2")))
#define A2_PV 2                 /* pixel vectors per block (4 pixels each) */
#define A2_OCB 4                /* output channels per block */
#define A2_PB (4 * A2_PV)       /* pixels per block */
#define A2_FLUSH 31             /* byte counters hold 31 x 8 = 248 < 256 */

/* Lanes of pixel vector starting at input column c0 that lie inside [0, limit), as a vector mask. */
AVX2_TARGET static inline __m256i a2_lane_mask(__m256i cols, int64_t limit) {
    const __m256i below = _mm256_cmpgt_epi64(_mm256_setzero_si256(), cols);
    const __m256i inside = _mm256_cmpgt_epi64(_mm256_set1_epi64x(limit), cols);
    return _mm256_andnot_si256(below, inside);
}

/* Named accumulators (acc<i><p>: output channel i, pixel vector p) of byte counts, kept in registers. */
#define A2_POPCNT8(v) /* per-byte popcount of v by two 16-entry table lookups */                     \
    _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256((v), low4)),                           \
                    _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16((v), 4), low4)))
#define A2_STEP(i)                                                                                    \
    do {                                                                                              \
        const __m256i wv_ = _mm256_set1_epi64x((long long)wt[i]);                                     \
        acc##i##0 = _mm256_add_epi8(acc##i##0, A2_POPCNT8(_mm256_xor_si256(av0, wv_)));              \
        acc##i##1 = _mm256_add_epi8(acc##i##1, A2_POPCNT8(_mm256_xor_si256(av1, wv_)));              \
    } while (0)
#define A2_FLUSH_ONE(i, p)                                                                            \
    do {                                                                                              \
        total[i][p] = _mm256_add_epi64(total[i][p], _mm256_sad_epu8(acc##i##p, zero));               \
        acc##i##p = zero;                                                                             \
    } while (0)
#define A2_FLUSH_ALL()                                                                                \
    do {                                                                                              \
        A2_FLUSH_ONE(0, 0); A2_FLUSH_ONE(0, 1); A2_FLUSH_ONE(1, 0); A2_FLUSH_ONE(1, 1);               \
        A2_FLUSH_ONE(2, 0); A2_FLUSH_ONE(2, 1); A2_FLUSH_ONE(3, 0); A2_FLUSH_ONE(3, 1);               \
    } while (0)

/* Load the 4-pixel vectors of one tap: contiguous (masked at the borders) or gathered. */
AVX2_TARGET static inline __m256i a2_load(const binsr_conv_args *a, const uint64_t *row, int64_t c0,
                                          int contiguous, __m256i idx, __m256i mask, int64_t j) {
    if (contiguous) {
        if (c0 >= 0 && c0 + 4 <= a->w)
            return _mm256_loadu_si256((const __m256i *)(row + c0));
        return _mm256_maskload_epi64((const long long *)((uintptr_t)row + (uintptr_t)(c0 * 8)), mask);
    }
    return _mm256_mask_i64gather_epi64(_mm256_setzero_si256(), (const long long *)(row + j), idx, mask, 8);
}

AVX2_TARGET static void a2_block(const binsr_conv_args *a, const uint64_t *const *rows, const uint64_t *wb,
                                 int64_t ow0, int32_t *cnt, int64_t cs) {
    const int64_t cw = a->cw;
    const int contiguous = (a->sw == 1 && cw == 1);
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2,
                                         2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    __m256i acc00 = zero, acc01 = zero, acc10 = zero, acc11 = zero;
    __m256i acc20 = zero, acc21 = zero, acc30 = zero, acc31 = zero;
    __m256i total[A2_OCB][A2_PV];
    int64_t y, x, j;
    int pending = 0;

    for (int i = 0; i < A2_OCB; ++i)
        for (int p = 0; p < A2_PV; ++p)
            total[i][p] = zero;
    for (y = 0; y < a->kh; ++y) {
        const uint64_t *row = rows[y];
        for (x = 0; x < a->kw; ++x) {
            __m256i mask[A2_PV], idx[A2_PV];
            for (int p = 0; p < A2_PV; ++p) {
                /* input column of each lane (exact 32x32->64 bit products of small operands) */
                const __m256i cols = _mm256_add_epi64(
                    _mm256_mul_epi32(_mm256_add_epi64(_mm256_set1_epi64x(ow0 + 4 * p), lane),
                                     _mm256_set1_epi64x(a->sw)),
                    _mm256_set1_epi64x(x - a->pw));
                mask[p] = a2_lane_mask(cols, a->w);
                idx[p] = _mm256_mul_epi32(cols, _mm256_set1_epi64x(cw));
            }
            for (j = 0; j < cw; ++j) {
                const int64_t c0 = ow0 + x - a->pw;
                const uint64_t *wt = wb + ((y * a->kw + x) * cw + j) * A2_OCB;
                const __m256i av0 = a2_load(a, row, c0, contiguous, idx[0], mask[0], j);
                const __m256i av1 = a2_load(a, row, c0 + 4, contiguous, idx[1], mask[1], j);
                A2_STEP(0);
                A2_STEP(1);
                A2_STEP(2);
                A2_STEP(3);
                if (++pending == A2_FLUSH) {
                    A2_FLUSH_ALL();
                    pending = 0;
                }
            }
        }
    }
    A2_FLUSH_ALL();
    {
        /* the low dword of each 64-bit count goes to the int32 tile */
        const __m256i low_dwords = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
        for (int i = 0; i < A2_OCB; ++i)
            for (int p = 0; p < A2_PV; ++p) {
                const __m256i packed = _mm256_permutevar8x32_epi32(total[i][p], low_dwords);
                _mm_storeu_si128((__m128i *)(cnt + i * cs + ow0 + 4 * p), _mm256_castsi256_si128(packed));
            }
    }
}

/* OR `bit` into 8 consecutive packed words where the 8 x 32-bit lane mask is set. */
AVX2_TARGET static inline void a2_or_bits(uint64_t *dst, __m256i lanes32, __m256i bit) {
    const __m256i m0 = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(lanes32));
    const __m256i m1 = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(lanes32, 1));
    __m256i w0 = _mm256_loadu_si256((const __m256i *)dst);
    __m256i w1 = _mm256_loadu_si256((const __m256i *)(dst + 4));
    w0 = _mm256_or_si256(w0, _mm256_and_si256(m0, bit));
    w1 = _mm256_or_si256(w1, _mm256_and_si256(m1, bit));
    _mm256_storeu_si256((__m256i *)dst, w0);
    _mm256_storeu_si256((__m256i *)(dst + 4), w1);
}

AVX2_TARGET static void a2_epilogue(const binsr_conv_args *a, int64_t n, int64_t oh, int64_t oc0, int64_t nb,
                                    const int32_t *cnt, int64_t cs, uint64_t *rowbits, int64_t bs) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 zero = _mm256_setzero_ps();
    int64_t i, ow;
    for (i = 0; i < nb; ++i) {
        const int64_t oc = oc0 + i;
        const int64_t plane = ((n * a->oc + oc) * a->oh + oh) * a->ow;
        const __m256i kv = _mm256_set1_epi32(a->k);
        const __m256 alpha = _mm256_set1_ps(a->alpha[oc]);
        const __m256 bias = _mm256_set1_ps(a->bias ? a->bias[oc] : 0.0f);
        const __m256 gamma = _mm256_set1_ps(a->gamma ? a->gamma[oc] : 0.0f);
        const __m256 slope = _mm256_set1_ps(a->gamma ? a->slope[oc] : 0.0f);
        const __m256 zeta = _mm256_set1_ps(a->gamma ? a->zeta[oc] : 0.0f);
        const __m256 thr = _mm256_set1_ps(rowbits ? a->out_threshold[oc] : 0.0f);
        const __m256i bit = _mm256_set1_epi64x((long long)((uint64_t)1 << (oc & 63)));
        float *out = a->out ? a->out + plane : NULL;
        const float *res = a->residual ? a->residual + plane : NULL;
        uint64_t *bits = rowbits ? rowbits + (oc >> 6) * bs : NULL;
        const int32_t *c = cnt + i * cs;
        for (ow = 0; ow < a->ow; ow += 8) {
            const __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(a->ow - ow)), lane);
            const __m256i ci = _mm256_loadu_si256((const __m256i *)(c + ow));
            __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(kv, _mm256_add_epi32(ci, ci)));
            v = _mm256_add_ps(_mm256_mul_ps(alpha, v), bias);
            if (a->gamma) {
                const __m256 t = _mm256_sub_ps(v, gamma);
                const __m256 neg = _mm256_cmp_ps(t, zero, _CMP_LT_OQ);
                v = _mm256_add_ps(_mm256_blendv_ps(t, _mm256_mul_ps(t, slope), neg), zeta);
            }
            if (res)
                v = _mm256_add_ps(v, _mm256_maskload_ps(res + ow, valid));
            if (out)
                _mm256_maskstore_ps(out + ow, valid, v);
            if (bits) {
                const __m256 below = _mm256_cmp_ps(_mm256_add_ps(v, thr), zero, _CMP_LT_OQ);
                a2_or_bits(bits + ow, _mm256_and_si256(_mm256_castps_si256(below), valid), bit);
            }
        }
    }
}

AVX2_TARGET static int conv_rows_avx2(const void *ctx, int64_t begin, int64_t end) {
    const binsr_conv_args *a = (const binsr_conv_args *)ctx;
    const uint64_t *rows[BINSR_MAX_KERNEL];
    conv_scratch s;
    int64_t r, oc0, ow0;
    if (conv_scratch_alloc(a, A2_OCB, A2_PB, &s) != 0)
        return -1;
    for (r = begin; r < end; ++r) {
        const int64_t n = r / a->oh, oh = r % a->oh;
        input_rows(a, n, oh, rows, s.planar);
        if (s.rowbits)
            memset(s.rowbits, 0, (size_t)(a->ocw * s.bits_stride) * sizeof(uint64_t));
        for (oc0 = 0; oc0 < a->oc; oc0 += A2_OCB) {
            const int64_t nb = (a->oc - oc0 < A2_OCB) ? a->oc - oc0 : A2_OCB;
            const uint64_t *wb = a->blocked + (oc0 / A2_OCB) * a->kh * a->kw * a->cw * A2_OCB;
            for (ow0 = 0; ow0 < a->ow; ow0 += A2_PB)
                a2_block(a, rows, wb, ow0, s.cnt, s.cnt_stride);
            a2_epilogue(a, n, oh, oc0, nb, s.cnt, s.cnt_stride, s.rowbits, s.bits_stride);
        }
        if (s.rowbits)
            store_row_bits(a, n, oh, s.rowbits, s.bits_stride);
    }
    conv_scratch_free(&s);
    return 0;
}

AVX2_TARGET static void pack_row_avx2(const binsr_pack_args *a, int64_t r, uint64_t *planar) {
    const int64_t n = r / a->h, h = r % a->h, stride = planar_stride(a->w);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 zero = _mm256_setzero_ps();
    int64_t c, x;
    memset(planar, 0, (size_t)(a->cw * stride) * sizeof(uint64_t));
    for (c = 0; c < PACK_PREFETCH_CHANNELS; ++c)
        prefetch_channel(a, n, h, c);
    for (c = 0; c < a->c; ++c) {
        prefetch_channel(a, n, h, c + PACK_PREFETCH_CHANNELS);
        const float *src = a->x + ((n * a->c + c) * a->h + h) * a->w;
        const __m256 b = _mm256_set1_ps(a->threshold ? a->threshold[c] : 0.0f);
        const __m256i bit = _mm256_set1_epi64x((long long)((uint64_t)1 << (c & 63)));
        uint64_t *acc = planar + (c >> 6) * stride;
        for (x = 0; x < a->w; x += 8) {
            const __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(a->w - x)), lane);
            const __m256 v = _mm256_add_ps(_mm256_maskload_ps(src + x, valid), b);
            const __m256 below = _mm256_cmp_ps(v, zero, _CMP_LT_OQ);
            a2_or_bits(acc + x, _mm256_and_si256(_mm256_castps_si256(below), valid), bit);
        }
    }
    planar_to_nhwc(a, planar, a->out + r * a->w * a->cw);
}

/* ------------------------------------------------------------------------------------------------ */
/* 3b. AVX-512 path: 8 pixels per zmm, VPOPCNTQ, OCB x PV = 24 accumulators in registers.           */
/* ------------------------------------------------------------------------------------------------ */

#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vpopcntdq")))
#define A5_PV 3               /* pixel vectors per block (8 pixels each) */
#define A5_OCB 8              /* output channels per block */
#define A5_PB (8 * A5_PV)     /* pixels per block */

/* Lanes j of a vector whose lane 0 reads input column c0 with 0 <= c0 + j < limit. */
static inline unsigned lane_mask8(int64_t c0, int64_t limit) {
    int64_t lo = -c0, hi = limit - c0;
    if (lo < 0)
        lo = 0;
    if (hi > 8)
        hi = 8;
    if (hi <= lo)
        return 0;
    return ((1u << hi) - 1u) & ~((1u << lo) - 1u);
}

/*
 * The block's accumulators are named variables (acc<i><p>: output channel i, pixel vector p) rather than
 * an array, so that the compiler keeps all 24 in zmm registers. Weight words come from the blocked copy
 * (wb[t * 8 + i] is word t of channel oc0 + i), one broadcast per channel, reused by the 3 pixel vectors.
 */
#define A5_DECLARE(i) __m512i acc##i##0 = zero, acc##i##1 = zero, acc##i##2 = zero
#define A5_STEP(i)                                                                                    \
    do {                                                                                              \
        const __m512i wv_ = _mm512_set1_epi64((long long)wt[i]);                                      \
        acc##i##0 = _mm512_add_epi64(acc##i##0, _mm512_popcnt_epi64(_mm512_xor_si512(av0, wv_)));     \
        acc##i##1 = _mm512_add_epi64(acc##i##1, _mm512_popcnt_epi64(_mm512_xor_si512(av1, wv_)));     \
        acc##i##2 = _mm512_add_epi64(acc##i##2, _mm512_popcnt_epi64(_mm512_xor_si512(av2, wv_)));     \
    } while (0)
#define A5_ALL_STEPS()                                                                                \
    do {                                                                                              \
        A5_STEP(0); A5_STEP(1); A5_STEP(2); A5_STEP(3);                                               \
        A5_STEP(4); A5_STEP(5); A5_STEP(6); A5_STEP(7);                                               \
    } while (0)
#define A5_STORE(i)                                                                                   \
    do {                                                                                              \
        int32_t *dst_ = cnt + (i) * cs + ow0;                                                         \
        _mm256_storeu_si256((__m256i *)dst_, _mm512_cvtepi64_epi32(acc##i##0));                       \
        _mm256_storeu_si256((__m256i *)(dst_ + 8), _mm512_cvtepi64_epi32(acc##i##1));                 \
        _mm256_storeu_si256((__m256i *)(dst_ + 16), _mm512_cvtepi64_epi32(acc##i##2));                \
    } while (0)
#define A5_STORE_ALL()                                                                                \
    do {                                                                                              \
        A5_STORE(0); A5_STORE(1); A5_STORE(2); A5_STORE(3);                                           \
        A5_STORE(4); A5_STORE(5); A5_STORE(6); A5_STORE(7);                                           \
    } while (0)

/* Stride 1 and one word per pixel (C_in <= 64): each tap reads 8 consecutive words per vector,
   masked at the borders (masked-off lanes read nothing and give 0 = the +1 padding). */
AVX512_TARGET static void a5_block_contiguous(const binsr_conv_args *a, const uint64_t *const *rows,
                                              const uint64_t *wb, int64_t ow0, int32_t *cnt, int64_t cs) {
    const __m512i zero = _mm512_setzero_si512();
    A5_DECLARE(0); A5_DECLARE(1); A5_DECLARE(2); A5_DECLARE(3);
    A5_DECLARE(4); A5_DECLARE(5); A5_DECLARE(6); A5_DECLARE(7);
    int64_t y, x;
    for (y = 0; y < a->kh; ++y) {
        const uint64_t *row = rows[y];
        for (x = 0; x < a->kw; ++x) {
            const int64_t c0 = ow0 + x - a->pw; /* input column of lane 0 */
            const uint64_t *wt = wb + (y * a->kw + x) * A5_OCB;
            __m512i av0, av1, av2;
            if (c0 >= 0 && c0 + A5_PB <= a->w) {
                av0 = _mm512_loadu_si512((const void *)(row + c0));
                av1 = _mm512_loadu_si512((const void *)(row + c0 + 8));
                av2 = _mm512_loadu_si512((const void *)(row + c0 + 16));
            } else {
                const uintptr_t base = (uintptr_t)row + (uintptr_t)(c0 * 8);
                av0 = _mm512_maskz_loadu_epi64((__mmask8)lane_mask8(c0, a->w), (const void *)base);
                av1 = _mm512_maskz_loadu_epi64((__mmask8)lane_mask8(c0 + 8, a->w), (const void *)(base + 64));
                av2 = _mm512_maskz_loadu_epi64((__mmask8)lane_mask8(c0 + 16, a->w), (const void *)(base + 128));
            }
            A5_ALL_STEPS();
        }
    }
    A5_STORE_ALL();
}

/* General case (stride > 1 or several words per pixel): masked gathers. */
AVX512_TARGET static void a5_block_gather(const binsr_conv_args *a, const uint64_t *const *rows,
                                          const uint64_t *wb, int64_t ow0, int32_t *cnt, int64_t cs) {
    const __m512i zero = _mm512_setzero_si512();
    const __m512i lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    const int64_t cw = a->cw;
    A5_DECLARE(0); A5_DECLARE(1); A5_DECLARE(2); A5_DECLARE(3);
    A5_DECLARE(4); A5_DECLARE(5); A5_DECLARE(6); A5_DECLARE(7);
    int64_t y, x, j;
    for (y = 0; y < a->kh; ++y) {
        const uint64_t *row = rows[y];
        for (x = 0; x < a->kw; ++x) {
            __m512i idx[A5_PV];
            __mmask8 mask[A5_PV];
            for (int p = 0; p < A5_PV; ++p) {
                /* input column of each lane; small operands, so the 32x32->64 bit multiply is exact */
                const __m512i cols = _mm512_add_epi64(
                    _mm512_mul_epi32(_mm512_add_epi64(_mm512_set1_epi64(ow0 + 8 * p), lane),
                                     _mm512_set1_epi64(a->sw)),
                    _mm512_set1_epi64(x - a->pw));
                mask[p] = _mm512_cmpge_epi64_mask(cols, zero) &
                          _mm512_cmplt_epi64_mask(cols, _mm512_set1_epi64(a->w));
                idx[p] = _mm512_mul_epi32(cols, _mm512_set1_epi64(cw));
            }
            for (j = 0; j < cw; ++j) {
                const uint64_t *wt = wb + ((y * a->kw + x) * cw + j) * A5_OCB;
                const __m512i av0 = _mm512_mask_i64gather_epi64(zero, mask[0], idx[0], (const void *)(row + j), 8);
                const __m512i av1 = _mm512_mask_i64gather_epi64(zero, mask[1], idx[1], (const void *)(row + j), 8);
                const __m512i av2 = _mm512_mask_i64gather_epi64(zero, mask[2], idx[2], (const void *)(row + j), 8);
                A5_ALL_STEPS();
            }
        }
    }
    A5_STORE_ALL();
}

/* OR `bit` into 16 consecutive packed words where the 16-bit mask is set. */
AVX512_TARGET static inline void a5_or_bits(uint64_t *dst, __mmask16 m, __m512i bit) {
    __m512i w0 = _mm512_loadu_si512((const void *)dst);
    __m512i w1 = _mm512_loadu_si512((const void *)(dst + 8));
    w0 = _mm512_mask_or_epi64(w0, (__mmask8)(m & 0xff), w0, bit);
    w1 = _mm512_mask_or_epi64(w1, (__mmask8)(m >> 8), w1, bit);
    _mm512_storeu_si512((void *)dst, w0);
    _mm512_storeu_si512((void *)(dst + 8), w1);
}

AVX512_TARGET static void a5_epilogue(const binsr_conv_args *a, int64_t n, int64_t oh, int64_t oc0, int64_t nb,
                                      const int32_t *cnt, int64_t cs, uint64_t *rowbits, int64_t bs) {
    const __m512 zero = _mm512_setzero_ps();
    const int stream = a->stream_out;
    int64_t i, ow;
    for (i = 0; i < nb; ++i) {
        const int64_t oc = oc0 + i;
        const int64_t plane = ((n * a->oc + oc) * a->oh + oh) * a->ow;
        const __m512i kv = _mm512_set1_epi32(a->k);
        const __m512 alpha = _mm512_set1_ps(a->alpha[oc]);
        const __m512 bias = _mm512_set1_ps(a->bias ? a->bias[oc] : 0.0f);
        const __m512 gamma = _mm512_set1_ps(a->gamma ? a->gamma[oc] : 0.0f);
        const __m512 slope = _mm512_set1_ps(a->gamma ? a->slope[oc] : 0.0f);
        const __m512 zeta = _mm512_set1_ps(a->gamma ? a->zeta[oc] : 0.0f);
        const __m512 thr = _mm512_set1_ps(rowbits ? a->out_threshold[oc] : 0.0f);
        const __m512i bit = _mm512_set1_epi64((long long)((uint64_t)1 << (oc & 63)));
        float *out = a->out ? a->out + plane : NULL;
        const float *res = a->residual ? a->residual + plane : NULL;
        uint64_t *bits = rowbits ? rowbits + (oc >> 6) * bs : NULL;
        const int32_t *c = cnt + i * cs;
        int64_t len;
        for (ow = 0; ow < a->ow; ow += len) {
            /* Chunks of up to 16 pixels, cut so that full chunks of `out` are 64-byte aligned: those are
               written with streaming stores (no read-for-ownership of the output lines). */
            const int64_t lead = out ? (int64_t)((((uintptr_t)(out + ow)) >> 2) & 15) : 0;
            len = (a->ow - ow < 16 - lead) ? a->ow - ow : 16 - lead;
            const __mmask16 valid = (len == 16) ? (__mmask16)0xffff : (__mmask16)((1u << len) - 1u);
            const __m512i ci = _mm512_loadu_si512((const void *)(c + ow));
            __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(kv, _mm512_add_epi32(ci, ci)));
            v = _mm512_add_ps(_mm512_mul_ps(alpha, v), bias);
            if (a->gamma) {
                __m512 t = _mm512_sub_ps(v, gamma);
                const __mmask16 neg = _mm512_cmp_ps_mask(t, zero, _CMP_LT_OQ);
                t = _mm512_mask_mul_ps(t, neg, t, slope);
                v = _mm512_add_ps(t, zeta);
            }
            if (res)
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(valid, res + ow));
            if (out) {
                if (len == 16 && lead == 0 && stream)
                    _mm512_stream_ps(out + ow, v);
                else
                    _mm512_mask_storeu_ps(out + ow, valid, v);
            }
            if (bits)
                a5_or_bits(bits + ow, _mm512_cmp_ps_mask(_mm512_add_ps(v, thr), zero, _CMP_LT_OQ) & valid,
                           bit);
        }
    }
}

AVX512_TARGET static int conv_rows_avx512(const void *ctx, int64_t begin, int64_t end) {
    const binsr_conv_args *a = (const binsr_conv_args *)ctx;
    const uint64_t *rows[BINSR_MAX_KERNEL];
    conv_scratch s;
    int64_t r, oc0, ow0;
    if (conv_scratch_alloc(a, A5_OCB, A5_PB, &s) != 0)
        return -1;
    for (r = begin; r < end; ++r) {
        const int64_t n = r / a->oh, oh = r % a->oh;
        input_rows(a, n, oh, rows, s.planar);
        if (s.rowbits)
            memset(s.rowbits, 0, (size_t)(a->ocw * s.bits_stride) * sizeof(uint64_t));
        for (oc0 = 0; oc0 < a->oc; oc0 += A5_OCB) {
            const int64_t nb = (a->oc - oc0 < A5_OCB) ? a->oc - oc0 : A5_OCB;
            const uint64_t *wb = a->blocked + (oc0 / A5_OCB) * a->kh * a->kw * a->cw * A5_OCB;
            for (ow0 = 0; ow0 < a->ow; ow0 += A5_PB) {
                if (a->sw == 1 && a->cw == 1)
                    a5_block_contiguous(a, rows, wb, ow0, s.cnt, s.cnt_stride);
                else
                    a5_block_gather(a, rows, wb, ow0, s.cnt, s.cnt_stride);
            }
            a5_epilogue(a, n, oh, oc0, nb, s.cnt, s.cnt_stride, s.rowbits, s.bits_stride);
        }
        if (s.rowbits)
            store_row_bits(a, n, oh, s.rowbits, s.bits_stride);
    }
    _mm_sfence(); /* order the streaming stores before the join */
    conv_scratch_free(&s);
    return 0;
}

AVX512_TARGET static void pack_row_avx512(const binsr_pack_args *a, int64_t r, uint64_t *planar) {
    const int64_t n = r / a->h, h = r % a->h, stride = planar_stride(a->w);
    const __m512 zero = _mm512_setzero_ps();
    int64_t c, x;
    memset(planar, 0, (size_t)(a->cw * stride) * sizeof(uint64_t));
    for (c = 0; c < PACK_PREFETCH_CHANNELS; ++c)
        prefetch_channel(a, n, h, c);
    for (c = 0; c < a->c; ++c) {
        prefetch_channel(a, n, h, c + PACK_PREFETCH_CHANNELS);
        const float *src = a->x + ((n * a->c + c) * a->h + h) * a->w;
        const __m512 b = _mm512_set1_ps(a->threshold ? a->threshold[c] : 0.0f);
        const __m512i bit = _mm512_set1_epi64((long long)((uint64_t)1 << (c & 63)));
        uint64_t *acc = planar + (c >> 6) * stride;
        for (x = 0; x < a->w; x += 16) {
            const __mmask16 valid =
                (a->w - x >= 16) ? (__mmask16)0xffff : (__mmask16)((1u << (a->w - x)) - 1u);
            const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(valid, src + x), b);
            a5_or_bits(acc + x, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ) & valid, bit);
        }
    }
    planar_to_nhwc(a, planar, a->out + r * a->w * a->cw);
}

#endif /* BINSR_X86 */

/* ------------------------------------------------------------------------------------------------ */
/* Dispatch                                                                                         */
/* ------------------------------------------------------------------------------------------------ */

static row_fn conv_kernel(int isa) {
#if BINSR_X86
    if (isa == BINSR_ISA_AVX512)
        return conv_rows_avx512;
    if (isa == BINSR_ISA_AVX2)
        return conv_rows_avx2;
#endif
    (void)isa;
    return conv_rows_generic;
}

static binsr_pack_row_fn pack_row_kernel(int isa) {
#if BINSR_X86
    if (isa == BINSR_ISA_AVX512)
        return pack_row_avx512;
    if (isa == BINSR_ISA_AVX2)
        return pack_row_avx2;
#endif
    (void)isa;
    return pack_row_generic;
}

/* A packing job: rows of `args` packed by `row`. */
typedef struct {
    const binsr_pack_args *args;
    binsr_pack_row_fn row;
} pack_job;

static int pack_rows(const void *ctx, int64_t begin, int64_t end) {
    const pack_job *job = (const pack_job *)ctx;
    const binsr_pack_args *a = job->args;
    uint64_t *planar = (uint64_t *)scratch_alloc((size_t)(a->cw * planar_stride(a->w)) * sizeof(uint64_t));
    int64_t r;
    if (planar == NULL)
        return -1;
    if (begin < end)
        prefetch_float_row(a, begin);
    for (r = begin; r < end; ++r) {
        if (r + 1 < end)
            prefetch_float_row(a, r + 1);
        job->row(a, r, planar);
    }
    free(planar);
    return 0;
}

int binsr_pack_nchw(const binsr_pack_args *args, int threads, int isa) {
    pack_job job;
    job.args = args;
    job.row = pack_row_kernel(isa);
    return parallel_rows(args->n * args->h, threads, pack_rows, &job);
}

/* Output-channel block size of each path's micro-kernel (the blocked weight layout). */
static int64_t weight_block(int isa) {
#if BINSR_X86
    if (isa == BINSR_ISA_AVX512)
        return A5_OCB;
    if (isa == BINSR_ISA_AVX2)
        return A2_OCB;
#endif
    (void)isa;
    return 1;
}

/*
 * Re-lay the weights [OC][taps*CW] as [OC/B][taps*CW][B] (B = block size, missing channels zero), so
 * that a micro-kernel finds the B words it broadcasts for one tap next to each other.
 */
static uint64_t *block_weights(const binsr_conv_args *a, int64_t block) {
    const int64_t taps_words = a->kh * a->kw * a->cw;
    const int64_t blocks = (a->oc + block - 1) / block;
    uint64_t *blocked = (uint64_t *)scratch_alloc((size_t)(blocks * taps_words * block) * sizeof(uint64_t));
    int64_t oc, t;
    if (blocked == NULL)
        return NULL;
    for (oc = 0; oc < a->oc; ++oc)
        for (t = 0; t < taps_words; ++t)
            blocked[((oc / block) * taps_words + t) * block + oc % block] = a->weights[oc * taps_words + t];
    return blocked;
}

int binsr_conv2d(binsr_conv_args *args, int threads, int isa) {
    int status;
    uint64_t *zero_row = (uint64_t *)scratch_alloc((size_t)(args->w * args->cw) * sizeof(uint64_t));
    uint64_t *blocked = block_weights(args, weight_block(isa));
    uint64_t *packed = NULL;
    void *row_state = NULL;
    if (args->xf != NULL) {
        /* fused float-input mode: rows are packed on demand into a buffer private to this call */
        packed = (uint64_t *)scratch_alloc((size_t)(args->n * args->h * args->w * args->cw) * sizeof(uint64_t));
        row_state = scratch_alloc((size_t)(args->n * args->h) * sizeof(row_state_t));
        args->pack.x = args->xf;
        args->pack.threshold = args->x_threshold;
        args->pack.out = packed;
        args->pack.n = args->n;
        args->pack.c = args->cin;
        args->pack.h = args->h;
        args->pack.w = args->w;
        args->pack.cw = args->cw;
        args->pack_row = pack_row_kernel(isa);
        args->x = packed;
        args->row_state = row_state;
        if (packed == NULL || row_state == NULL) {
            free(zero_row);
            free(blocked);
            free(packed);
            free(row_state);
            return -1;
        }
    }
    args->zero_row = zero_row;
    args->blocked = blocked;
    /* Stream the float output past the caches when it is much larger than them. */
    args->stream_out = args->out != NULL && args->n * args->oc * args->oh * args->ow * 4 >= BINSR_STREAM_BYTES;
    status = parallel_rows(args->n * args->oh, threads, conv_kernel(isa), args);
    args->zero_row = NULL;
    args->blocked = NULL;
    if (packed != NULL) {
        args->x = NULL;
        args->row_state = NULL;
        free(packed);
        free(row_state);
    }
    free(zero_row);
    free(blocked);
    return status;
}

/* ------------------------------------------------------------------------------------------------ */
/* 4. Python bindings                                                                               */
/* ------------------------------------------------------------------------------------------------ */

/* A C-contiguous buffer of `count` items of `itemsize` bytes, or None when `optional`. */
static int get_buffer(PyObject *obj, Py_buffer *view, const char *name, int writable, Py_ssize_t itemsize,
                      Py_ssize_t count, int optional) {
    view->obj = NULL;
    view->buf = NULL;
    if (obj == Py_None) {
        if (optional)
            return 0;
        PyErr_Format(PyExc_TypeError, "%s must be a buffer, not None", name);
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) !=
        0)
        return -1;
    if (view->itemsize != itemsize || view->len != itemsize * count) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items of %zd bytes, got %zd bytes in items of %zd",
                     name, count, itemsize, view->len, view->itemsize);
        PyBuffer_Release(view);
        view->obj = NULL;
        view->buf = NULL;
        return -1;
    }
    if (itemsize == 4 && view->format != NULL && strcmp(view->format, "f") != 0 &&
        strcmp(view->format, "<f") != 0 && strcmp(view->format, "=f") != 0) {
        PyErr_Format(PyExc_TypeError, "%s must hold float32 values (buffer format '%s')", name, view->format);
        PyBuffer_Release(view);
        view->obj = NULL;
        view->buf = NULL;
        return -1;
    }
    return 0;
}

static void release_buffers(Py_buffer *views, int count) {
    int i;
    for (i = 0; i < count; ++i)
        if (views[i].obj != NULL)
            PyBuffer_Release(&views[i]);
}

static int check_isa(int isa) {
    if (isa < 0 || isa >= BINSR_ISA_COUNT) {
        PyErr_Format(PyExc_ValueError, "unknown ISA code %d", isa);
        return -1;
    }
    if (!binsr_isa_supported(isa)) {
        PyErr_Format(PyExc_RuntimeError, "ISA path '%s' is not supported by this CPU", isa_names[isa]);
        return -1;
    }
    return 0;
}

static PyObject *py_isa_supported(PyObject *self, PyObject *args) {
    int isa;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &isa))
        return NULL;
    return PyBool_FromLong(isa >= 0 && isa < BINSR_ISA_COUNT && binsr_isa_supported(isa));
}

static PyObject *py_pack_nchw(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"x", "threshold", "out", "n", "c", "h", "w", "threads", "isa", NULL};
    PyObject *x_obj, *thr_obj, *out_obj;
    Py_buffer views[3];
    binsr_pack_args pa;
    Py_ssize_t n, c, h, w;
    int threads, isa, status;
    (void)self;
    memset(views, 0, sizeof(views));
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOnnnnii", keywords, &x_obj, &thr_obj, &out_obj, &n, &c,
                                     &h, &w, &threads, &isa))
        return NULL;
    if (check_isa(isa) != 0)
        return NULL;
    if (n < 1 || c < 1 || h < 1 || w < 1) {
        PyErr_SetString(PyExc_ValueError, "pack_nchw: every dimension must be >= 1");
        return NULL;
    }
    pa.n = n;
    pa.c = c;
    pa.h = h;
    pa.w = w;
    pa.cw = (c + 63) / 64;
    if (get_buffer(x_obj, &views[0], "x", 0, 4, n * c * h * w, 0) != 0 ||
        get_buffer(thr_obj, &views[1], "threshold", 0, 4, c, 1) != 0 ||
        get_buffer(out_obj, &views[2], "out", 1, 8, n * h * w * pa.cw, 0) != 0) {
        release_buffers(views, 3);
        return NULL;
    }
    pa.x = (const float *)views[0].buf;
    pa.threshold = (const float *)views[1].buf;
    pa.out = (uint64_t *)views[2].buf;
    Py_BEGIN_ALLOW_THREADS status = binsr_pack_nchw(&pa, threads, isa);
    Py_END_ALLOW_THREADS release_buffers(views, 3);
    if (status != 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_conv2d(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"x",   "w",        "alpha", "bias",          "gamma",    "slope",
                               "zeta", "residual", "out",   "out_threshold", "out_bits", "geometry",
                               "threads", "isa",   "xf",    "x_threshold",   NULL};
    PyObject *obj[13];
    Py_buffer views[13];
    binsr_conv_args ca;
    Py_ssize_t n, h, w, cin, oc, kh, kw, sh, sw, ph, pw;
    int threads, isa, status;
    (void)self;
    memset(views, 0, sizeof(views));
    memset(&ca, 0, sizeof(ca));
    obj[11] = Py_None;
    obj[12] = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOOOOOO(nnnnnnnnnnn)ii|OO", keywords, &obj[0],
                                     &obj[1], &obj[2], &obj[3], &obj[4], &obj[5], &obj[6], &obj[7], &obj[8],
                                     &obj[9], &obj[10], &n, &h, &w, &cin, &oc, &kh, &kw, &sh, &sw, &ph, &pw,
                                     &threads, &isa, &obj[11], &obj[12]))
        return NULL;
    if (check_isa(isa) != 0)
        return NULL;
    if (n < 1 || h < 1 || w < 1 || cin < 1 || oc < 1 || kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 ||
        pw < 0) {
        PyErr_SetString(PyExc_ValueError, "conv2d: sizes and strides must be >= 1 and padding >= 0");
        return NULL;
    }
    if (kh > BINSR_MAX_KERNEL || kw > BINSR_MAX_KERNEL) {
        PyErr_Format(PyExc_ValueError, "conv2d: kernel size is limited to %d", BINSR_MAX_KERNEL);
        return NULL;
    }
    if (h + 2 * ph < kh || w + 2 * pw < kw) {
        PyErr_SetString(PyExc_ValueError, "conv2d: the padded input is smaller than the kernel");
        return NULL;
    }
    if (cin * kh * kw > 0x3fffffff || n * h * w > ((Py_ssize_t)1 << 40)) {
        PyErr_SetString(PyExc_ValueError, "conv2d: problem too large");
        return NULL;
    }
    ca.n = n;
    ca.h = h;
    ca.w = w;
    ca.cin = cin;
    ca.cw = (cin + 63) / 64;
    ca.oc = oc;
    ca.ocw = (oc + 63) / 64;
    ca.kh = kh;
    ca.kw = kw;
    ca.sh = sh;
    ca.sw = sw;
    ca.ph = ph;
    ca.pw = pw;
    ca.oh = (h + 2 * ph - kh) / sh + 1;
    ca.ow = (w + 2 * pw - kw) / sw + 1;
    ca.k = (int32_t)(cin * kh * kw);
    {
        const Py_ssize_t out_elems = n * oc * ca.oh * ca.ow;
        const int rprelu = obj[4] != Py_None;
        if ((obj[5] != Py_None) != rprelu || (obj[6] != Py_None) != rprelu) {
            PyErr_SetString(PyExc_ValueError, "conv2d: gamma, slope and zeta must be given together");
            return NULL;
        }
        if ((obj[9] != Py_None) != (obj[10] != Py_None)) {
            PyErr_SetString(PyExc_ValueError, "conv2d: out_threshold and out_bits must be given together");
            return NULL;
        }
        if ((obj[0] == Py_None) == (obj[11] == Py_None)) {
            PyErr_SetString(PyExc_ValueError, "conv2d: give exactly one of x (packed) and xf (float)");
            return NULL;
        }
        if (obj[12] != Py_None && obj[11] == Py_None) {
            PyErr_SetString(PyExc_ValueError, "conv2d: x_threshold needs xf");
            return NULL;
        }
        if (obj[8] == Py_None && obj[10] == Py_None) {
            PyErr_SetString(PyExc_ValueError, "conv2d: give out, out_bits or both");
            return NULL;
        }
        if (get_buffer(obj[0], &views[0], "x", 0, 8, n * h * w * ca.cw, 1) != 0 ||
            get_buffer(obj[1], &views[1], "w", 0, 8, oc * kh * kw * ca.cw, 0) != 0 ||
            get_buffer(obj[2], &views[2], "alpha", 0, 4, oc, 0) != 0 ||
            get_buffer(obj[3], &views[3], "bias", 0, 4, oc, 1) != 0 ||
            get_buffer(obj[4], &views[4], "gamma", 0, 4, oc, 1) != 0 ||
            get_buffer(obj[5], &views[5], "slope", 0, 4, oc, 1) != 0 ||
            get_buffer(obj[6], &views[6], "zeta", 0, 4, oc, 1) != 0 ||
            get_buffer(obj[7], &views[7], "residual", 0, 4, out_elems, 1) != 0 ||
            get_buffer(obj[8], &views[8], "out", 1, 4, out_elems, 1) != 0 ||
            get_buffer(obj[9], &views[9], "out_threshold", 0, 4, oc, 1) != 0 ||
            get_buffer(obj[10], &views[10], "out_bits", 1, 8, n * ca.oh * ca.ow * ca.ocw, 1) != 0 ||
            get_buffer(obj[11], &views[11], "xf", 0, 4, n * cin * h * w, 1) != 0 ||
            get_buffer(obj[12], &views[12], "x_threshold", 0, 4, cin, 1) != 0) {
            release_buffers(views, 13);
            return NULL;
        }
    }
    ca.x = (const uint64_t *)views[0].buf;
    ca.weights = (const uint64_t *)views[1].buf;
    ca.alpha = (const float *)views[2].buf;
    ca.bias = (const float *)views[3].buf;
    ca.gamma = (const float *)views[4].buf;
    ca.slope = (const float *)views[5].buf;
    ca.zeta = (const float *)views[6].buf;
    ca.residual = (const float *)views[7].buf;
    ca.out = (float *)views[8].buf;
    ca.out_threshold = (const float *)views[9].buf;
    ca.out_bits = (uint64_t *)views[10].buf;
    ca.xf = (const float *)views[11].buf;
    ca.x_threshold = (const float *)views[12].buf;
    Py_BEGIN_ALLOW_THREADS status = binsr_conv2d(&ca, threads, isa);
    Py_END_ALLOW_THREADS release_buffers(views, 13);
    if (status != 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef kernel_methods[] = {
    {"isa_supported", py_isa_supported, METH_VARARGS,
     "isa_supported(code) -> bool: whether this CPU runs the ISA path `code` (0 generic, 1 avx2, 2 avx512)."},
    {"pack_nchw", (PyCFunction)(void (*)(void))py_pack_nchw, METH_VARARGS | METH_KEYWORDS,
     "pack_nchw(x, threshold, out, n, c, h, w, threads, isa): float32 NCHW -> packed NHWC uint64 words,\n"
     "bit 1 where x + threshold < 0. threshold may be None."},
    {"conv2d", (PyCFunction)(void (*)(void))py_conv2d, METH_VARARGS | METH_KEYWORDS,
     "conv2d(x, w, alpha, bias, gamma, slope, zeta, residual, out, out_threshold, out_bits,\n"
     "       (n, h, w, cin, oc, kh, kw, sh, sw, ph, pw), threads, isa, xf=None, x_threshold=None):\n"
     "packed binary convolution with a fused epilogue; optional arguments are None. With xf (float\n"
     "NCHW) instead of x, the input is binarized and packed on the fly. See kernels.h."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "Packed XNOR-popcount kernels for binsr (see src/binsr/engine/kernels.h).", -1, kernel_methods,
    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernels(void) {
    PyObject *module, *names;
    int i;
#if BINSR_X86
    __builtin_cpu_init();
#endif
    module = PyModule_Create(&kernel_module);
    if (module == NULL)
        return NULL;
    names = PyTuple_New(BINSR_ISA_COUNT);
    if (names == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    for (i = 0; i < BINSR_ISA_COUNT; ++i)
        PyTuple_SET_ITEM(names, i, PyUnicode_FromString(isa_names[i]));
    if (PyModule_AddObject(module, "ISA_NAMES", names) != 0 ||
        PyModule_AddIntConstant(module, "MAX_KERNEL", BINSR_MAX_KERNEL) != 0) {
        Py_DECREF(names);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
