// Compile-time check, no code: the kernel's own declaration of cicm_augment_launch (nvcc only, in
// cicm_augment_kernel.cuh) and the host compiler's copy (cicm_augment_launch.h, used by the
// TensorRT plugin) must be the same C function. Two extern "C" declarations of one name with
// different parameters are a compile error, so a drift fails the plugin build here instead of
// corrupting arguments at run time.
#include "cicm_augment_kernel.cuh"
#include "cicm_augment_launch.h"
