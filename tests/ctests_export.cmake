# Export/import tests that are not gtest programs: llama.cpp interop through
# node-llama-cpp (installed by scripts/setup.sh, used offline), `keel export`
# command-line errors, and the bounded libFuzzer run of the file readers.
set(_eb ${CMAKE_CURRENT_BINARY_DIR}/export_cli)
set(_sotu ${CMAKE_SOURCE_DIR}/third_party/sotu/data)

find_program(KEEL_NODE node)
if(KEEL_NODE AND EXISTS ${_sotu}/1790_george_washington_n.txt)
  file(MAKE_DIRECTORY ${_eb}/corpus)
  foreach(f 1790_george_washington_n.txt 1791_george_washington_n.txt 1792_george_washington_n.txt
            1793_george_washington_n.txt 1794_george_washington_n.txt)
    file(COPY ${_sotu}/${f} DESTINATION ${_eb}/corpus)
  endforeach()
  # One run per GGUF architecture: llama (the tiny Llama), gpt2, and deepseek (llama.cpp's
  # deepseek2) twice: plain q projection, sigmoid gating and a shared expert; then q
  # compression, softmax gating without renormalisation, routed scaling and no shared expert.
  foreach(arch llama gpt2 deepseek deepseek_qlora)
    set(_t export_llama_cpp_interop)
    if(NOT arch STREQUAL "llama")
      set(_t export_llama_cpp_interop_${arch})
    endif()
    add_test(NAME ${_t}
             COMMAND ${KEEL_NODE} ${CMAKE_SOURCE_DIR}/tests/node/llama_interop.mjs $<TARGET_FILE:keel>
                     ${_eb}/interop_${arch} ${CMAKE_SOURCE_DIR}/third_party/node-llama-cpp ${_eb}/corpus ${arch})
    # No network at test time: node-llama-cpp must use its installed prebuilt binaries.
    set_tests_properties(${_t} PROPERTIES TIMEOUT 300 LABELS export
                         ENVIRONMENT "NODE_LLAMA_CPP_SKIP_DOWNLOAD=true"
                         PASS_REGULAR_EXPRESSION "llama.cpp interop \\(${arch}\\): all checks passed")
  endforeach()
  set_tests_properties(export_llama_cpp_interop PROPERTIES FIXTURES_SETUP export_llama_run)
  # k-quants (q4_k_m, q5_k_m, q6_k beside f32, q8_0, q4_0) of a tiny llama of width 256:
  # llama.cpp's type mix, keel vs llama.cpp on each file, llama.cpp's perplexity on
  # held-out SOTU text (1795, not in the training corpus) against f32's, and the
  # q4_k_m round trip (tests/node/kquant_interop.mjs).
  add_test(NAME export_llama_cpp_kquant
           COMMAND ${KEEL_NODE} ${CMAKE_SOURCE_DIR}/tests/node/kquant_interop.mjs $<TARGET_FILE:keel>
                   ${_eb}/kquant ${CMAKE_SOURCE_DIR}/third_party/node-llama-cpp ${_eb}/corpus
                   ${_sotu}/1795_george_washington_n.txt)
  set_tests_properties(export_llama_cpp_kquant PROPERTIES TIMEOUT 300 LABELS export
                       ENVIRONMENT "NODE_LLAMA_CPP_SKIP_DOWNLOAD=true"
                       PASS_REGULAR_EXPRESSION "llama.cpp k-quant interop: all checks passed")
  # The compatibility matrix: the same exports in llama.cpp builds from older
  # node-llama-cpp releases (scripts/setup.sh --tests installs each in
  # third_party/node-llama-cpp-<release>). A pair listed with a load error is
  # one that release cannot load because its loader predates what the file
  # needs; the test passes only if it fails with exactly that reason.
  #   deepseek, q_lora_rank = 0: loaders up to mid 2025 expect q compression
  #     (attn_q_a_norm) unless the layer count is one of DeepSeek's "lite" models;
  #   deepseek, MLA layout (attn_k_b / attn_v_b over the latent): loaders before
  #     llama.cpp's MLA change (spring 2025) want attn_kv_b per head.
  set(_pre_mla "'blk.0.attn_kv_b.weight'")
  set(_no_q_lora "'blk.0.attn_q_a_norm.weight'")
  foreach(_row "3.1.1|${_no_q_lora}|${_pre_mla}" "3.6.0|${_no_q_lora}|${_pre_mla}"
               "3.14.0|${_no_q_lora}|")
    string(REPLACE "|" ";" _row "${_row}")
    list(GET _row 0 _rel)
    list(GET _row 1 _ds_unsupported)
    list(GET _row 2 _dsq_unsupported)
    set(_nlc ${CMAKE_SOURCE_DIR}/third_party/node-llama-cpp-${_rel})
    foreach(arch gpt2 llama deepseek deepseek_qlora)
      set(_t export_llama_cpp_compat_${_rel}_${arch})
      set(_why "")
      if(arch STREQUAL "deepseek")
        set(_why "${_ds_unsupported}")
      elseif(arch STREQUAL "deepseek_qlora")
        set(_why "${_dsq_unsupported}")
      endif()
      if(EXISTS ${_nlc}/.done)
        add_test(NAME ${_t}
                 COMMAND ${KEEL_NODE} ${CMAKE_SOURCE_DIR}/tests/node/llama_interop.mjs $<TARGET_FILE:keel>
                         ${_eb}/compat_${_rel}_${arch} ${_nlc} ${_eb}/corpus ${arch} ${_why})
        set_tests_properties(${_t} PROPERTIES TIMEOUT 300 LABELS export
                             ENVIRONMENT "NODE_LLAMA_CPP_SKIP_DOWNLOAD=true"
                             PASS_REGULAR_EXPRESSION "llama.cpp interop \\(${arch}\\): (all checks passed|unsupported by ${_rel} as listed)")
      else()
        add_test(NAME ${_t} COMMAND sh -c "echo 'missing ${_nlc}: run scripts/setup.sh --tests'; exit 1")
        set_tests_properties(${_t} PROPERTIES LABELS export)
      endif()
    endforeach()
  endforeach()
  # `keel train --init`: the exported Hugging Face folder of the interop run starts a new
  # run of the same shape, whose first loss is that of a trained model (random: ln 384 = 5.95).
  add_test(NAME export_train_init_from_folder
           COMMAND sh -c "\"$0\" export --run \"$1\" --format safetensors --out \"$2/hf\" && \
\"$0\" train --no-resume --init \"$2/hf\" model.arch=llama model.n_layer=2 model.n_head=4 model.n_kv_head=2 \
model.n_embd=64 model.max_seq_len=128 train.seq_len=64 train.batch_size=8 train.steps=1 \
train.eval_every=1000 train.eval_batches=1 train.peak_gflops=100 data.corpus=\"$3\" \
data.vocab_size=384 data.val_fraction=0.1 data.cache_dir=\"$2/cache\" run.dir=\"$2/init_run\""
                   $<TARGET_FILE:keel> ${_eb}/interop_llama/run_llama ${_eb}/interop_llama ${_eb}/corpus)
  set_tests_properties(export_train_init_from_folder PROPERTIES TIMEOUT 120 LABELS export
                       FIXTURES_REQUIRED export_llama_run
                       PASS_REGULAR_EXPRESSION "init: weights from .*step 1/1 loss [0-4]\\.")
