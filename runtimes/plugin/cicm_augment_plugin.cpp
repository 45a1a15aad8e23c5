// CICMAugment TensorRT plugin: see cicm_augment_plugin.h for the op and README.md for its use.
#include "cicm_augment_plugin.h"

#include "cicm_augment_kernel.cuh"  // CICM_MAX_SET_SIZE, CicmStatus, CicmDataType (host-compilable)
#include "cicm_augment_launch.h"    // cicm_augment_launch() as the host compiler sees it

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iterator>
#include <mutex>
#include <sstream>
#include <utility>

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::ILogger;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

namespace {

char const* const kPluginName = CICM_PLUGIN_NAME;
char const* const kPluginVersion = CICM_PLUGIN_VERSION;
char const* const kPluginNamespace = CICM_PLUGIN_NAMESPACE;
char const* const kTopKField = "top_k";  // the ONNX attribute export/plugin_rewrite.py writes

constexpr int32_t kNbInputs = 4;   // features, gamma, anchors, sets
constexpr int32_t kNbOutputs = 2;  // augmented, route

// TensorRT hands a plugin library an ILoggerFinder (setLoggerFinder) instead of a logger, because
// the logger belongs to whichever builder or runtime calls the plugin. Without one (a caller that
// never set it), messages go to stderr rather than being lost.
class LoggerFinderSlot {
public:
    void set(nvinfer1::ILoggerFinder* finder) {
        std::lock_guard<std::mutex> lock(mMutex);
        if (mFinder == nullptr) mFinder = finder;  // the first finder stays, as TensorRT's own plugins do
    }
    ILogger* logger() {
        std::lock_guard<std::mutex> lock(mMutex);
        return mFinder != nullptr ? mFinder->findLogger() : nullptr;
    }

private:
    std::mutex mMutex;
    nvinfer1::ILoggerFinder* mFinder{nullptr};
};

LoggerFinderSlot& loggerSlot() {
    static LoggerFinderSlot slot;
    return slot;
}

void report(ILogger::Severity severity, std::string const& layer, std::string const& message) noexcept {
    try {
        std::string text = std::string(kPluginName) + " plugin";
        if (!layer.empty()) text += " (layer " + layer + ")";
        text += ": " + message;
        if (ILogger* logger = loggerSlot().logger()) {
            logger->log(severity, text.c_str());
        } else {
            std::fprintf(stderr, "%s\n", text.c_str());
        }
    } catch (...) {
        // Out of memory while formatting an error: nothing more useful can be done from noexcept code.
    }
}

void reportError(std::string const& layer, std::string const& message) noexcept {
    report(ILogger::Severity::kERROR, layer, message);
}

char const* typeName(DataType type) {
    switch (type) {
        case DataType::kFLOAT: return "float32";
        case DataType::kHALF: return "float16";
        case DataType::kINT32: return "int32";
        case DataType::kINT64: return "int64";
        case DataType::kBF16: return "bfloat16";
        default: return "another type";
    }
}

char const* statusName(int status) {
    switch (status) {
        case CICM_OK: return "ok";
        case CICM_BAD_ARGUMENT: return "bad argument";
        case CICM_SET_TOO_LARGE: return "set size above CICM_MAX_SET_SIZE";
        case CICM_CUDA_ERROR: return "CUDA launch error";
        default: return "unknown status";
    }
}

std::string dimsText(Dims const& dims) {
    std::ostringstream out;
    out << '[';
    for (int32_t i = 0; i < dims.nbDims; ++i) out << (i ? ", " : "") << dims.d[i];
    out << ']';
    return out.str();
}

bool known(int64_t extent) { return extent >= 0; }  // TensorRT writes -1 for a dimension fixed only at run time

// "" when the four input shapes fit one CICMAugment call, else what is wrong, quoting every shape.
// Unknown (-1) extents pass; `setSizeBound` is K or, while K is unknown, the largest K possible.
std::string checkInputShapes(Dims const& features, Dims const& gamma, Dims const& anchors, Dims const& sets,
                             int64_t setSizeBound) {
    std::string problem;
    auto disagree = [](int64_t a, int64_t b) { return known(a) && known(b) && a != b; };
    if (features.nbDims != 4 || gamma.nbDims != 4 || anchors.nbDims != 2 || sets.nbDims != 3) {
        problem = "expected ranks features 4 [B, C, H, W], gamma 4 [B, 1, H, W], anchors 2 [L, C], sets 3 [L, K, C]";
    } else if (disagree(gamma.d[1], 1)) {
        problem = "gamma must have one channel";
    } else if (disagree(gamma.d[0], features.d[0]) || disagree(gamma.d[2], features.d[2]) ||
               disagree(gamma.d[3], features.d[3])) {
        problem = "gamma's batch, height and width must equal those of features";
    } else if (disagree(features.d[1], anchors.d[1]) || disagree(features.d[1], sets.d[2]) ||
               disagree(anchors.d[1], sets.d[2])) {
        problem = "the channel count C must agree: features dim 1, anchors dim 1 and sets dim 2";
    } else if (disagree(anchors.d[0], sets.d[0])) {
        problem = "the number of sets L must agree: anchors dim 0 and sets dim 0";
    } else if (known(setSizeBound) && setSizeBound > CICM_MAX_SET_SIZE) {
        problem = "set size K = " + std::to_string(setSizeBound) + " exceeds the kernel's limit of " +
                  std::to_string(CICM_MAX_SET_SIZE) + " (CICM_MAX_SET_SIZE)";
    } else if (sets.d[1] == 0 || anchors.d[0] == 0 || features.d[1] == 0) {
        problem = "C, L and K must be at least 1";
    }
    if (problem.empty()) return problem;
    return problem + "; got features " + dimsText(features) + ", gamma " + dimsText(gamma) + ", anchors " +
           dimsText(anchors) + ", sets " + dimsText(sets);
}

// Same type, format and dims: what decides whether an already checked input needs checking again.
bool sameInputs(PluginTensorDesc const* a, PluginTensorDesc const* b) {
    for (int32_t i = 0; i < kNbInputs; ++i) {
        if (a[i].type != b[i].type || a[i].format != b[i].format || a[i].dims.nbDims != b[i].dims.nbDims) return false;
        for (int32_t j = 0; j < a[i].dims.nbDims; ++j)
            if (a[i].dims.d[j] != b[i].dims.d[j]) return false;
    }
    return true;
}

// Run-time check of concrete shapes: the build-time checks, plus every extent fitting the kernel's int.
std::string checkRuntimeShapes(PluginTensorDesc const* in) {
    std::string problem = checkInputShapes(in[0].dims, in[1].dims, in[2].dims, in[3].dims, in[3].dims.d[1]);
    if (!problem.empty()) return problem;
    for (int32_t i = 0; i < kNbInputs; ++i) {
        for (int32_t j = 0; j < in[i].dims.nbDims; ++j) {
            if (in[i].dims.d[j] < 0 || in[i].dims.d[j] > INT_MAX)
                return "input " + std::to_string(i) + " has extent " + std::to_string(in[i].dims.d[j]) +
                       " outside the kernel's int range";
        }
    }
    if (in[0].type != DataType::kFLOAT && in[0].type != DataType::kHALF)
        return std::string("features must be float32 or float16, got ") + typeName(in[0].type);
    return "";
}

}  // namespace

