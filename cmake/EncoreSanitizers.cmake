# ENCORE_SANITIZE="address;undefined" instruments encore, its tests and tools.
if(ENCORE_SANITIZE)
  string(REPLACE ";" "," _encore_san "${ENCORE_SANITIZE}")
  add_compile_options(-fsanitize=${_encore_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${_encore_san})
  message(STATUS "encore: sanitizers ${_encore_san}")
endif()
