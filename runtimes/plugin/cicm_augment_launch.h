// The CUDA kernel's C ABI as the host compiler sees it.
//
// cicm_augment_kernel.cuh declares cicm_augment_launch() only under nvcc (__CUDACC__), because the
// rest of that header is also compiled by plain C++ compilers (the host library). The TensorRT
// plugin is a .cpp compiled by the host compiler, so it takes the declaration from here, with
// cudaStream_t from the CUDA runtime headers. cicm_augment_abi_check.cu includes both headers in
// one nvcc translation unit: if the two declarations ever differ, that file fails to compile (nvcc:
// 'more than one instance of overloaded function "cicm_augment_launch" has "C" linkage'), so the
// copy cannot drift silently.
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Launch on `stream`. features/gamma/out in `dtype` (CICM_FLOAT32 or CICM_FLOAT16); route may be
// null. Returns a CicmStatus (cicm_augment_kernel.cuh).
int cicm_augment_launch(const void* features, const void* gamma, const float* anchors, const float* sets, void* out,
                        int32_t* route, int batch, int channels, int height, int width, int num_sets, int set_size,
                        int top_k, int dtype, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
