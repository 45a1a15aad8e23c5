// CICMAugment CUDA kernel: one thread per position, one fused pass (scores, argmax, softmax,
// weighted sum, mix). Adjacent threads handle adjacent positions, so every channel read
// (features[b, c, p]) is coalesced; anchors and sets are read through the read-only cache.
#include <cuda_runtime.h>

#include "cicm_augment_kernel.cuh"

namespace {

template <typename IO>
__global__ void cicm_augment_kernel(const typename IO::T* __restrict__ features, const typename IO::T* __restrict__ gamma,
                                    const float* __restrict__ anchors, const float* __restrict__ sets,
                                    typename IO::T* __restrict__ out, int32_t* __restrict__ route, int batch,
                                    int channels, int64_t plane, int num_sets, int set_size, int top_k) {
    const int64_t index = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;  // over batch * plane
    if (index >= (int64_t)batch * plane) return;
    const int64_t b = index / plane;
    const int64_t p = index - b * plane;
    const int64_t base = b * channels * plane + p;
    const int chosen = cicm::augment_position<IO>(features + base, gamma + b * plane + p, out + base, plane, anchors,
                                                   sets, channels, num_sets, set_size, top_k);
    if (route != nullptr) route[index] = chosen;
}

}  // namespace

// Exported even though the library builds with hidden visibility: the Python plugin
// (runtimes/tensorrt_plugin.py) calls it through ctypes from the plugin library.
#if defined(_WIN32)
#define CICM_KERNEL_API __declspec(dllexport)
#else
#define CICM_KERNEL_API __attribute__((visibility("default")))
#endif

extern "C" CICM_KERNEL_API int cicm_augment_launch(const void* features, const void* gamma, const float* anchors, const float* sets,
                                   void* out, int32_t* route, int batch, int channels, int height, int width,
                                   int num_sets, int set_size, int top_k, int dtype, cudaStream_t stream) {
    if (batch < 0 || channels < 1 || height < 0 || width < 0 || num_sets < 1 || set_size < 1 || top_k < 0)
        return CICM_BAD_ARGUMENT;
    if (set_size > CICM_MAX_SET_SIZE) return CICM_SET_TOO_LARGE;
    const int64_t plane = (int64_t)height * width;
    const int64_t positions = (int64_t)batch * plane;
    if (positions == 0) return CICM_OK;
    const int threads = 128;
    const unsigned blocks = (unsigned)((positions + threads - 1) / threads);
    if (dtype == CICM_FLOAT32) {
        cicm_augment_kernel<cicm::F32><<<blocks, threads, 0, stream>>>(
            static_cast<const float*>(features), static_cast<const float*>(gamma), anchors, sets,
            static_cast<float*>(out), route, batch, channels, plane, num_sets, set_size, top_k);
    } else if (dtype == CICM_FLOAT16) {
        cicm_augment_kernel<cicm::F16><<<blocks, threads, 0, stream>>>(
            static_cast<const __half*>(features), static_cast<const __half*>(gamma), anchors, sets,
            static_cast<__half*>(out), route, batch, channels, plane, num_sets, set_size, top_k);
    } else {
        return CICM_BAD_ARGUMENT;
    }
    return cudaGetLastError() == cudaSuccess ? CICM_OK : CICM_CUDA_ERROR;
}
