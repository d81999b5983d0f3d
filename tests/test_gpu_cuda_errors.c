/* The CUDA backend's one error-checking helper, which mostly needs no GPU: "not ready" is
 * -EAGAIN without an error logged; out of memory, no device and sticky errors (a lost context)
 * are told apart; and, where a driver is loaded, a real runtime error left on this thread (by
 * cudaSetDevice of a GPU that does not exist) is consumed by zoff_cuda_check, so that the next
 * launch's cudaGetLastError() would not report it. Built with the CUDA backend only. */
#include "gpu/cuda/cuda_backend.h"
#include "tests/test_util.h"

#include <errno.h>
#include <string.h>

int main(void) {
    zoff_test_init();
    CHECK_EQ_INT(zoff_cuda_check(cudaSuccess, "nothing"), 0);

    /* a real error, left as this thread's last error by the runtime */
    cudaError_t err = cudaSetDevice(1 << 20);
    CHECK(err != cudaSuccess);
    CHECK(cudaPeekAtLastError() == err);
    int rc = zoff_cuda_check(err, "cudaSetDevice(1 << 20)");
    CHECK(rc == ZOFF_ECUDA || rc == ZOFF_ENODEVICE);
    CHECK(strstr(zoff_last_error_detail(), "cudaSetDevice(1 << 20)") != NULL);
    /* Without a driver the runtime's initialization error comes back from every call,
     * cudaPeekAtLastError included: only a machine with a driver shows the consumption. */
    int driver = err != cudaErrorInsufficientDriver && err != cudaErrorNoDevice;
    if (driver) {
        CHECK_EQ_INT(cudaPeekAtLastError(), cudaSuccess); /* consumed where it was reported */
        printf("a failed call leaves no error behind: %s\n", zoff_last_error_detail());
    } else {
        printf("no CUDA driver: the consumption of a failed call's error is not checked\n");
    }

    /* "not ready": an answer, not a failure */
    CHECK_EQ_INT(zoff_cuda_check(cudaErrorNotReady, "cudaEventQuery"), -EAGAIN);
    if (driver) CHECK_EQ_INT(cudaPeekAtLastError(), cudaSuccess);

    CHECK_EQ_INT(zoff_cuda_check(cudaErrorMemoryAllocation, "alloc"), ZOFF_EDEVICE_OOM);
    CHECK_EQ_INT(zoff_cuda_check(cudaErrorNoDevice, "count"), ZOFF_ENODEVICE);
    CHECK_EQ_INT(zoff_cuda_check(cudaErrorInvalidValue, "args"), ZOFF_ECUDA);
    CHECK(strstr(zoff_last_error_detail(), "sticky") == NULL);

    /* sticky: every later CUDA call fails; the detail says so */
    static const cudaError_t sticky[] = {
        cudaErrorIllegalAddress,    cudaErrorLaunchFailure, cudaErrorIllegalInstruction,
        cudaErrorMisalignedAddress, cudaErrorAssert,        cudaErrorECCUncorrectable};
    for (size_t i = 0; i < sizeof sticky / sizeof sticky[0]; i++) {
        CHECK(zoff_cuda_error_is_sticky(sticky[i]));
        CHECK_EQ_INT(zoff_cuda_check(sticky[i], "a kernel"), ZOFF_ECUDA);
        CHECK(strstr(zoff_last_error_detail(), "sticky") != NULL);
    }
    static const cudaError_t not_sticky[] = {cudaErrorNotReady, cudaErrorMemoryAllocation,
                                             cudaErrorInvalidValue, cudaErrorInvalidResourceHandle,
                                             cudaErrorNoDevice};
    for (size_t i = 0; i < sizeof not_sticky / sizeof not_sticky[0]; i++)
        CHECK(!zoff_cuda_error_is_sticky(not_sticky[i]));
    return zoff_test_finish("test_gpu_cuda_errors");
}
