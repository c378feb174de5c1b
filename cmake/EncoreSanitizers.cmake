# ENCORE_SANITIZE="address;undefined" instruments encore, its tests and tools.
if(ENCORE_SANITIZE)
  string(REPLACE ";" "," _encore_san "${ENCORE_SANITIZE}")
  # Host compilers only: nvcc does not take these flags (device code is checked by compute-sanitizer).
  add_compile_options($<$<COMPILE_LANGUAGE:C,CXX>:-fsanitize=${_encore_san};-fno-omit-frame-pointer;-fno-sanitize-recover=all>)
  add_link_options($<$<LINK_LANGUAGE:C,CXX>:-fsanitize=${_encore_san}>)
  message(STATUS "encore: sanitizers ${_encore_san}")
endif()
