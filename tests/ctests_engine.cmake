# The inference engine from the command line: a short real training run, then
# `keel verify model` over ref and cpu (f32 must agree on every greedy token;
# int8 and q4 report their perplexity change, and so does a bf16 KV cache),
# and its error path.
set(_eb ${CMAKE_CURRENT_BINARY_DIR}/engine_cli)
set(_sotu ${CMAKE_SOURCE_DIR}/third_party/sotu/data)
if(EXISTS ${_sotu}/1790_george_washington_n.txt)
  file(MAKE_DIRECTORY ${_eb}/corpus)
  foreach(f 1790_george_washington_n.txt 1791_george_washington_n.txt 1792_george_washington_n.txt
            1793_george_washington_n.txt)
    file(COPY ${_sotu}/${f} DESTINATION ${_eb}/corpus)
  endforeach()
  add_test(NAME engine_cli_train
           COMMAND $<TARGET_FILE:keel> train --no-resume data.corpus=${_eb}/corpus data.vocab_size=384
                   data.val_fraction=0.25 data.cache_dir=${_eb}/cache model.arch=llama
                   model.n_layer=2 model.n_head=4 model.n_kv_head=2 model.n_embd=64
                   model.max_seq_len=64 train.seq_len=64 train.batch_size=8 train.steps=120
                   train.warmup_steps=5 train.lr=3e-3 train.eval_every=60 train.eval_batches=2
                   train.peak_gflops=100 run.dir=${_eb}/run)
  set_tests_properties(engine_cli_train PROPERTIES TIMEOUT 180 LABELS engine
                       FIXTURES_SETUP engine_run)
  add_test(NAME engine_verify_model_f32
           COMMAND $<TARGET_FILE:keel> verify model --model ${_eb}/run --backends ref,cpu
                   --max-tokens 24 --ppl-tokens 512)
  set_tests_properties(engine_verify_model_f32 PROPERTIES TIMEOUT 120 LABELS engine
                       FIXTURES_REQUIRED engine_run
                       PASS_REGULAR_EXPRESSION "top-1 agreement [0-9]+/[0-9]+ = 100.00%.*perplexity on the held-out split \\([0-9]+ tokens\\), cpu none")
  foreach(q int8 q4)
    # expect_run.sh checks the exit status too: a top-1 agreement below
    # --min-top1 fails the command, and so the test, whatever was printed.
    add_test(NAME engine_verify_model_${q}
             COMMAND ${CMAKE_SOURCE_DIR}/tests/scripts/expect_run.sh 0
                     "cpu f32: [0-9.]+; ${q} changes it by [-+][0-9.]+%"
                     $<TARGET_FILE:keel> verify model --model ${_eb}/run --backends cpu,ref
                     --quant ${q} --max-tokens 16 --ppl-tokens 256 --min-top1 0.9)
    set_tests_properties(engine_verify_model_${q} PROPERTIES TIMEOUT 120 LABELS engine
                         FIXTURES_REQUIRED engine_run)
  endforeach()
  # A bf16 KV cache on both backends: every greedy token the same, cpu within
  # 1e-3 of ref (the same roundings, sums in other orders), and the
  # perplexity change against an f32 cache reported and under 0.1%.
  add_test(NAME engine_verify_model_kv_bf16
           COMMAND ${CMAKE_SOURCE_DIR}/tests/scripts/expect_run.sh 0
                   "with an f32 KV cache: [0-9.]+; a bf16 KV cache changes it by [-+]0\\.0[0-9]+%"
                   $<TARGET_FILE:keel> verify model --model ${_eb}/run --backends ref,cpu
                   --kv-dtype bf16 --max-tokens 24 --ppl-tokens 512 --min-top1 1
                   --max-logit-diff 1e-3)
  set_tests_properties(engine_verify_model_kv_bf16 PROPERTIES TIMEOUT 120 LABELS engine
                       FIXTURES_REQUIRED engine_run)
else()
  keel_missing_dependency(engine_missing_dependency "${KEEL_SOTU_MISSING}")
endif()
add_test(NAME engine_verify_model_missing
         COMMAND sh -c "out=$(\"$0\" \"$@\" 2>&1); rc=$?; echo \"$out\"; [ $rc -eq 1 ] && echo \"$out\" | grep -qF 'model directory not found'"
                 $<TARGET_FILE:keel> verify model --model ${_eb}/no_such_model)
set_tests_properties(engine_verify_model_missing PROPERTIES TIMEOUT 30 LABELS engine)
