// The emulator has no cuBLAS: every call fails, so only the CUDA backend's own GEMM kernel runs.
#include <cublas_v2.h>
extern "C" {
cublasStatus_t cublasCreate_v2(cublasHandle_t *) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t, cudaStream_t) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
}
const char *cublasGetStatusString(cublasStatus_t) {
    return "emulator: no cuBLAS";
}
cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const void *, const void *, cudaDataType, int, const void *,
                            cudaDataType, int, const void *, void *, cudaDataType, int,
                            cublasComputeType_t, cublasGemmAlgo_t) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
}
}
extern "C" cudaError_t cudaSetDevice(int) {
    return cudaSuccess;
}
