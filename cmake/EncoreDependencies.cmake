# Third-party libraries, all from Debian packages (scripts/setup.sh installs them).
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(dnnl 2.6 CONFIG REQUIRED)          # libdnnl-dev: oneDNN v2 API
find_package(fmt CONFIG REQUIRED)               # libfmt-dev
find_package(nlohmann_json 3 CONFIG REQUIRED)   # nlohmann-json3-dev
find_package(Eigen3 3.3 CONFIG REQUIRED)        # libeigen3-dev
find_path(ENCORE_STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb REQUIRED)  # libstb-dev (header only use)

# stb_image (2.27 in Debian 12, and later releases) upsamples horizontally subsampled chroma (4:2:2
# JPEGs) with the weights of the last input pair swapped, so the column before the last is off by
# up to ~120 levels on noisy images; libjpeg (and Pillow) weight the nearer sample 3:1. image.cpp
# includes a copy with that line corrected from ENCORE_STB_PATCHED_DIR (a header that has fixed it
# is copied unchanged). Written only when it changes, so reconfiguring does not rebuild image.cpp.
file(READ ${ENCORE_STB_INCLUDE_DIR}/stb_image.h _encore_stb)
string(REPLACE "out[i*2+0] = stbi__div4(input[w-2]*3 + input[w-1] + 2);"
               "out[i*2+0] = stbi__div4(input[w-1]*3 + input[w-2] + 2);  /* encore: 3:1 toward the nearer sample */"
               _encore_stb "${_encore_stb}")
string(FIND "${_encore_stb}" "encore: 3:1 toward the nearer sample" _encore_stb_fixed)
if(_encore_stb_fixed EQUAL -1)
  message(WARNING "stb_image.h (${ENCORE_STB_INCLUDE_DIR}) no longer has the line encore patches; "
                  "check whether its 4:2:2 JPEG upsampler is fixed (test ImageDecode.JpegIsCloseToLibjpeg)")
endif()
set(ENCORE_STB_PATCHED_DIR ${PROJECT_BINARY_DIR}/stb-patched)
set(_encore_stb_out ${ENCORE_STB_PATCHED_DIR}/stb/stb_image.h)
set(_encore_stb_old "")
if(EXISTS ${_encore_stb_out})
  file(READ ${_encore_stb_out} _encore_stb_old)
endif()
if(NOT _encore_stb_old STREQUAL _encore_stb)
  file(WRITE ${_encore_stb_out} "${_encore_stb}")
endif()
unset(_encore_stb)
unset(_encore_stb_old)
