# System libraries, found through pkg-config. A missing one stops configure and names the
# Debian package that provides it, so the fix is one apt-get away.
find_package(Threads REQUIRED)
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
    message(FATAL_ERROR "pkg-config not found: install the Debian package 'pkg-config'")
endif()

function(zoff_require_pkg var module debian_pkg)
    pkg_check_modules(${var} IMPORTED_TARGET GLOBAL ${module})
    if(NOT ${var}_FOUND)
        message(FATAL_ERROR "zoff needs ${module} (pkg-config module '${module}' not found): "
                            "install the Debian package '${debian_pkg}'")
    endif()
    message(STATUS "found ${module} ${${var}_VERSION}")
endfunction()

zoff_require_pkg(ZOFF_URING liburing liburing-dev)
zoff_require_pkg(ZOFF_HWLOC hwloc libhwloc-dev)
zoff_require_pkg(ZOFF_OPENBLAS openblas libopenblas-dev)
zoff_require_pkg(ZOFF_CJSON libcjson libcjson-dev)
zoff_require_pkg(ZOFF_XXHASH libxxhash libxxhash-dev)
zoff_require_pkg(ZOFF_PCRE2 libpcre2-8 libpcre2-dev)
zoff_require_pkg(ZOFF_UTF8PROC libutf8proc libutf8proc-dev)

# MPI: the process world of a data-parallel job (gpu/dist.c); a single process never initializes
# it at run time. ZOFF_MPI AUTO (default): used when found, else a build for single processes
# (gpu/dist_single.c: mpirun with several ranks is refused at start); ON: required.
set(ZOFF_MPI "AUTO" CACHE STRING "Data parallelism over MPI: AUTO, ON or OFF")
set_property(CACHE ZOFF_MPI PROPERTY STRINGS AUTO ON OFF)
set(ZOFF_HAVE_MPI OFF)
if(NOT ZOFF_MPI STREQUAL "OFF")
    find_package(MPI COMPONENTS C)
    if(MPI_C_FOUND)
        set(ZOFF_HAVE_MPI ON)
        message(STATUS "found MPI ${MPI_C_VERSION} (${MPIEXEC_EXECUTABLE})")
    elseif(ZOFF_MPI STREQUAL "ON")
        message(FATAL_ERROR "ZOFF_MPI=ON needs an MPI library with its C bindings (not found): "
                            "install the Debian packages 'libopenmpi-dev' and 'openmpi-bin'")
    else()
        message(STATUS "MPI not found: single processes only (install libopenmpi-dev and "
                       "openmpi-bin for mpirun -np N)")
    endif()
endif()
