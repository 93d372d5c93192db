# The Metal backend's platform-independent lowering (native/metal/lowering.cpp)
# against a recording builder: built and run on every platform, Linux included.
# Included from native/tests/CMakeLists.txt.
add_executable(test_metal_lowering test_metal_lowering.cpp ${PROJECT_SOURCE_DIR}/metal/lowering.cpp)
set_target_properties(test_metal_lowering PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON
                                                     CXX_EXTENSIONS OFF)
target_include_directories(test_metal_lowering PRIVATE ${PROJECT_SOURCE_DIR}/core
                                                       ${PROJECT_SOURCE_DIR}/metal)
target_compile_definitions(test_metal_lowering PRIVATE
    FM_METAL_GOLDEN_DIR="${CMAKE_CURRENT_SOURCE_DIR}/metal_lowering")
target_link_libraries(test_metal_lowering PRIVATE ferrometal::ferrometal)
fm_target_warnings(test_metal_lowering)
add_test(NAME test_metal_lowering COMMAND test_metal_lowering)
if(FM_SANITIZE)
    set_tests_properties(test_metal_lowering PROPERTIES ENVIRONMENT
        "ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
endif()
