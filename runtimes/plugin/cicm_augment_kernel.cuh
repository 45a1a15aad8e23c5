// CICMAugment: per-position math and the C ABI of the CUDA kernel. No TensorRT types.
//
//   features [B, C, H, W] (float32 or float16), gamma [B, 1, H, W] (same type): the context weight w
//   anchors  [L, C] float32, sets [L, K, C] float32
//   augmented[b, :, y, x] = (1 - w) F + w * sum_k softmax_k(F . S[l, k]) S[l, k],  l = argmax_l F . A[l]
//   route    [B, H, W] int32 (optional)
//
// Scores, argmax and softmax run in FP32 whatever the I/O type. Ties in the argmax go to the
// first set, as torch.argmax. top_k > 0 keeps the set vectors scoring at least the k-th largest
// score (ties kept), as cicm_deploy.memory.scope_mask.
//
// The per-position function is __host__ __device__, so the host library (cicm_augment_host.cpp)
// runs exactly this code on a CPU for tests against the numpy reference op and PyTorch.
#pragma once

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define CICM_HD __host__ __device__
#else
#define CICM_HD
#endif

// Read-only loads go through the texture cache on the device, plainly on the host.
#if defined(__CUDA_ARCH__)
#define CICM_LDG(p) __ldg(p)
#else
#define CICM_LDG(p) (*(p))
#endif

#define CICM_MAX_SET_SIZE 256  // K limit: the per-position softmax weights live in registers/local memory

namespace cicm {

// Element access for the two I/O types. The host build stores float16 as IEEE binary16 bits.
struct F32 {
    using T = float;
    static CICM_HD inline float load(const T* p) { return *p; }
    static CICM_HD inline void store(T* p, float v) { *p = v; }
};

CICM_HD inline float half_bits_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign;
        } else {  // subnormal: normalize
            exponent = 1;
            while ((mantissa & 0x400u) == 0) { mantissa <<= 1; --exponent; }
            mantissa &= 0x3ffu;
            bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
        }
    } else if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    }
    union { uint32_t u; float f; } out;
    out.u = bits;
    return out.f;
}

CICM_HD inline uint16_t float_to_half_bits(float value) {  // round to nearest even
    union { float f; uint32_t u; } in;
    in.f = value;
    const uint32_t x = in.u;
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) return sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);  // inf / nan
    if (abs >= 0x477ff000u) return sign | 0x7c00u;  // overflow to inf
    if (abs < 0x38800000u) {  // subnormal or zero
        if (abs < 0x33000000u) return sign;
        const uint32_t shift = 113u - (abs >> 23);
        const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
        uint32_t half = mantissa >> (shift + 13);
        const uint32_t rest = mantissa & ((1u << (shift + 13)) - 1u);
        const uint32_t halfway = 1u << (shift + 12);
        if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
        return sign | (uint16_t)half;
    }
    uint32_t half = ((abs - 0x38000000u) >> 13);
    const uint32_t rest = abs & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
    return sign | (uint16_t)half;
}

#ifdef __CUDACC__
struct F16 {
    using T = __half;
    static __device__ inline float load(const T* p) { return __half2float(*p); }
    static __device__ inline void store(T* p, float v) { *p = __float2half_rn(v); }
};
#endif

struct F16Bits {  // host build
    using T = uint16_t;
    static inline float load(const T* p) { return half_bits_to_float(*p); }
    static inline void store(T* p, float v) { *p = float_to_half_bits(v); }
};

// One position: the feature vector starts at `f` with `stride` elements between channels
// (H * W in NCHW). Writes the augmented vector at `out` (same layout) and returns the route.
template <typename IO>
CICM_HD inline int augment_position(const typename IO::T* f, const typename IO::T* gamma, typename IO::T* out,
                                    int64_t stride, const float* anchors, const float* sets, int C, int L, int K,
                                    int top_k) {
    // 1. route: argmax over anchors (first maximum wins)
    int route = 0;
    float best = 0.0f;
    for (int l = 0; l < L; ++l) {
        const float* a = anchors + (int64_t)l * C;
        float score = 0.0f;
        for (int c = 0; c < C; ++c) score += IO::load(f + c * stride) * CICM_LDG(a + c);
        if (l == 0 || score > best) { best = score; route = l; }
    }
    // 2. logits of the routed set's vectors, softmax in FP32
    const float* set = sets + (int64_t)route * K * C;
    float weight[CICM_MAX_SET_SIZE];
    float top = 0.0f;
    for (int k = 0; k < K; ++k) {
        const float* s = set + (int64_t)k * C;
        float logit = 0.0f;
        for (int c = 0; c < C; ++c) logit += IO::load(f + c * stride) * CICM_LDG(s + c);
        weight[k] = logit;
        if (k == 0 || logit > top) top = logit;
    }
    float threshold = -3.402823466e38f;
    if (top_k > 0 && top_k < K) {  // the top_k-th largest logit: count how many are strictly larger
        for (int k = 0; k < K; ++k) {
            int larger = 0;
            for (int j = 0; j < K; ++j) larger += weight[j] > weight[k];
            if (larger < top_k && (threshold == -3.402823466e38f || weight[k] < threshold)) threshold = weight[k];
        }
    }
    float total = 0.0f;
    for (int k = 0; k < K; ++k) {
        const float e = weight[k] >= threshold ? expf(weight[k] - top) : 0.0f;
        weight[k] = e;
        total += e;
    }
    const float inv = 1.0f / total;
    // 3. weighted sum and mix with the context weight
    const float w = IO::load(gamma);
    for (int c = 0; c < C; ++c) {
        float ctx = 0.0f;
        for (int k = 0; k < K; ++k) ctx += weight[k] * CICM_LDG(set + (int64_t)k * C + c);
        const float value = (1.0f - w) * IO::load(f + c * stride) + w * (ctx * inv);
        IO::store(out + c * stride, value);
    }
    return route;
}

}  // namespace cicm

#ifdef __cplusplus
extern "C" {
#endif

enum CicmDataType { CICM_FLOAT32 = 0, CICM_FLOAT16 = 1 };
enum CicmStatus { CICM_OK = 0, CICM_BAD_ARGUMENT = 1, CICM_SET_TOO_LARGE = 2, CICM_CUDA_ERROR = 3 };

#ifdef __CUDACC__
// Launch on `stream` (a cudaStream_t). features/gamma/out in `dtype`; route may be null.
int cicm_augment_launch(const void* features, const void* gamma, const float* anchors, const float* sets, void* out,
                        int32_t* route, int batch, int channels, int height, int width, int num_sets, int set_size,
                        int top_k, int dtype, cudaStream_t stream);
#endif

#ifdef __cplusplus
}
#endif