namespace cicm {

// ---------------------------------------------------------------- plugin: core ----

CICMAugmentPlugin::CICMAugmentPlugin(int32_t topK, std::string layerName)
    : mTopK(topK), mLayerName(std::move(layerName)) {}

CICMAugmentPlugin::CICMAugmentPlugin(CICMAugmentPlugin const& other)
    : nvinfer1::IPluginV3(other),
      nvinfer1::IPluginV3OneCore(other),
      nvinfer1::IPluginV3OneBuild(other),
      nvinfer1::IPluginV3OneRuntime(other),
      mTopK(other.mTopK),
      mLayerName(other.mLayerName),
      mHaveChecked(other.mHaveChecked) {
    std::copy(std::begin(other.mChecked), std::end(other.mChecked), std::begin(mChecked));
}

nvinfer1::IPluginCapability* CICMAugmentPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
    switch (type) {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* CICMAugmentPlugin::clone() noexcept {
    try {
        return new CICMAugmentPlugin(*this);
    } catch (std::exception const& e) {
        reportError(mLayerName, std::string("clone failed: ") + e.what());
    }
    return nullptr;
}

char const* CICMAugmentPlugin::getPluginName() const noexcept { return kPluginName; }
char const* CICMAugmentPlugin::getPluginVersion() const noexcept { return kPluginVersion; }
char const* CICMAugmentPlugin::getPluginNamespace() const noexcept { return kPluginNamespace; }

// ---------------------------------------------------------------- plugin: build ----

int32_t CICMAugmentPlugin::getNbOutputs() const noexcept { return kNbOutputs; }

int32_t CICMAugmentPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                                              int32_t nbInputs) const noexcept {
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
        reportError(mLayerName, "expected 4 inputs (features, gamma, anchors, sets) and 2 outputs, got " +
                                    std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
        return -1;
    }
    // A strongly typed network fixes these types from the ONNX graph; say plainly which one is wrong
    // rather than leaving TensorRT to report that no format combination is supported.
    DataType const io = inputTypes[0];
    if ((io != DataType::kFLOAT && io != DataType::kHALF) || inputTypes[1] != io ||
        inputTypes[2] != DataType::kFLOAT || inputTypes[3] != DataType::kFLOAT) {
        reportError(mLayerName, std::string("supported types are features/gamma both float32 or both float16, "
                                            "anchors and sets float32; got features ") +
                                    typeName(inputTypes[0]) + ", gamma " + typeName(inputTypes[1]) + ", anchors " +
                                    typeName(inputTypes[2]) + ", sets " + typeName(inputTypes[3]));
        return -1;
    }
    outputTypes[0] = io;               // augmented: same type as features
    outputTypes[1] = DataType::kINT32;  // route
    return 0;
}

int32_t CICMAugmentPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                                           nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/,
                                           nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                                           nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept {
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || inputs[0].nbDims != 4) {
        reportError(mLayerName, "expected features of rank 4 [B, C, H, W], 4 inputs and 2 outputs");
        return -1;
    }
    outputs[0] = inputs[0];  // augmented [B, C, H, W]
    outputs[1].nbDims = 3;   // route [B, H, W]
    outputs[1].d[0] = inputs[0].d[0];
    outputs[1].d[1] = inputs[0].d[2];
    outputs[1].d[2] = inputs[0].d[3];
    return 0;
}

