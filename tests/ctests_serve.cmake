# `keel serve` over real loopback sockets: OpenAI's npm client, 64 concurrent
# streaming clients, malformed and hostile input, SIGTERM draining. The model
# is a tiny run trained here (a few steps) by the serve_model fixture.
find_program(KEEL_SERVE_NODE node)
set(_sotu_serve ${CMAKE_SOURCE_DIR}/third_party/sotu/data)
if(NOT KEEL_SERVE_NODE OR NOT EXISTS ${_sotu_serve}/1790_george_washington_n.txt)
  message(WARNING "node or the corpus is missing: serve ctests are not registered (run scripts/setup.sh)")
  keel_missing_dependency(serve_missing_dependency "node (Debian package nodejs) or ${KEEL_SOTU_MISSING}")
  return()
endif()
set(_sb ${CMAKE_CURRENT_BINARY_DIR}/serve_cli)
file(MAKE_DIRECTORY ${_sb}/corpus)
foreach(f 1790_george_washington_n.txt 1791_george_washington_n.txt 1792_george_washington_n.txt)
  file(COPY ${_sotu_serve}/${f} DESTINATION ${_sb}/corpus)
endforeach()

# The model folder is named "tiny": that is the model id the server reports.
add_test(NAME serve_fixture_model
         COMMAND $<TARGET_FILE:keel> train --no-resume data.corpus=${_sb}/corpus data.vocab_size=320
                 data.val_fraction=0.25 data.cache_dir=${_sb}/cache model.n_layer=1 model.n_head=2
                 model.n_embd=32 model.max_seq_len=128 train.seq_len=64 train.batch_size=4
                 train.steps=20 train.warmup_steps=2 train.lr=3e-3 train.eval_every=20
                 train.eval_batches=1 train.peak_gflops=100 run.dir=${_sb}/tiny)
set_tests_properties(serve_fixture_model PROPERTIES TIMEOUT 120 LABELS serve FIXTURES_SETUP serve_model)

# generate and serve share their engine options (cli/commands/engine_options.h):
# both refuse a negative --threads by name (serve once took it as "every core").
foreach(_verb serve generate)
  set(_args --model ${_sb}/tiny --threads -3)
  if(_verb STREQUAL generate)
    list(APPEND _args --prompt hi)
  endif()
  add_test(NAME ${_verb}_refuses_negative_threads
           COMMAND ${CMAKE_SOURCE_DIR}/tests/scripts/expect_run.sh 105
                   "--threads: Value -3 not in range 0 to 4096" $<TARGET_FILE:keel> ${_verb} ${_args})
  set_tests_properties(${_verb}_refuses_negative_threads PROPERTIES TIMEOUT 30 LABELS serve)
endforeach()
# CLI11's range check lets a NaN through; generate then sampled from NaN logits.
add_test(NAME generate_refuses_nan_presence_penalty
         COMMAND ${CMAKE_SOURCE_DIR}/tests/scripts/expect_run.sh 1
                 "--presence-penalty: must be in \\[-2, 2\\], got nan" $<TARGET_FILE:keel> generate
                 --model ${_sb}/tiny --prompt hi --presence-penalty nan)
set_tests_properties(generate_refuses_nan_presence_penalty PROPERTIES TIMEOUT 30 LABELS serve)
# A queue (or batch) below 1 would answer every request 429: refused by name.
foreach(_opt max-queue max-batch)
  add_test(NAME serve_refuses_${_opt}_0
           COMMAND ${CMAKE_SOURCE_DIR}/tests/scripts/expect_run.sh 1
                   "--${_opt}: must be >= 1, got 0" $<TARGET_FILE:keel> serve --model ${_sb}/tiny
                   --${_opt} 0)
  set_tests_properties(serve_refuses_${_opt}_0 PROPERTIES TIMEOUT 30 LABELS serve)
endforeach()

