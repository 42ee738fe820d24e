# What `cmake --install` puts where, the CMake package (find_package(rill)),
# the pkg-config file, and the Debian packages CPack builds from them
# (README "Use it from your project"; tests/package/ checks all of it).
#
#   component dev  (librill-dev): include/rill/*.h, lib/librill_engine.a and
#                  librill_projections.a (.so with BUILD_SHARED_LIBS),
#                  lib/cmake/rill/, lib/pkgconfig/rill.pc
#   component tool (rill):        bin/rill
include(CMakePackageConfigHelpers)

set(RILL_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/rill)

install(TARGETS rill_engine rill_projections rill_schema rill_engine_internal
  EXPORT rillTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY engine/include/rill projections/include/rill
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev FILES_MATCHING PATTERN "*.h")
install(EXPORT rillTargets NAMESPACE rill:: DESTINATION ${RILL_CMAKE_DIR} COMPONENT dev)

configure_package_config_file(cmake/rillConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/rillConfig.cmake INSTALL_DESTINATION ${RILL_CMAKE_DIR})
# 0.x: a minor version may change the API.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/rillConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/rillConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/rillConfigVersion.cmake
  DESTINATION ${RILL_CMAKE_DIR} COMPONENT dev)

# pkg-config: relocatable (paths from the .pc file's own place), so the same
# file serves /usr (the .deb), /usr/local and any --prefix.
file(RELATIVE_PATH RILL_PC_TO_PREFIX "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
string(REGEX REPLACE "/$" "" RILL_PC_TO_PREFIX "${RILL_PC_TO_PREFIX}")
set(RILL_PC_REQUIRES "absl_status absl_statusor absl_strings absl_str_format absl_time \
absl_span absl_function_ref absl_synchronization")
set(RILL_PC_REQUIRES_PRIVATE "absl_flat_hash_map absl_flat_hash_set absl_random_random \
absl_cleanup flatbuffers lmdb >= 0.9.24 libxxhash libnats >= 3.4")
configure_file(cmake/rill.pc.in ${CMAKE_CURRENT_BINARY_DIR}/rill.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/rill.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

if(TARGET rill)
  install(TARGETS rill RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT tool)
  if(BUILD_SHARED_LIBS)
    set_target_properties(rill PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
  endif()
endif()

# Debian packages: cpack -G DEB in the build directory (tests/package/run.sh).
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME rill)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "rill maintainers <rill@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "embeddable event-sourcing and CQRS storage engine")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL tool dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_TOOL_PACKAGE_NAME rill)
set(CPACK_DEBIAN_TOOL_PACKAGE_SECTION utils)
# dpkg-shlibdeps works out the tool's run-time libraries (liblmdb0, libnats3.4, Abseil ...).
set(CPACK_DEBIAN_TOOL_PACKAGE_SHLIBDEPS ON)
set(CPACK_COMPONENT_TOOL_DESCRIPTION
  "rill admin tool: inspect, verify, back up, export/import and benchmark rill stores")
set(CPACK_DEBIAN_DEV_PACKAGE_NAME librill-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# The static libraries need their dependencies' development files to link.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "liblmdb-dev (>= 0.9.24), libabsl-dev, \
libflatbuffers-dev (>= 2.0), libxxhash-dev, libnats-dev (>= 3.4), pkgconf | pkg-config")
set(CPACK_COMPONENT_DEV_DESCRIPTION
  "rill development files: headers, static libraries, CMake package and pkg-config file")
include(CPack)
