# warden_module(NAME SOURCES ... DEPS ...): one static library per module, warden_<NAME>.
function(warden_module name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(warden_${name} STATIC ${ARG_SOURCES})
  target_include_directories(warden_${name} PUBLIC ${CMAKE_SOURCE_DIR}/src)
  target_link_libraries(warden_${name} PUBLIC ${ARG_DEPS})
endfunction()

# warden_test(NAME SOURCES ... DEPS ... LABEL unit|integration|slow): one gtest binary.
function(warden_test name)
  cmake_parse_arguments(ARG "" "LABEL" "SOURCES;DEPS" ${ARGN})
  if(NOT ARG_LABEL)
    set(ARG_LABEL unit)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  gtest_discover_tests(${name} PROPERTIES LABELS ${ARG_LABEL} DISCOVERY_TIMEOUT 60
                       WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
endfunction()

# warden_bench(NAME SOURCES ... DEPS ...): a Google Benchmark program.
function(warden_bench name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} benchmark::benchmark)
endfunction()

# warden_fuzz(NAME SOURCES ... DEPS ...): a libFuzzer target (clang, -DWARDEN_FUZZ=ON).
function(warden_fuzz name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
endfunction()
