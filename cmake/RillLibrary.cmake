# rill_library_properties(target export_name): what rill's installed
# libraries share: the name in the package (rill::<export_name>), and, when
# shared, a version, a SONAME and a version script that exports rill's own
# symbols only (cmake/rill.map), never those of the libraries it links.
function(rill_library_properties target export_name)
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${export_name})
  if(BUILD_SHARED_LIBS)
    set_target_properties(${target} PROPERTIES
      VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}
      POSITION_INDEPENDENT_CODE ON)
    target_link_options(${target} PRIVATE
      "LINKER:--version-script=${PROJECT_SOURCE_DIR}/cmake/rill.map" "LINKER:--no-undefined")
    set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS ${PROJECT_SOURCE_DIR}/cmake/rill.map)
  endif()
endfunction()
