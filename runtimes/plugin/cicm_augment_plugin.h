// CICMAugment as a TensorRT IPluginV3 plugin (core + build + runtime capabilities) and its creator.
//
// The math lives in the CUDA kernel (cicm_augment_kernel.cu, no TensorRT types); this class only
// describes the op to TensorRT (types, shapes, formats), checks shapes and launches the kernel.
// The op's name, version and namespace come from the one definition in cicm_deploy/custom_op.py,
// which CMake reads and passes as CICM_PLUGIN_NAME / CICM_PLUGIN_VERSION / CICM_PLUGIN_NAMESPACE.
//
//   inputs : features [B, C, H, W] fp32|fp16, gamma [B, 1, H, W] (type of features),
//            anchors [L, C] fp32, sets [L, K, C] fp32 (K <= CICM_MAX_SET_SIZE)
//   outputs: augmented [B, C, H, W] (type of features), route [B, H, W] int32
//   field  : top_k (int32, 0 = softmax over all K set vectors)
#pragma once

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <cstdint>
#include <string>
#include <vector>

// TensorRT 10.x vs 11.x, as read in the headers of both (NVIDIA/TensorRT tags v10.3.0, v10.16, v11.1):
// - IPluginV3 / IPluginV3OneCore / OneBuild / OneRuntime / IPluginCreatorV3One and the method
//   signatures this plugin overrides are identical in 10.3, 10.16 and 11.1. They first appear in
//   10.0, so anything older is refused below.
// - Where they are declared moved: 10.0-10.5 keep IPluginV3 and IPluginCapability in
//   NvInferRuntime.h; 10.6+ and 11.x move them (and PluginField, TensorRTPhase, ...) to
//   NvInferPluginBase.h; TensorFormat moved from NvInferRuntimeBase.h (10.3) to NvInferRuntime.h
//   (10.16, 11.x). Including NvInferRuntime.h, as here, reaches all of them in every version.
// - ILoggerFinder: a plain abstract class in 10.x; in 11.x a versioned interface
//   (IVersionedInterface, protected destructor). We only call findLogger(), which is the same.
// - TENSORRTAPI (the export macro of TensorRT's headers) is empty unless TENSORRT_BUILD_LIB is
//   defined, in 10.x and 11.x alike, so the library's entry points use their own macro below.
// - 11.x networks are always strongly typed (NetworkDefinitionCreationFlag::kSTRONGLY_TYPED is
//   deprecated because it is the only mode): the plugin's I/O types come from the ONNX graph.
//   supportsFormatCombination below accepts fp32 and fp16 either way.
#if !defined(NV_TENSORRT_MAJOR) || NV_TENSORRT_MAJOR < 10
#error "the CICMAugment plugin needs TensorRT 10 or newer (IPluginV3); NvInferVersion.h reports an older version"
#endif

#if !defined(CICM_PLUGIN_NAME) || !defined(CICM_PLUGIN_VERSION) || !defined(CICM_PLUGIN_NAMESPACE)
#error "CICM_PLUGIN_NAME/VERSION/NAMESPACE are not defined: build with runtimes/plugin/CMakeLists.txt, which reads them from cicm_deploy/custom_op.py"
#endif

// The library's entry points must be visible even though the library builds with hidden visibility.
#if defined(_WIN32)
#define CICM_PLUGIN_API __declspec(dllexport)
#else
#define CICM_PLUGIN_API __attribute__((visibility("default")))
#endif

namespace cicm {

class CICMAugmentPlugin : public nvinfer1::IPluginV3,
                          public nvinfer1::IPluginV3OneCore,
                          public nvinfer1::IPluginV3OneBuild,
                          public nvinfer1::IPluginV3OneRuntime {
public:
    CICMAugmentPlugin(int32_t topK, std::string layerName);
    CICMAugmentPlugin(CICMAugmentPlugin const& other);  // copies the state, not the serialization buffers
    CICMAugmentPlugin& operator=(CICMAugmentPlugin const&) = delete;
    ~CICMAugmentPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                               nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
                            int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                            nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                            nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
                          int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                    void const* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    int32_t mTopK{0};
    std::string mLayerName;  // the ONNX node's name, quoted in error messages
    // The input descriptors onShapeChange last accepted: enqueue re-validates only inputs that differ.
    nvinfer1::PluginTensorDesc mChecked[4]{};
    bool mHaveChecked{false};
    std::vector<nvinfer1::PluginField> mSerialFields;  // storage behind getFieldsToSerialize()
    nvinfer1::PluginFieldCollection mSerialCollection{};
};

class CICMAugmentPluginCreator : public nvinfer1::IPluginCreatorV3One {
public:
    CICMAugmentPluginCreator();
    ~CICMAugmentPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                      nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

}  // namespace cicm

// Entry points TensorRT looks up in a plugin library loaded with IPluginRegistry::loadLibrary
// (Python: registry.load_library; trtexec: --dynamicPlugins).
extern "C" {
CICM_PLUGIN_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
CICM_PLUGIN_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder);
}
