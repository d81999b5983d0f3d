/* `zoff info`: how this zoff was built. */
#include "cli/cli.h"
#include "zoff_build_config.h"

void zoff_info_add_build(cJSON *doc) {
    cJSON *b = cJSON_AddObjectToObject(doc, "build");
    cJSON_AddStringToObject(b, "version", zoff_version());
    cJSON_AddStringToObject(b, "build_type", ZOFF_BUILD_TYPE);
    cJSON_AddStringToObject(b, "compiler", ZOFF_BUILD_C_COMPILER);
    cJSON_AddStringToObject(b, "sanitizers", ZOFF_BUILD_SANITIZE[0] ? ZOFF_BUILD_SANITIZE : "none");
    cJSON_AddBoolToObject(b, "cuda_backend", ZOFF_HAVE_CUDA);
    cJSON_AddBoolToObject(b, "nccl", ZOFF_HAVE_NCCL);
    cJSON_AddBoolToObject(b, "mpi", ZOFF_HAVE_MPI); /* mpirun -np N: data parallelism */
    if (ZOFF_HAVE_CUDA) {
        cJSON_AddStringToObject(b, "cuda_toolkit", ZOFF_BUILD_CUDA_VERSION);
        cJSON_AddStringToObject(b, "cuda_architectures", ZOFF_BUILD_CUDA_ARCHS);
    }
}
