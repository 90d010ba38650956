# The layers of docs/DESIGN.md: every include and library link follows the
# "May include" line of its folder's README (serve/ never includes train/),
# and the check itself catches an injected serve -> train include.
add_test(NAME layers
         COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/scripts/check_layers.py ${CMAKE_SOURCE_DIR})
set_tests_properties(layers PROPERTIES TIMEOUT 60 LABELS layers)
file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/layers)
add_test(NAME layers_self_test
         COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/scripts/check_layers.py --self-test
                 ${CMAKE_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/layers)
set_tests_properties(layers_self_test PROPERTIES TIMEOUT 60 LABELS layers)
