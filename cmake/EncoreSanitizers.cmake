# ENCORE_SANITIZE="address;undefined" instruments encore, its tests and tools.
if(ENCORE_SANITIZE)
  string(REPLACE ";" "," _encore_san "${ENCORE_SANITIZE}")
  # Host compilers only: nvcc does not take these flags (device code is checked by compute-sanitizer).
  # One generator expression per flag: a ';' inside one would split it into broken pieces.
  add_compile_options($<$<COMPILE_LANGUAGE:C,CXX>:-fsanitize=${_encore_san}>
                      $<$<COMPILE_LANGUAGE:C,CXX>:-fno-omit-frame-pointer>
                      $<$<COMPILE_LANGUAGE:C,CXX>:-fno-sanitize-recover=all>)
  add_link_options($<$<LINK_LANGUAGE:C,CXX>:-fsanitize=${_encore_san}>)
  message(STATUS "encore: sanitizers ${_encore_san}")
endif()
