# Installs the library, headers, an exported CMake package (encore::encore) and encore.pc.
include(CMakePackageConfigHelpers)

install(TARGETS encore EXPORT encoreTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/encore DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_BINARY_DIR}/include/encore/version.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/encore)

set(ENCORE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/encore)
# A static encore carries its private dependencies into the consumer's link line.
if(BUILD_SHARED_LIBS)
  set(ENCORE_CONFIG_STATIC OFF)
else()
  set(ENCORE_CONFIG_STATIC ON)
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/encoreConfig.cmake.in
  ${PROJECT_BINARY_DIR}/encoreConfig.cmake INSTALL_DESTINATION ${ENCORE_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/encoreConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(EXPORT encoreTargets NAMESPACE encore:: DESTINATION ${ENCORE_CMAKE_DIR})
install(FILES ${PROJECT_BINARY_DIR}/encoreConfig.cmake ${PROJECT_BINARY_DIR}/encoreConfigVersion.cmake
        DESTINATION ${ENCORE_CMAKE_DIR})
# Build-tree export, so a project can point encore_DIR at a build directory too.
export(EXPORT encoreTargets NAMESPACE encore:: FILE ${PROJECT_BINARY_DIR}/encoreTargets.cmake)

# encore.pc finds the prefix from its own place (${pcfiledir}), so an installed tree can move and
# `cmake --install --prefix` at install time still gives a right file; absolute dirs stay as given.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(ENCORE_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(ENCORE_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  file(RELATIVE_PATH _encore_pc_up "/encore-root/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/encore-root")
  string(REGEX REPLACE "/$" "" _encore_pc_up "${_encore_pc_up}")
  set(ENCORE_PC_PREFIX "\${pcfiledir}/${_encore_pc_up}")
  set(ENCORE_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(ENCORE_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(ENCORE_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
# A static libencore needs its private dependencies on the consumer's link line (pkg-config
# --static --libs encore). As plain flags, not Requires.private: oneDNN and CUDA ship no .pc files.
set(ENCORE_PC_PRIVATE "")
if(NOT BUILD_SHARED_LIBS)
  set(_encore_pc_libs "-ldnnl -lfmt ${OpenMP_CXX_FLAGS}")
  if(ENCORE_CUDA_ENABLED)
    string(APPEND _encore_pc_libs " -L${CUDAToolkit_LIBRARY_DIR} -lcublasLt -lcublas -lcudart_static -ldl -lrt -lpthread")
  endif()
  set(ENCORE_PC_PRIVATE "Libs.private: ${_encore_pc_libs}")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/encore.pc.in ${PROJECT_BINARY_DIR}/encore.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/encore.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