else()
  message(WARNING "node or the corpus not found: export_llama_cpp_interop is not registered "
                  "(run scripts/setup.sh)")
  keel_missing_dependency(export_llama_cpp_interop_missing_dependency "node (Debian package nodejs) or ${KEEL_SOTU_MISSING}")
endif()

# A failing `keel export` exits non-zero with one error line containing regex.
function(keel_export_cli_error name regex)
  add_test(NAME ${name}
           COMMAND sh -c "out=$(\"$0\" \"$@\" 2>&1); rc=$?; echo \"$out\"; [ $rc -ne 0 ] && \
[ $(printf '%s\\n' \"$out\" | wc -l) -eq 1 ] && printf '%s' \"$out\" | grep -q -- \"${regex}\""
                   $<TARGET_FILE:keel> ${ARGN})
  set_tests_properties(${name} PROPERTIES TIMEOUT 60 LABELS export)
endfunction()
keel_export_cli_error(export_cli_missing_run "${_eb}/no_such_run: run directory not found"
                      export --run ${_eb}/no_such_run)
keel_export_cli_error(export_cli_bad_format "--format: 'onnx' is not one of gguf, safetensors"
                      export --run ${_eb}/no_such_run --format onnx)
keel_export_cli_error(export_cli_bad_dtype "GGUF weight type 'q2_k' is not one of f32, f16, q8_0"
                      export --run ${_eb}/no_such_run --dtype q2_k)
keel_export_cli_error(export_cli_no_source "give exactly one of --run"
                      export --format gguf)
keel_export_cli_error(generate_cli_missing_model_folder "${_eb}/no_such_folder: model folder not found"
                      generate --model ${_eb}/no_such_folder --prompt hi)

# libFuzzer on every parser (fuzz/run_fuzz.sh lists them) for 6 s each, after
# replaying the saved crash inputs under fuzz/regressions/. The script fails on
# any crash, and its exit status is what the test checks.
find_program(KEEL_CLANGXX clang++)
if(KEEL_CLANGXX)
  add_test(NAME export_fuzz_readers
           COMMAND ${CMAKE_SOURCE_DIR}/fuzz/run_fuzz.sh 6 ${CMAKE_CURRENT_BINARY_DIR}/fuzz)
  set_tests_properties(export_fuzz_readers PROPERTIES TIMEOUT 600 LABELS "export;fuzz")
else()
  message(WARNING "clang++ not found: export_fuzz_readers is not registered (run scripts/setup.sh)")
  keel_missing_dependency(export_fuzz_readers_missing_dependency "clang++ (Debian package clang)")
endif()
