# encore_cli_test(NAME PROGRAM <target> LABEL <label> ARGS <args...> STATUS <n> [STDOUT <text>]
#                 [STDERR <text>] [REGEX <stdout regex>]): a ctest that runs a command-line program
# and checks its exit status (a crash is a failure), that stdout / stderr contain the given texts
# and that stdout matches REGEX (cmake/RunCliTest.cmake). PASS_REGULAR_EXPRESSION would ignore the
# exit status.
set(ENCORE_RUN_CLI_TEST ${CMAKE_CURRENT_LIST_DIR}/RunCliTest.cmake)
function(encore_cli_test name)
  cmake_parse_arguments(T "" "PROGRAM;LABEL;STATUS;STDOUT;STDERR;REGEX" "ARGS" ${ARGN})
  set(checks -DEXPECT_STATUS=${T_STATUS})
  foreach(what IN ITEMS STDOUT STDERR)
    if(DEFINED T_${what})
      list(APPEND checks "-DEXPECT_${what}=${T_${what}}")
    endif()
  endforeach()
  if(DEFINED T_REGEX)
    list(APPEND checks "-DEXPECT_STDOUT_REGEX=${T_REGEX}")
  endif()
  add_test(NAME ${name} COMMAND ${CMAKE_COMMAND} -DPROGRAM=$<TARGET_FILE:${T_PROGRAM}> "-DARGS=${T_ARGS}" ${checks}
                                -P ${ENCORE_RUN_CLI_TEST})
  set_tests_properties(${name} PROPERTIES LABELS ${T_LABEL})
endfunction()
