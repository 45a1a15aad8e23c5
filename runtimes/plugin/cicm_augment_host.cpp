// Host build of the CICMAugment kernel's per-position math (cicm_augment_kernel.cuh), with a C
// ABI for tests through ctypes: the same function the CUDA kernel runs, executed on a CPU.
#include "cicm_augment_kernel.cuh"

namespace {

template <typename IO>
int run(const typename IO::T* features, const typename IO::T* gamma, const float* anchors, const float* sets,
        typename IO::T* out, int32_t* route, int batch, int channels, int height, int width, int num_sets,
        int set_size, int top_k) {
    if (batch < 0 || channels < 1 || height < 0 || width < 0 || num_sets < 1 || set_size < 1 || top_k < 0)
        return CICM_BAD_ARGUMENT;
    if (set_size > CICM_MAX_SET_SIZE) return CICM_SET_TOO_LARGE;
    const int64_t plane = (int64_t)height * width;
    for (int64_t b = 0; b < batch; ++b) {
        for (int64_t p = 0; p < plane; ++p) {
            const int64_t base = b * channels * plane + p;
            const int chosen = cicm::augment_position<IO>(features + base, gamma + b * plane + p, out + base, plane,
                                                          anchors, sets, channels, num_sets, set_size, top_k);
            if (route != nullptr) route[b * plane + p] = chosen;
        }
    }
    return CICM_OK;
}

}  // namespace

extern "C" {

int cicm_augment_host_f32(const float* features, const float* gamma, const float* anchors, const float* sets,
                          float* out, int32_t* route, int batch, int channels, int height, int width, int num_sets,
                          int set_size, int top_k) {
    return run<cicm::F32>(features, gamma, anchors, sets, out, route, batch, channels, height, width, num_sets,
                          set_size, top_k);
}

// float16 I/O as IEEE binary16 bit patterns (numpy float16 arrays).
int cicm_augment_host_f16(const uint16_t* features, const uint16_t* gamma, const float* anchors, const float* sets,
                          uint16_t* out, int32_t* route, int batch, int channels, int height, int width, int num_sets,
                          int set_size, int top_k) {
    return run<cicm::F16Bits>(features, gamma, anchors, sets, out, route, batch, channels, height, width, num_sets,
                              set_size, top_k);
}

uint16_t cicm_float_to_half(float value) { return cicm::float_to_half_bits(value); }
float cicm_half_to_float(uint16_t bits) { return cicm::half_bits_to_float(bits); }

}  // extern "C"
