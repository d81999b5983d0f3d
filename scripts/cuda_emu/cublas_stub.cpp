// What ops_gemm.cu links against besides its kernels, for the emulator: no cuBLAS (every call
// fails, so only the CUDA backend's own GEMM kernel runs) and no device pool.
#include "gpu/cuda/cuda_backend.h"
#include <cublas_v2.h>
#include <errno.h>
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
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t, void *, size_t) {
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
cudaError_t cudaSetDevice(int) {
    return cudaSuccess;
}
int zoff_cuda_use_device(int) {
    return 0;
}
size_t zoff_cuda_blas_workspace_bytes(const cuda_device *) {
    return 0;
}
int zoff_cuda_pool_alloc(cuda_device *, size_t, void **) {
    return -ENOMEM;
}
int zoff_cuda_pool_free(cuda_device *, void *) {
    return 0;
}
}
