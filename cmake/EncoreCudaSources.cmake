# The CUDA backend's sources, added to target `encore` when ENCORE_CUDA_ENABLED. Included from
# src/CMakeLists.txt after add_library(encore ...) (which already adds backends/cuda/device_query.cpp,
# links CUDA::cudart_static and defines ENCORE_HAVE_CUDA / ENCORE_CUDA_ARCHS).
#
# Picked up by pattern: src/backends/cuda/*.cpp (host code: runtime, allocator, cuBLASLt, kernel
# entry points) and kernels/cuda/*.cu (device code). Architectures come from
# CMAKE_CUDA_ARCHITECTURES (= ENCORE_CUDA_ARCHITECTURES, default 90: sm_90 code + compute_90 PTX).
if(NOT ENCORE_CUDA_ENABLED)
  return()
endif()

# encore's cxx_std_20 requirement applies to its CUDA sources too (its headers use std::span and
# defaulted comparisons). CMake < 3.26 does not know nvcc's C++20 flag (nvcc >= 12 has it): teach it.
if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION AND CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_COMPILE_FEATURES cuda_std_20)
  list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
endif()

file(GLOB ENCORE_CUDA_SOURCES CONFIGURE_DEPENDS
     ${PROJECT_SOURCE_DIR}/src/backends/cuda/*.cpp
     ${PROJECT_SOURCE_DIR}/kernels/cuda/*.cu)
list(FILTER ENCORE_CUDA_SOURCES EXCLUDE REGEX "/src/backends/cuda/device_query\\.cpp$")
# The Hopper attention kernel (wgmma, setmaxnreg) needs the arch-specific sm_90a target, which the
# rest must not get (its code runs on sm_90 only): an object library of its own, compiled for
# sm_90a alone, whose objects go into encore. attention.cu picks it at run time on sm_90 devices.
set(ENCORE_CUDA_SM90A_SOURCES ${PROJECT_SOURCE_DIR}/kernels/cuda/attention_hopper.cu)
list(REMOVE_ITEM ENCORE_CUDA_SOURCES ${ENCORE_CUDA_SM90A_SOURCES})
target_sources(encore PRIVATE ${ENCORE_CUDA_SOURCES})

if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0)
  add_library(encore_cuda_sm90a OBJECT ${ENCORE_CUDA_SM90A_SOURCES})
  set_target_properties(encore_cuda_sm90a PROPERTIES
    CUDA_ARCHITECTURES OFF              # no target-wide -gencode: only the sm_90a one below
    POSITION_INDEPENDENT_CODE ${BUILD_SHARED_LIBS}
    CUDA_RUNTIME_LIBRARY Static)
  target_compile_features(encore_cuda_sm90a PRIVATE cuda_std_20)
  # encore's own include directories and definitions (not its link interface: that would cycle).
  target_include_directories(encore_cuda_sm90a PRIVATE $<TARGET_PROPERTY:encore,INCLUDE_DIRECTORIES>)
  target_compile_definitions(encore_cuda_sm90a PRIVATE $<TARGET_PROPERTY:encore,COMPILE_DEFINITIONS>)
  target_compile_options(encore_cuda_sm90a PRIVATE
    --expt-relaxed-constexpr -lineinfo -Xcompiler=-Wall,-Wextra -gencode=arch=compute_90a,code=sm_90a)
  target_sources(encore PRIVATE $<TARGET_OBJECTS:encore_cuda_sm90a>)
  target_compile_definitions(encore PRIVATE ENCORE_ATTN_SM90A=1)
endif()

set_target_properties(encore PROPERTIES
  CUDA_SEPARABLE_COMPILATION OFF      # no device linking: every kernel is launched from its own .cu
  CUDA_RUNTIME_LIBRARY Static)        # the same cudart_static that src/CMakeLists.txt links

# nvcc gets only its own flags (the CXX warnings such as -Wpedantic are guarded by
# $<COMPILE_LANGUAGE:CXX> in src/CMakeLists.txt). -lineinfo keeps compute-sanitizer and Nsight
# reports on source lines at no runtime cost; host-side warnings are forwarded with -Xcompiler.
target_compile_options(encore PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo -Xcompiler=-Wall,-Wextra>)

target_link_libraries(encore PRIVATE CUDA::cublas CUDA::cublasLt)

# Keep the static CUDA runtime's symbols out of libencore.so's exports: executables that also link
# libcudart.so (the tests, the benchmarks) then get their own runtime instance instead of a mix of
# the two (both share the driver's primary context, so pointers and streams pass between them).
if(BUILD_SHARED_LIBS)
  target_link_options(encore PRIVATE "LINKER:--exclude-libs,libcudart_static.a")
endif()
