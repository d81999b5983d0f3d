# The CUDA backend: built when ZOFF_CUDA=ON, or AUTO and a toolkit is found. It needs nvcc
# and cuBLAS at build time only; whether a GPU is present is decided at run time.
set(ZOFF_HAVE_CUDA OFF)
set(ZOFF_HAVE_NCCL OFF)
if(NOT ZOFF_CUDA STREQUAL "OFF")
    if(NOT DEFINED CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
        set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
    endif()
    include(CheckLanguage)
    check_language(CUDA)
    if(CMAKE_CUDA_COMPILER)
        if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
            # Real code for Ampere and Hopper, plus PTX for newer GPUs to JIT.
            set(CMAKE_CUDA_ARCHITECTURES "80-real;90-real;90-virtual")
        endif()
        enable_language(CUDA)
        find_package(CUDAToolkit REQUIRED)
        set(ZOFF_HAVE_CUDA ON)
        # NCCL: the CUDA backend's collectives (gpu/cuda/cuda_comm.c).
        find_path(ZOFF_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS}
                  /usr/local/cuda/include)
        find_library(ZOFF_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR}
                     /usr/local/cuda/lib64 /usr/local/cuda/lib)
        if(NOT ZOFF_NCCL_INCLUDE_DIR OR NOT ZOFF_NCCL_LIBRARY)
            message(FATAL_ERROR "the CUDA backend needs NCCL (nccl.h and libnccl.so not found "
                                "beside the CUDA toolkit): install the packages 'libnccl-dev' "
                                "and 'libnccl2' (NVIDIA's CUDA repository), or configure with "
                                "-DZOFF_CUDA=OFF")
        endif()
        set(ZOFF_HAVE_NCCL ON)
        message(STATUS "found NCCL: ${ZOFF_NCCL_LIBRARY}")
    elseif(ZOFF_CUDA STREQUAL "ON")
        message(FATAL_ERROR "ZOFF_CUDA=ON but no CUDA compiler was found: install the CUDA "
                            "toolkit (Debian: nvidia-cuda-toolkit) or set CMAKE_CUDA_COMPILER")
    else()
        message(STATUS "CUDA toolkit not found: building without the CUDA backend")
    endif()
endif()
