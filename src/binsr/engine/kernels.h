/*
 * binsr packed XNOR-popcount kernels: the C-level interface.
 *
 * Conventions (shared with src/binsr/layers.py, BinaryConv2d):
 *   - Activations are binarized as a = sign(x + b) with sign(0) = +1 and b a per-channel threshold.
 *   - Packed form: bit 1 means -1, bit 0 means +1. Channels are packed 64 to a uint64 word
 *     (channel c is bit c % 64 of word c / 64); the unused high bits of the last word are 0.
 *   - Packed activations are NHWC words: word (n, h, w, cw) at ((n*H + h)*W + w)*CW + cw.
 *   - Packed weights are [OC][KH][KW][CW] words with the same bit convention; pad bits are 0.
 *   - Spatial padding is +1 (all-zero bits), so a padded tap still contributes its weights:
 *       y = alpha[oc] * (K - 2 * popcount(a XOR w)) + bias[oc],  K = C_in * KH * KW,
 *     where the popcount runs over all taps (padding included). Pad channel bits are 0 in both
 *     operands, so they contribute nothing to the popcount and K counts real channels only.
 *   - Float tensors (input, output, residual) are NCHW float32.
 *
 * Every float operation of the epilogue is done in the same order on every ISA path
 * (and the build uses -ffp-contract=off), so all paths give bit-identical results.
 */
#ifndef BINSR_KERNELS_H
#define BINSR_KERNELS_H

#include <stdint.h>

/* Instruction-set paths, best last. */
enum binsr_isa { BINSR_ISA_GENERIC = 0, BINSR_ISA_AVX2 = 1, BINSR_ISA_AVX512 = 2, BINSR_ISA_COUNT = 3 };

/* Largest supported kernel height/width (row pointers live in a fixed-size array). */
#define BINSR_MAX_KERNEL 15

/* Threshold-and-pack: float NCHW -> packed NHWC words. */
typedef struct {
    const float *x;         /* [N][C][H][W] */
    const float *threshold; /* [C] or NULL (then b = 0) */
    uint64_t *out;          /* [N][H][W][CW] */
    int64_t n, c, h, w, cw; /* cw = ceil(c / 64) */
} binsr_pack_args;

/* Packs row r = n * H + h of args->x into args->out, using a [CW][round_up(W, 16)] scratch row. */
typedef void (*binsr_pack_row_fn)(const binsr_pack_args *args, int64_t r, uint64_t *planar);

/* Binary convolution with a fused epilogue. */
typedef struct {
    const uint64_t *x;        /* packed input  [N][H][W][CW], or NULL when xf is given */
    const float *xf;          /* float input [N][C_in][H][W] packed on the fly (fused mode), or NULL */
    const float *x_threshold; /* [C_in] threshold of xf's binarization, or NULL (b = 0) */
    const uint64_t *weights;  /* packed weights [OC][KH][KW][CW] */
    const float *alpha;       /* [OC] per-output-channel scale */
    const float *bias;        /* [OC] or NULL */
    const float *gamma;       /* RPReLU shift before PReLU [OC], or NULL (no RPReLU) */
    const float *slope;       /* RPReLU negative slope [OC] (set iff gamma is) */
    const float *zeta;        /* RPReLU shift after PReLU [OC] (set iff gamma is) */
    const float *residual;    /* [N][OC][OH][OW] added last, or NULL */
    float *out;               /* [N][OC][OH][OW] float output, or NULL */
    const float *out_threshold; /* [OC] next layer's threshold (set iff out_bits is) */
    uint64_t *out_bits;       /* [N][OH][OW][OCW] packed sign(y + out_threshold), or NULL */
    const uint64_t *zero_row; /* W * CW zero words (stands in for padding rows); set by binsr_conv2d */
    const uint64_t *blocked;  /* weights re-laid for the micro-kernel's channel block; set by binsr_conv2d */
    int stream_out;           /* write `out` with non-temporal stores; set by binsr_conv2d */
    void *row_state;          /* fused mode: per input row packing state; set by binsr_conv2d */
    binsr_pack_args pack;     /* fused mode: packing job; set by binsr_conv2d */
    binsr_pack_row_fn pack_row; /* fused mode: the ISA's row packer; set by binsr_conv2d */
    int64_t n, h, w, cin, cw; /* input geometry, cw = ceil(cin / 64) */
    int64_t oc, ocw;          /* output channels, ocw = ceil(oc / 64) */
    int64_t kh, kw, sh, sw, ph, pw;
    int64_t oh, ow;           /* output size: (h + 2 ph - kh) / sh + 1, likewise ow */
    int32_t k;                /* cin * kh * kw */
} binsr_conv_args;

/* 1 when the running CPU (and OS) supports the path, else 0. */
int binsr_isa_supported(int isa);

/* Both return 0 on success, -1 when scratch memory could not be allocated. */
int binsr_pack_nchw(const binsr_pack_args *args, int threads, int isa);
int binsr_conv2d(binsr_conv_args *args, int threads, int isa);

#endif /* BINSR_KERNELS_H */