set(_nd ${CMAKE_SOURCE_DIR}/tests/node)
if(EXISTS ${CMAKE_SOURCE_DIR}/third_party/openai/index.mjs)
  add_test(NAME serve_openai_client
           COMMAND ${KEEL_SERVE_NODE} ${_nd}/serve_openai_client.mjs $<TARGET_FILE:keel> ${_sb}/tiny
                   ${CMAKE_SOURCE_DIR}/third_party/openai)
  set_tests_properties(serve_openai_client PROPERTIES TIMEOUT 120 LABELS serve
                       FIXTURES_REQUIRED serve_model)
  add_test(NAME serve_logprobs
           COMMAND ${KEEL_SERVE_NODE} ${_nd}/serve_logprobs.mjs $<TARGET_FILE:keel> ${_sb}/tiny
                   ${CMAKE_SOURCE_DIR}/third_party/openai)
  set_tests_properties(serve_logprobs PROPERTIES TIMEOUT 120 LABELS serve
                       FIXTURES_REQUIRED serve_model)
  add_test(NAME serve_n_choices
           COMMAND ${KEEL_SERVE_NODE} ${_nd}/serve_n_choices.mjs $<TARGET_FILE:keel> ${_sb}/tiny
                   ${CMAKE_SOURCE_DIR}/third_party/openai)
  set_tests_properties(serve_n_choices PROPERTIES TIMEOUT 120 LABELS serve
                       FIXTURES_REQUIRED serve_model)
  # DeepSeek caches one latent row per token: the shared prefill copies it.
  add_test(NAME serve_n_choices_deepseek
           COMMAND ${KEEL_SERVE_NODE} ${_nd}/serve_n_choices.mjs $<TARGET_FILE:keel>
                   ${CMAKE_CURRENT_BINARY_DIR}/deepseek_cli/run ${CMAKE_SOURCE_DIR}/third_party/openai)
  set_tests_properties(serve_n_choices_deepseek PROPERTIES TIMEOUT 120 LABELS "serve;deepseek"
                       FIXTURES_REQUIRED deepseek_run)
  # A repeated prefix is not prefilled again, f32 and q8_0 (DeepSeek's latent
  # cache: tests/serve/test_engine_deepseek.cpp; its trained run's context is
  # too short for this test's prefix).
  add_test(NAME serve_prefix_cache
           COMMAND ${KEEL_SERVE_NODE} ${_nd}/serve_prefix_cache.mjs $<TARGET_FILE:keel> ${_sb}/tiny
                   ${CMAKE_SOURCE_DIR}/third_party/openai)
  set_tests_properties(serve_prefix_cache PROPERTIES TIMEOUT 120 LABELS serve
                       FIXTURES_REQUIRED serve_model)
  add_test(NAME serve_prefix_cache_q8_0
           COMMAND ${KEEL_SERVE_NODE} ${_nd}/serve_prefix_cache.mjs $<TARGET_FILE:keel> ${_sb}/tiny
                   ${CMAKE_SOURCE_DIR}/third_party/openai --quant q8_0)
  set_tests_properties(serve_prefix_cache_q8_0 PROPERTIES TIMEOUT 120 LABELS serve
                       FIXTURES_REQUIRED serve_model)
  # A bf16 KV cache: the prefix cache copies its rows (2 bytes an element).
  add_test(NAME serve_prefix_cache_kv_bf16
           COMMAND ${KEEL_SERVE_NODE} ${_nd}/serve_prefix_cache.mjs $<TARGET_FILE:keel> ${_sb}/tiny
                   ${CMAKE_SOURCE_DIR}/third_party/openai --kv-dtype bf16)
  set_tests_properties(serve_prefix_cache_kv_bf16 PROPERTIES TIMEOUT 120 LABELS serve
                       FIXTURES_REQUIRED serve_model)
  add_test(NAME serve_response_format
           COMMAND ${KEEL_SERVE_NODE} ${_nd}/serve_response_format.mjs $<TARGET_FILE:keel> ${_sb}/tiny
                   ${CMAKE_SOURCE_DIR}/third_party/openai)
  set_tests_properties(serve_response_format PROPERTIES TIMEOUT 120 LABELS serve
                       FIXTURES_REQUIRED serve_model)
  add_test(NAME serve_api_key
           COMMAND ${KEEL_SERVE_NODE} ${_nd}/serve_api_key.mjs $<TARGET_FILE:keel> ${_sb}/tiny
                   ${CMAKE_SOURCE_DIR}/third_party/openai)
  set_tests_properties(serve_api_key PROPERTIES TIMEOUT 120 LABELS serve
                       FIXTURES_REQUIRED serve_model)
