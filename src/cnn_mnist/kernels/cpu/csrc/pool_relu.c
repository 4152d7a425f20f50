/* relu(max_pool2d(x, kernel 2, stride 2)) over channels-last (NHWC) tensors: the forward and the
 * backward are one pass over memory each, where PyTorch's CPU kernels take a pass for the pool,
 * a zero-fill and a scalar scatter for its backward, and a pass each way for the ReLU.
 *
 * The results are bit-identical to PyTorch's: in each 2x2 window the first maximum in row-major
 * order wins, a NaN beats any number (the last NaN wins), and the ReLU passes no gradient where
 * the maximum is <= 0. The forward records, per output element, which corner won (0-3) or DEAD;
 * the backward copies each incoming gradient to that corner and writes zeros to the other three,
 * as bit patterns, so it is the same code for every 16- and 32-bit float type.
 *
 * Compiled by cnn_mnist/native.py with -O3 -march=native -fopenmp; every inner loop runs over the
 * contiguous channels and vectorizes.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define DEAD 4 /* the ReLU zeroed this window's maximum: no gradient */

static inline float bf16_value(uint16_t bits) {
    uint32_t wide = (uint32_t)bits << 16; /* bfloat16 is the high half of a float32 */
    float value;
    memcpy(&value, &wide, sizeof value);
    return value;
}

static inline float f32_value(uint32_t bits) {
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* x: (n, h, w, c); y and corner: (n, h/2, w/2, c); corner may be NULL (no gradient wanted). */
#define DEFINE_FORWARD(NAME, T, VALUE)                                                           \
    void NAME(const T *x, T *y, uint8_t *corner, int64_t n, int64_t h, int64_t w, int64_t c,     \
              int threads) {                                                                     \
        const int64_t out_h = h / 2, out_w = w / 2, rows = n * out_h;                            \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")                        \
        for (int64_t row = 0; row < rows; row++) {                                               \
            const int64_t image = row / out_h, i = row % out_h;                                  \
            for (int64_t j = 0; j < out_w; j++) {                                                \
                const T *restrict p0 = x + ((image * h + 2 * i) * w + 2 * j) * c;                \
                const T *restrict p1 = p0 + c, *restrict p2 = p0 + w * c, *restrict p3 = p2 + c; \
                T *restrict out = y + (row * out_w + j) * c;                                     \
                uint8_t *restrict won = corner ? corner + (row * out_w + j) * c : NULL;          \
                _Pragma("omp simd")                                                              \
                for (int64_t k = 0; k < c; k++) {                                                \
                    float best = VALUE(p0[k]), v;                                                \
                    T bits = p0[k];                                                              \
                    uint8_t which = 0;                                                           \
                    v = VALUE(p1[k]);                                                            \
                    if (v > best || isnan(v)) { best = v; bits = p1[k]; which = 1; }             \
                    v = VALUE(p2[k]);                                                            \
                    if (v > best || isnan(v)) { best = v; bits = p2[k]; which = 2; }             \
                    v = VALUE(p3[k]);                                                            \
                    if (v > best || isnan(v)) { best = v; bits = p3[k]; which = 3; }             \
                    const int live = best > 0 || isnan(best);                                    \
                    out[k] = live ? bits : (T)0;                                                 \
                    if (won) won[k] = live ? which : DEAD;                                       \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }

/* grad_y and corner: (n, h/2, w/2, c); grad_x: (n, h, w, c), every element written. */
#define DEFINE_BACKWARD(NAME, T)                                                                 \
    void NAME(const T *grad_y, const uint8_t *corner, T *grad_x, int64_t n, int64_t h, int64_t w, \
              int64_t c, int threads) {                                                          \
        const int64_t out_h = h / 2, out_w = w / 2, rows = n * out_h;                            \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")                        \
        for (int64_t row = 0; row < rows; row++) {                                               \
            const int64_t image = row / out_h, i = row % out_h;                                  \
            for (int64_t j = 0; j < out_w; j++) {                                                \
                T *restrict q0 = grad_x + ((image * h + 2 * i) * w + 2 * j) * c;                 \
                T *restrict q1 = q0 + c, *restrict q2 = q0 + w * c, *restrict q3 = q2 + c;       \
                const T *restrict g = grad_y + (row * out_w + j) * c;                            \
                const uint8_t *restrict won = corner + (row * out_w + j) * c;                    \
                _Pragma("omp simd")                                                              \
                for (int64_t k = 0; k < c; k++) {                                                \
                    const T v = g[k];                                                            \
                    const unsigned which = won[k];                                               \
                    /* all-ones or all-zeros masks instead of branches, so the loop vectorizes */ \
                    q0[k] = v & (T) - (T)(which == 0);                                           \
                    q1[k] = v & (T) - (T)(which == 1);                                           \
                    q2[k] = v & (T) - (T)(which == 2);                                           \
                    q3[k] = v & (T) - (T)(which == 3);                                           \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }

DEFINE_FORWARD(pool_relu_forward_bf16, uint16_t, bf16_value)
DEFINE_FORWARD(pool_relu_forward_f32, uint32_t, f32_value)
DEFINE_BACKWARD(pool_relu_backward_16bit, uint16_t)
DEFINE_BACKWARD(pool_relu_backward_32bit, uint32_t)