// Positions: 0 features, 1 gamma, 2 anchors, 3 sets, 4 augmented, 5 route. Only inOut[0..pos] may be read.
bool CICMAugmentPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                                  int32_t nbOutputs) noexcept {
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 || pos >= kNbInputs + kNbOutputs) return false;
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR) return false;  // the kernel indexes plain NCHW
    switch (pos) {
        case 0: return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
        case 1:
        case 4: return desc.type == inOut[0].desc.type;  // gamma and augmented follow features
        case 2:
        case 3: return desc.type == DataType::kFLOAT;  // the memory stays fp32 in every bundle
        default: return desc.type == DataType::kINT32;  // route
    }
}

int32_t CICMAugmentPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                           DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept {
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
        reportError(mLayerName, "expected 4 inputs and 2 outputs");
        return -1;
    }
    try {
        // anchors and sets are constants, so K is normally known here; else its profile maximum bounds it.
        Dims const& sets = in[3].desc.dims;
        int64_t const setSizeBound = sets.nbDims == 3 && known(sets.d[1]) ? sets.d[1]
                                     : in[3].max.nbDims == 3              ? in[3].max.d[1]
                                                                          : -1;
        std::string const problem =
            checkInputShapes(in[0].desc.dims, in[1].desc.dims, in[2].desc.dims, sets, setSizeBound);
        if (!problem.empty()) {
            reportError(mLayerName, problem);
            return -1;
        }
        return 0;
    } catch (std::exception const& e) {
        reportError(mLayerName, std::string("configurePlugin failed: ") + e.what());
    }
    return -1;
}

size_t CICMAugmentPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
                                           DynamicPluginTensorDesc const* /*outputs*/,
                                           int32_t /*nbOutputs*/) const noexcept {
    return 0;  // one fused pass; the per-position softmax weights live in registers/local memory
}

// ---------------------------------------------------------------- plugin: runtime ----

int32_t CICMAugmentPlugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs,
                                         PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept {
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
        reportError(mLayerName, "expected 4 inputs and 2 outputs");
        return -1;
    }
    try {
        mHaveChecked = false;
        std::string const problem = checkRuntimeShapes(in);
        if (!problem.empty()) {
            reportError(mLayerName, problem);
            return -1;
        }
        std::copy(in, in + kNbInputs, std::begin(mChecked));
        mHaveChecked = true;
        return 0;
    } catch (std::exception const& e) {
        reportError(mLayerName, std::string("onShapeChange failed: ") + e.what());
    }
    return -1;
}

int32_t CICMAugmentPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
                                   void const* const* inputs, void* const* outputs, void* /*workspace*/,
                                   cudaStream_t stream) noexcept {
    try {
        // The descriptors are authoritative for this call. TensorRT calls onShapeChange before new
        // shapes reach enqueue, so the (string-building) validation normally runs once per shape.
        if (!mHaveChecked || !sameInputs(inputDesc, mChecked)) {
            std::string const problem = checkRuntimeShapes(inputDesc);
            if (!problem.empty()) {
                reportError(mLayerName, problem);
                return CICM_BAD_ARGUMENT;
            }
            std::copy(inputDesc, inputDesc + kNbInputs, std::begin(mChecked));
            mHaveChecked = true;
        }
        Dims const& features = inputDesc[0].dims;  // [B, C, H, W]
        int const dtype = inputDesc[0].type == DataType::kHALF ? CICM_FLOAT16 : CICM_FLOAT32;
        int const status = cicm_augment_launch(
            inputs[0], inputs[1], static_cast<float const*>(inputs[2]), static_cast<float const*>(inputs[3]),
            outputs[0], static_cast<int32_t*>(outputs[1]), static_cast<int>(features.d[0]),
            static_cast<int>(features.d[1]), static_cast<int>(features.d[2]), static_cast<int>(features.d[3]),
            static_cast<int>(inputDesc[2].dims.d[0]), static_cast<int>(inputDesc[3].dims.d[1]), mTopK, dtype, stream);
        if (status != CICM_OK) {
            reportError(mLayerName, std::string("cicm_augment_launch failed: ") + statusName(status) + " (" +
                                        std::to_string(status) + ")");
        }
        return status;
    } catch (std::exception const& e) {
        reportError(mLayerName, std::string("enqueue failed: ") + e.what());
    }
    return -1;
}