else()
  message(WARNING "third_party/openai missing: serve_openai_client is not registered (run scripts/setup.sh)")
  keel_missing_dependency(serve_openai_client_missing_dependency "third_party/openai (npm package openai)")
endif()
# 300 connections holding half a request line do not make a completion wait.
add_test(NAME serve_slow_clients
         COMMAND ${KEEL_SERVE_NODE} ${_nd}/serve_slow_clients.mjs $<TARGET_FILE:keel> ${_sb}/tiny)
set_tests_properties(serve_slow_clients PROPERTIES TIMEOUT 120 LABELS serve
                     FIXTURES_REQUIRED serve_model)
# Three requests pipelined in one write: three answers, in order.
add_test(NAME serve_pipelining
         COMMAND ${KEEL_SERVE_NODE} ${_nd}/serve_pipelining.mjs $<TARGET_FILE:keel> ${_sb}/tiny)
set_tests_properties(serve_pipelining PROPERTIES TIMEOUT 60 LABELS serve
                     FIXTURES_REQUIRED serve_model)
# `keel generate` and `keel serve`: the same text for the same request and seed.
add_test(NAME generate_vs_serve
         COMMAND ${KEEL_SERVE_NODE} ${_nd}/generate_vs_serve.mjs $<TARGET_FILE:keel> ${_sb}/tiny)
set_tests_properties(generate_vs_serve PROPERTIES TIMEOUT 180 LABELS serve
                     FIXTURES_REQUIRED serve_model)
add_test(NAME serve_load_64_streams
         COMMAND ${KEEL_SERVE_NODE} ${_nd}/serve_load.mjs $<TARGET_FILE:keel> ${_sb}/tiny)
set_tests_properties(serve_load_64_streams PROPERTIES TIMEOUT 120 LABELS serve
                     FIXTURES_REQUIRED serve_model)
add_test(NAME serve_bad_input
         COMMAND ${KEEL_SERVE_NODE} ${_nd}/serve_bad_input.mjs $<TARGET_FILE:keel> ${_sb}/tiny)
set_tests_properties(serve_bad_input PROPERTIES TIMEOUT 120 LABELS serve
                     FIXTURES_REQUIRED serve_model)
add_test(NAME serve_sigterm_drain
         COMMAND ${KEEL_SERVE_NODE} ${_nd}/serve_shutdown.mjs $<TARGET_FILE:keel> ${_sb}/tiny)
set_tests_properties(serve_sigterm_drain PROPERTIES TIMEOUT 120 LABELS serve
                     FIXTURES_REQUIRED serve_model)
# A model path that is not there: one clear error line, exit 1, no listener.
add_test(NAME serve_cli_missing_model
         COMMAND sh -c "out=$(\"$0\" serve --model \"$1\" --port 0 2>&1); rc=$?; echo \"$out\"; \
[ $rc -eq 1 ] && [ $(printf '%s\\n' \"$out\" | wc -l) -eq 1 ] && printf '%s' \"$out\" | grep -q 'no_such_model'"
                 $<TARGET_FILE:keel> ${_sb}/no_such_model)
set_tests_properties(serve_cli_missing_model PROPERTIES TIMEOUT 60 LABELS serve)
# deepseek's latent cache is f32 only: a bf16 KV cache is refused by name.
add_test(NAME generate_kv_bf16_deepseek_refused
         COMMAND ${CMAKE_SOURCE_DIR}/tests/scripts/expect_run.sh 1
                 "deepseek_cli/run: kv_dtype bf16: deepseek's latent cache"
                 $<TARGET_FILE:keel> generate --model ${CMAKE_CURRENT_BINARY_DIR}/deepseek_cli/run
                 --kv-dtype bf16 --max-tokens 2 --prompt x)
set_tests_properties(generate_kv_bf16_deepseek_refused PROPERTIES TIMEOUT 60 LABELS "serve;deepseek"
                     FIXTURES_REQUIRED deepseek_run)
