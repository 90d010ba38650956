# deepseek from the command line: bad MoE/MLA settings are one clear error line
# naming the key; a short real run trains (metrics carry the expert load and
# routing entropy), samples with `keel generate`, is served by the inference
# engine (`keel verify model`), and resumes bit-exactly after kill -9.
set(_dsb ${CMAKE_CURRENT_BINARY_DIR}/deepseek_cli)
set(_dsc ${CMAKE_SOURCE_DIR}/configs/deepseek-tiny.toml)

# Usage: keel_deepseek_cli_error(name regex args...): exit != 0, one output line matching regex.
function(keel_deepseek_cli_error name regex)
  add_test(NAME ${name}
           COMMAND sh -c "out=$(\"$0\" \"$@\" 2>&1); rc=$?; echo \"$out\"; [ $rc -ne 0 ] && \
[ $(printf '%s\\n' \"$out\" | wc -l) -eq 1 ] && printf '%s' \"$out\" | grep -q -- \"${regex}\""
                   $<TARGET_FILE:keel> ${ARGN})
  set_tests_properties(${name} PROPERTIES TIMEOUT 60 LABELS deepseek)
endfunction()

keel_deepseek_cli_error(deepseek_cli_top_k_too_large
  "model.top_k: must be in \\[1, model.n_routed_experts = 8\\], got 9"
  train --config ${_dsc} model.top_k=9 run.dir=${_dsb}/bad)
keel_deepseek_cli_error(deepseek_cli_latent_too_wide
  "model.kv_lora_rank: must be in \\[1, model.n_embd = 128\\], got 256"
  train --config ${_dsc} model.kv_lora_rank=256 run.dir=${_dsb}/bad)
keel_deepseek_cli_error(deepseek_cli_zero_experts
  "model.n_routed_experts: must be > 0 for deepseek, got 0"
  train --config ${_dsc} model.n_routed_experts=0 run.dir=${_dsb}/bad)
keel_deepseek_cli_error(deepseek_cli_negative_router_noise
  "model.router_noise: must be >= 0, got -1"
  train --config ${_dsc} model.router_noise=-1 run.dir=${_dsb}/bad)
keel_deepseek_cli_error(deepseek_cli_bad_gating
  "model.gating"
  train --config ${_dsc} model.gating=relu run.dir=${_dsb}/bad)

set(_sotu ${CMAKE_SOURCE_DIR}/third_party/sotu/data)
if(EXISTS ${_sotu}/1790_george_washington_n.txt)
  file(MAKE_DIRECTORY ${_dsb}/corpus)
  foreach(f 1790_george_washington_n.txt 1791_george_washington_n.txt 1792_george_washington_n.txt)
    file(COPY ${_sotu}/${f} DESTINATION ${_dsb}/corpus)
  endforeach()
  add_test(NAME deepseek_cli_short_run
           COMMAND $<TARGET_FILE:keel> train --no-resume --config ${_dsc} data.corpus=${_dsb}/corpus
                   data.vocab_size=384 data.val_fraction=0.25 data.cache_dir=${_dsb}/cache
                   model.n_layer=2 model.n_embd=64 model.kv_lora_rank=16 model.qk_nope_head_dim=16
                   model.qk_rope_head_dim=8 model.v_head_dim=16 model.moe_ffn_hidden=32
                   model.max_seq_len=32 train.seq_len=32 train.batch_size=8 train.steps=40
                   train.warmup_steps=5 train.eval_every=20 train.eval_batches=2 run.dir=${_dsb}/run)
  set_tests_properties(deepseek_cli_short_run PROPERTIES TIMEOUT 120 LABELS deepseek
                       FIXTURES_SETUP deepseek_run)
  add_test(NAME deepseek_cli_metrics
           COMMAND sh -c "[ $(wc -l < \"$0\") -eq 40 ] && tail -n 1 \"$0\" | grep -q '\"expert_load_max_mean\":[0-9.]*,\"expert_load_max_mean_worst\":[0-9.]*,\"routing_entropy\":[0-9.]*'"
                   ${_dsb}/run/metrics.jsonl)
  set_tests_properties(deepseek_cli_metrics PROPERTIES TIMEOUT 30 LABELS deepseek
                       FIXTURES_REQUIRED deepseek_run)
  # The engine's latent KV cache and MoE decode against the training model's
  # forward, token by token.
  add_test(NAME deepseek_cli_generate
           COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/scripts/generate_greedy_check.py
                   $<TARGET_FILE:keel> ${_dsb}/run "The Congress" 8 ${_dsb}/greedy_logits.json)
  set_tests_properties(deepseek_cli_generate PROPERTIES TIMEOUT 60 LABELS deepseek
                       FIXTURES_REQUIRED deepseek_run)
  # The inference engine on the trained run (latent KV cache, MoE decode with
  # the saved routing biases): ref and cpu agree on every greedy token.
  add_test(NAME deepseek_verify_model
           COMMAND $<TARGET_FILE:keel> verify model --model ${_dsb}/run --backends ref,cpu
                   --max-tokens 16 --ppl-tokens 256)
  set_tests_properties(deepseek_verify_model PROPERTIES TIMEOUT 120 LABELS deepseek
                       FIXTURES_REQUIRED deepseek_run
                       PASS_REGULAR_EXPRESSION "top-1 agreement [0-9]+/[0-9]+ = 100.00%")
  # llama.cpp interop of deepseek GGUF exports is export_llama_cpp_interop_deepseek*
  # (ctests_export.cmake); here: a setting deepseek2 cannot express is one clear error
  # naming the key, and no file is written.
  add_test(NAME deepseek_cli_export_gguf_capacity
           COMMAND sh -c "rm -rf \"$1\" && cp -r \"$2\" \"$1\" && \
sed -i 's/^capacity_factor *=.*/capacity_factor = 1.25/' \"$1/config.toml\" && \
grep -q '^capacity_factor = 1.25' \"$1/config.toml\" && \
out=$(\"$0\" export --run \"$1\" --format gguf --out \"$1/model.gguf\" 2>&1); rc=$?; echo \"$out\"; \
[ $rc -ne 0 ] && [ ! -e \"$1/model.gguf\" ] && printf '%s' \"$out\" | grep -q 'model.capacity_factor = 1.25'"
                   $<TARGET_FILE:keel> ${_dsb}/run_capacity ${_dsb}/run)
  set_tests_properties(deepseek_cli_export_gguf_capacity PROPERTIES TIMEOUT 60 LABELS deepseek
                       FIXTURES_REQUIRED deepseek_run)
  # kill -9 at a random step after 20, resume: parameters, AdamW state, the
  # routing biases and every loss equal an uninterrupted run bit for bit.
  add_test(NAME deepseek_kill9_resume
           COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/scripts/checkpoint_kill9_resume.py
                   --keel $<TARGET_FILE:keel> --corpus ${_dsb}/corpus --mode random
                   --workdir ${_dsb}/kill9 --config ${_dsc}
                   --set model.kv_lora_rank=16 --set model.qk_nope_head_dim=16
                   --set model.qk_rope_head_dim=8 --set model.v_head_dim=16
                   --set model.moe_ffn_hidden=32)
  set_tests_properties(deepseek_kill9_resume PROPERTIES TIMEOUT 180 LABELS deepseek)
else()
  keel_missing_dependency(deepseek_missing_dependency "${KEEL_SOTU_MISSING}")
endif()