// No per-context resources (no workspace, no handles): a plain copy serves every execution context.
nvinfer1::IPluginV3* CICMAugmentPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept {
    return clone();
}

nvinfer1::PluginFieldCollection const* CICMAugmentPlugin::getFieldsToSerialize() noexcept {
    // Rebuilt on each call: the fields point into this object, which TensorRT may have copied.
    mSerialFields.clear();
    mSerialFields.emplace_back(kTopKField, &mTopK, PluginFieldType::kINT32, 1);
    mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
    mSerialCollection.fields = mSerialFields.data();
    return &mSerialCollection;
}

// ---------------------------------------------------------------- creator ----

CICMAugmentPluginCreator::CICMAugmentPluginCreator() {
    // The ONNX parser passes a node's attributes only for the fields listed here (plugin_version
    // and plugin_namespace select the creator and are not fields); ONNX INT attributes arrive as kINT32.
    mFields.emplace_back(kTopKField, nullptr, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

char const* CICMAugmentPluginCreator::getPluginName() const noexcept { return kPluginName; }
char const* CICMAugmentPluginCreator::getPluginVersion() const noexcept { return kPluginVersion; }
char const* CICMAugmentPluginCreator::getPluginNamespace() const noexcept { return kPluginNamespace; }
PluginFieldCollection const* CICMAugmentPluginCreator::getFieldNames() noexcept { return &mFieldCollection; }

nvinfer1::IPluginV3* CICMAugmentPluginCreator::createPlugin(char const* name, PluginFieldCollection const* fc,
                                                           nvinfer1::TensorRTPhase /*phase*/) noexcept {
    // Both phases build the same object: at build time the fields are the ONNX node's attributes,
    // at engine load they are what getFieldsToSerialize wrote; in both cases only top_k.
    std::string const layer = name != nullptr ? name : "";
    try {
        int64_t topK = 0;  // default: the softmax runs over all K set vectors
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
            PluginField const& field = fc->fields[i];
            if (field.name == nullptr || std::strcmp(field.name, kTopKField) != 0) {
                report(ILogger::Severity::kWARNING, layer,
                       std::string("ignoring unknown field '") + (field.name ? field.name : "(null)") + "'");
                continue;
            }
            if (field.data == nullptr || field.length < 1) {
                reportError(layer, "field top_k has no value");
                return nullptr;
            }
            if (field.type == PluginFieldType::kINT32) {
                topK = *static_cast<int32_t const*>(field.data);
            } else if (field.type == PluginFieldType::kINT64) {  // Python-side creators may pass int64
                topK = *static_cast<int64_t const*>(field.data);
            } else {
                reportError(layer, "field top_k must be an int32 (or int64) value, got PluginFieldType " +
                                       std::to_string(static_cast<int32_t>(field.type)));
                return nullptr;
            }
        }
        if (topK < 0 || topK > INT_MAX) {
            reportError(layer, "top_k must be 0 (all set vectors) or a positive count, got " + std::to_string(topK));
            return nullptr;
        }
        return new CICMAugmentPlugin(static_cast<int32_t>(topK), layer);
    } catch (std::exception const& e) {
        reportError(layer, std::string("createPlugin failed: ") + e.what());
    }
    return nullptr;
}

}  // namespace cicm

// ---------------------------------------------------------------- library entry points ----
//
// Registration through getCreators, not REGISTER_TENSORRT_PLUGIN: TensorRT 10/11's
// IPluginRegistry::loadLibrary (Python registry.load_library, trtexec --dynamicPlugins,
// IBuilderConfig::setPluginsToSerialize) dlopens the library and asks getCreators for its creators.
// REGISTER_TENSORRT_PLUGIN instead registers a creator from a static constructor when the library
// is dlopened, which needs getPluginRegistry() from libnvinfer at load time, and then makes
// loadLibrary fail, since loadLibrary refuses a library whose plugins are already registered.
// So one mechanism only; its cost: a plain dlopen (trtexec --staticPlugins, ctypes.CDLL) registers nothing.

extern "C" CICM_PLUGIN_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static cicm::CICMAugmentPluginCreator creator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}

extern "C" CICM_PLUGIN_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    if (finder != nullptr) loggerSlot().set(finder);
}
